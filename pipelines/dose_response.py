"""The dose-response table and plot of committed crossed studies (subliminal.dose_response).

    python pipelines/dose_response.py docs/evidence/e1b-adapter-sample-logits \
        docs/evidence/e2-rank-adapter-sample-logits [--plot docs/study/dose_response.png]

Prints the markdown table (one line per study and student recipe); `--plot` also draws the
lift against optimizer steps and against LoRA rank. `--paired LOW,HIGH` prints instead, for
each (finished) study, recipe HIGH against recipe LOW paired over replicates — the dose-growth
read-out (e.g. `--paired allx2,allx8`: four times the updates on the same teachers and rows).
`--low-from STUDY` pairs LOW's students from another study on the same teachers and rows
(checked by seeds and the rows' hashes). `--movement` prints instead how far each recipe
moved its control twin's students from the base (read from the probes): what a null of the
diagonal test is read beside.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from subliminal.dose_response import (
    markdown,
    movement_markdown,
    movements,
    paired,
    paired_markdown,
    plot,
    points,
)
from subliminal.errors import fail, run_script


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("studies", nargs="+", type=Path, help="study run or evidence folders")
    ap.add_argument("--plot", type=Path, default=None, help="write the plot here (.png)")
    ap.add_argument("--paired", default=None, metavar="LOW,HIGH",
                    help="two student recipes of each study, paired over its replicates")
    ap.add_argument("--low-from", type=Path, default=None, metavar="STUDY",
                    help="with --paired: LOW's students from this study (same cell, seeds and "
                         "rows, checked), e.g. a new recipe against a finished study's")
    ap.add_argument("--movement", action="store_true",
                    help="how far each recipe moved its control twin's students from the base")
    args = ap.parse_args()
    modes = [f for f, on in (("--plot", args.plot), ("--paired", args.paired),
                             ("--movement", args.movement)) if on]
    if len(modes) > 1:  # each prints its own table: a second one would be silently dropped
        ap.error(f"{' and '.join(modes)}: give one")
    if args.low_from and not args.paired:
        ap.error("--low-from pairs LOW's students: give it with --paired LOW,HIGH")
    if args.movement:
        return print(movement_markdown([m for f in args.studies for m in movements(f)]))
    if args.paired:
        return print_paired(args.studies, args.paired, args.low_from)
    if args.plot and not args.plot.parent.is_dir():  # refused before any work is printed
        fail(f"--plot {args.plot}: no folder {args.plot.parent}")
    try:
        pts = [p for folder in args.studies for p in points(folder)]
    except (OSError, ValueError) as e:  # an unreadable file (a SubliminalError: run_script)
        fail(str(e))
    print(markdown(pts))
    if args.plot:
        try:
            plot(pts, args.plot)
        except OSError as e:
            fail(f"--plot {args.plot}: {e.strerror or e}")


def print_paired(studies: list[Path], recipes: str, low_from: Path | None = None) -> None:
    """The paired contrast of two recipes in each study; bad input refused in one line."""
    names = [r.strip() for r in recipes.split(",")]
    if len(names) != 2 or not all(names):
        fail(f"--paired {recipes!r}: give two recipes, LOW,HIGH (e.g. allx2,allx8)")
    try:
        results = [paired(folder, *names, low_from) for folder in studies]
    except (OSError, ValueError) as e:  # a record lacking a field: paired's own one line
        fail(str(e))
    print(paired_markdown(results))


if __name__ == "__main__":
    run_script(main)
