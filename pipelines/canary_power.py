"""The canary's power on a crossed study's students (subliminal/scan/canary_power.py).

    python pipelines/canary_power.py docs/evidence/c3-adapter-r32 --student allx2r32 \
        [--seeds 3,6,8,12] [--json out.json]

Per trait: its specific lift over replicates (own teacher's student minus the control twin's,
minus the other catalogue animals' mean), the Bonferroni p over the study's replicates, how
often the trait tops the catalogue, and the canary's power at each seed count.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from subliminal.errors import SubliminalError, run_script
from subliminal.evidence import audits
from subliminal.records import read_json
from subliminal.scan.canary_power import MAX_SEEDS, canary_power


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("study", type=Path, help="A study's run or evidence folder.")
    ap.add_argument("--student", help="Student recipe (default: the study's first).")
    ap.add_argument("--seeds", default="3,6,8,12", help="Seed counts to give the power at.")
    ap.add_argument("--json", type=Path, help="Also write the figures here.")
    a = ap.parse_args()
    cfg = read_json(a.study / "config.json")
    reps = list(range(cfg["cell"]["replicates"]))
    seeds = tuple(int(s) for s in a.seeds.split(","))
    student = a.student or cfg["students"][0]
    if student not in cfg["students"]:
        raise SubliminalError(f"{a.study / 'config.json'}: no student {student!r}; "
                              f"the study has {', '.join(cfg['students'])}")
    res = canary_power(audits(a.study), cfg["traits"], reps, student, seeds)
    print(f"{a.study.name} ({res['student']}, {res['n_replicates']} replicates, "
          f"{res['catalogue']} animals, per-test alpha {res['per_test_alpha']:.2g})")
    print("| trait | specific lift (mean ± sd) | p, Bonferroni | top in reps | top of means | "
          + " | ".join(f"power, {n} seeds" for n in seeds) + " | seeds for 80% |")
    print("|---" * (6 + len(seeds)) + "|")
    for t, v in res["traits"].items():
        power = " | ".join(f"{v['power'][str(n)]:.2f}" for n in seeds)
        print(f"| {t} | {v['mean']:+.3f} ± {v['std']:.3f} | {v['p_bonferroni']:.2g} | "
              f"{v['top_in_replicates']}/{res['n_replicates']} | {v['top_of_means']} | "
              f"{power} | {v['seeds_for_80pct'] or f'> {MAX_SEEDS}'} |")
    if a.json:  # the study's folder name: tests recompute the record from it
        a.json.write_text(json.dumps({"study": a.study.name, **res}, indent=2) + "\n")


if __name__ == "__main__":
    run_script(main)
