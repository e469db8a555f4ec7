"""The dose-response table and plot of committed crossed studies (subliminal.dose_response).

    python pipelines/dose_response.py docs/evidence/e1b-adapter-sample-logits \
        docs/evidence/e2-rank-adapter-sample-logits [--plot docs/study/dose_response.png]

Prints the markdown table (one line per study and student recipe); `--plot` also draws the
lift against optimizer steps and against LoRA rank.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from subliminal.dose_response import markdown, plot, points
from subliminal.errors import SubliminalError


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", type=Path, help="study run or evidence folders")
    ap.add_argument("--plot", type=Path, default=None, help="write the plot here (.png)")
    args = ap.parse_args()
    try:
        pts = [p for folder in args.studies for p in points(folder)]
    except (SubliminalError, OSError, KeyError, ValueError) as e:
        ap.error(f"{e}")  # one line, exit 2
    print(markdown(pts))
    if args.plot:
        plot(pts, args.plot)


if __name__ == "__main__":
    main()
