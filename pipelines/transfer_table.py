"""Markdown tables of chain runs, straight from their summary.json (docs quote nothing else).

    python pipelines/transfer_table.py runs/default-s0 runs/confirm-s10 > table.md

One row per run and generation: both arms' P(target) (means over replicates), the share
log-odds lift with its replicate CI and per-replicate values, the deciding t-test p, the exact
sign-flip p, generic drift, the target's rank among the catalogue's share lifts, and the
verdict (with the detectable lift).
"""

from __future__ import annotations

import sys
from pathlib import Path

from subliminal.records import read_json


def rows(run: Path) -> list[str]:
    s = read_json(run / "summary.json")
    out = []
    for g in s["generations"]:
        sp, d = g["specificity"], g["generic_drift"]
        rank = g["other_animals_share_lift"]
        out.append(
            f"| {run.name} | {g['generation']} | {g['n_replicates']} | "
            f"{g['trait']['mean']:.4g} | {g['control']['mean']:.4g} | "
            f"{sp['mean']:+.3f} [{sp['ci'][0]:+.3f}, {sp['ci'][1]:+.3f}] | "
            f"{', '.join(f'{v:+.3f}' for v in sp['lifts'])} | {sp['p_value']:.2g} | "
            f"{sp['p_sign_flip']:.2g} | {d['mean']:+.3f} (p={d['p_value']:.2g}) | "
            f"{rank['target_rank']}/{rank['of']} | {g['verdict']} |" if d and rank else
            f"| {run.name} | {g['generation']} | {g['n_replicates']} | "
            f"{g['trait']['mean']:.4g} | {g['control']['mean']:.4g} | "
            f"{sp['mean']:+.3f} | {', '.join(f'{v:+.3f}' for v in sp['lifts'])} | "
            f"{sp['p_value']:.2g} | {sp['p_sign_flip']:.2g} | n/a | n/a | {g['verdict']} |")
    return out


def main() -> None:
    print("| run | gen | n | P(target) trait | P(target) control | share log-odds lift [95% CI] "
          "| per replicate | p (t) | p (sign-flip) | drift | rank | verdict |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for arg in sys.argv[1:]:
        print("\n".join(rows(Path(arg))))


if __name__ == "__main__":
    main()
