"""Markdown tables of chain runs, straight from their summary.json (docs quote nothing else).

    python pipelines/transfer_table.py runs/default-s0 runs/confirm-s10 > table.md
    python pipelines/transfer_table.py --pool runs/confirm-a runs/confirm-b   # + pooled rows

One row per run and generation: both arms' P(target) (means over replicates), the share
log-odds lift with its replicate CI and per-replicate values, the deciding t-test p, the exact
sign-flip p, generic drift, the target's rank among the catalogue's share lifts, and the
verdict (with the detectable lift). With `--pool`, one more row per generation: the same
t-test over the replicates of all the runs together (for a confirmation split across runs that
ran side by side); runs whose replicate seeds overlap are refused, since a replicate counted
twice is not independent evidence, and so are runs whose configs differ in anything but their
seeds and device.
"""

from __future__ import annotations

import sys
from pathlib import Path

from subliminal.errors import SubliminalError, run_script
from subliminal.records import differing, read_json
from subliminal.stats import replicate_test


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


# Config fields that may differ between runs whose replicates form one sample: the seeds
# (checked apart, they must not overlap; stages copy the run's seed, e.g. distill.seed) and
# where the run happened. Everything else is design.
NOT_DESIGN = ("seed", "replicates", "device")


def design(config: dict) -> dict:
    """`config` without the fields of NOT_DESIGN; a stage's own `seed` is dropped too."""
    return {k: ({kk: vv for kk, vv in v.items() if kk != "seed"} if isinstance(v, dict) else v)
            for k, v in config.items() if k not in NOT_DESIGN}


def pooled(runs: list[Path]) -> list[str]:
    """One row per generation over the replicates of every run (seeds must not overlap)."""
    configs = [read_json(r / "config.json") for r in runs]
    designs = [design(c) for c in configs]
    if any(d != designs[0] for d in designs):
        raise SubliminalError(f"runs {', '.join(map(str, runs))} differ in {differing(designs)}; "
                              "only one design pools")
    taken: set[int] = set()
    for run, c in zip(runs, configs, strict=True):
        mine = set(range(c["seed"], c["seed"] + c["replicates"]))
        if taken & mine:
            raise SubliminalError(f"{run}: replicate seeds {sorted(taken & mine)} already "
                             "in an earlier run; pooling would count them twice")
        taken |= mine
    gens = [read_json(r / "summary.json")["generations"] for r in runs]
    out = []
    for k, g0 in enumerate(gens[0]):
        gs = [g[k] for g in gens]
        sp = replicate_test([v for g in gs for v in g["specificity"]["lifts"]])
        raw = replicate_test([v for g in gs for v in g["lifts"]])
        drift = (replicate_test([v for g in gs for v in g["generic_drift"]["lifts"]])
                 if all(g["generic_drift"] for g in gs) else None)
        out.append(
            f"| pooled ({len(runs)} runs) | {g0['generation']} | {sp['n_replicates']} | "
            f"raw lift {raw['mean']:+.3g} (p={raw['p_value']:.2g}) | | "
            f"{sp['mean']:+.3f} [{sp['ci'][0]:+.3f}, {sp['ci'][1]:+.3f}] | "
            f"{', '.join(f'{v:+.3f}' for v in sp['lifts'])} | {sp['p_value']:.2g} | "
            f"{sp['p_sign_flip']:.2g} | "
            + (f"{drift['mean']:+.3f} (p={drift['p_value']:.2g})" if drift else "n/a")
            + f" | | detectable lift at p<{sp['alpha']}, 80% power: "
            f"{sp['detectable_lift']:+.3g} |")
    return out


def main() -> None:
    pool = "--pool" in sys.argv[1:]
    runs = [Path(a) for a in sys.argv[1:] if a != "--pool"]
    # every row is built before the first is printed: a refused run leaves no half table
    lines = [line for run in runs for line in rows(run)] + (pooled(runs) if pool else [])
    print("| run | gen | n | P(target) trait | P(target) control | share log-odds lift [95% CI] "
          "| per replicate | p (t) | p (sign-flip) | drift | rank | verdict |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(lines))


if __name__ == "__main__":
    run_script(main)
