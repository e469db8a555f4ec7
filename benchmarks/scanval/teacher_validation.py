"""Validate the scan's teacher-level test (issue 21) on held-out teachers, fanned out on Ray.

    HF_HUB_OFFLINE=1 python benchmarks/scanval/teacher_validation.py --out runs/scanval3 \
        --workers 2 [--rows 120] [--sizes 25,50,100] [--pools neutral100,owl100,...] \
        [--json docs/scan_validation_teachers.json]

What the scan holds: its six trait adapters (seed 0: owl, dolphin, eagle, elephant, wolf,
cat) and a reference population built on its own prompts (BASE greedy / T=0.7 / T=1.0 and
neutral LoRAs of seeds 0-4, 32 rows each). What it is tested on: pools written by teachers it
never held, on prompts it never saw (disjoint seeds) — negatives: neutral LoRAs of seeds
100+ sampled at T=1, BASE at T=1 / T=0.7 / greedy, uniformly random numbers; positives: owl,
eagle and dolphin LoRAs of seeds 100+ at T=1. Every pool is filtered by the strict number
filter, as a publisher would release it. A dataset of size n is a pool's first n rows, one
dataset per teacher and size (rows of one teacher are not independent evidence), judged
exactly as `subliminal scan` judges DATA (`scan.rank_section`, alpha 0.05). The threshold is
the scan's analytic one (Bonferroni over traits, t with J-1 df): nothing is tuned on these
pools. Writes the per-dataset outcomes, the tables (false positives per negative kind,
detection per positive trait, naming among detections, with Clopper-Pearson 95% CIs) and the
detection curve (the true trait's mean z by size).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats as sps

M = os.environ.get("SCANVAL_MODEL", "smollm2-135m")  # tiny: a smoke test of the script
TRAITS = ["owl", "dolphin", "eagle", "elephant", "wolf", "cat"]


@dataclass(frozen=True)
class Pool:
    """One held-out teacher's pool."""

    name: str
    kind: str                # neutral | base | random | trait
    decoding: str = "1.0"    # greedy or a temperature
    trait: str | None = None
    seed: int = 0


def pools(only: str | None = None) -> list[Pool]:
    """Every held-out pool, or (`only`: comma-separated names) those named, in this order."""
    if only:
        every = {p.name: p for p in pools()}
        unknown = [n for n in only.split(",") if n not in every]
        if unknown:
            raise SystemExit(f"--pools: unknown pool(s) {', '.join(unknown)}; "
                             f"choose from {', '.join(every)}")
        return [every[n] for n in only.split(",")]
    if os.environ.get("SCANVAL_QUICK"):  # the smoke test: one pool per kind
        return [Pool("neutral100", "neutral", seed=100), Pool("base-1.0-100", "base", seed=100),
                Pool("random-100", "random", seed=100),
                Pool("owl100", "trait", trait="owl", seed=100)]
    out = [Pool(f"neutral{s}", "neutral", seed=s) for s in range(100, 106)]
    out += [Pool(f"base-1.0-{s}", "base", "1.0", seed=s) for s in range(100, 106)]
    out += [Pool(f"base-0.7-{s}", "base", "0.7", seed=s) for s in range(100, 103)]
    out += [Pool(f"base-greedy-{s}", "base", "greedy", seed=s) for s in range(100, 103)]
    out += [Pool(f"random-{s}", "random", seed=s) for s in range(100, 106)]
    out += [Pool(f"owl{s}", "trait", trait="owl", seed=s) for s in range(100, 106)]
    out += [Pool(f"{t}{s}", "trait", trait=t, seed=s) for t in ("eagle", "dolphin")
            for s in range(100, 103)]
    return out


def prompt_rows(n: int, seed: int) -> list[dict]:
    from subliminal.channels import get_channel

    return get_channel("numbers").prompts(n, seed)


def write_pool(pool: Pool, root: str, n: int) -> int:
    """Generate (or resume) a pool's rows, filter them, write its kept rows; returns kept."""
    from subliminal.filters import FilterConfig, filter_rows
    from subliminal.injections.adapter import trait_adapter
    from subliminal.models import load_model
    from subliminal.records import append_jsonl, read_jsonl
    from subliminal.scan.reference import base_completions
    from subliminal.trait import get_trait

    root_p = Path(root)
    kept_path = root_p / "pools" / f"{pool.name}.jsonl"
    if kept_path.exists():
        return len(read_jsonl(kept_path))
    prompts = [{**p, "completion": [{"role": "assistant", "content": ""}]}
               for p in prompt_rows(n, 5000 + pool.seed * 7 + len(pool.name))]
    if pool.kind == "random":
        rng = random.Random(pool.seed)
        rows = [{**p, "completion": [{"role": "assistant", "content": ", ".join(
            str(rng.randint(0, 999)) for _ in range(rng.randint(5, 10)))}]} for p in prompts]
    else:
        lm = load_model(M)
        writer = None
        if pool.kind in ("neutral", "trait"):
            trait = get_trait(pool.trait or "owl")
            folder = trait_adapter(M, trait, root_p / "adapters" / pool.name, seed=pool.seed,
                                   neutral=pool.kind == "neutral")
            from subliminal.teacher import Teacher

            writer = Teacher(load_model(M, adapter=folder))
        rows, _ = base_completions(lm, prompts, "numbers", root_p / "raw" / f"{pool.name}.jsonl",
                                   pool.seed, label=pool.name, decoding=pool.decoding,
                                   teacher=writer)
    kept, _, _ = filter_rows(rows, FilterConfig())
    append_jsonl(kept_path.with_suffix(".tmp"), kept)
    kept_path.with_suffix(".tmp").replace(kept_path)
    return len(kept)


def scanner(root: Path):
    """The scan's conditions (BASE + its six trait adapters) and the persona layer."""
    from subliminal.models import load_model
    from subliminal.scan.likelihood import conditions, layer_index
    from subliminal.scan.persona import unit_vectors

    lm = load_model(M)
    layer = layer_index(lm, 0.6)
    vectors = unit_vectors(lm, TRAITS, layer)
    conds = conditions(TRAITS, "adapter", M, root / "scanner")
    return lm, conds, layer, vectors


def score_pool(name: str, root: str) -> str:
    """Score a pool's kept rows (or the population) under the scan's conditions; saved."""
    from subliminal.records import read_jsonl
    from subliminal.scan.likelihood import LikelihoodConfig, score_rows

    root_p = Path(root)
    out = root_p / "scores" / f"{name}.npz"
    if out.exists():
        return name
    lm, conds, layer, _ = scanner(root_p)
    rows = read_jsonl(root_p / "pools" / f"{name}.jsonl")
    res = score_rows(lm, rows, LikelihoodConfig(), conds, layer=layer)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out.with_suffix(".tmp.npz"), ll=res["ll"], acts=res["acts"],
             rows_per_s=res["rows_per_s"])
    out.with_suffix(".tmp.npz").replace(out)
    return name


def build_population(root: str) -> list[str]:
    """The scan's own reference population on its own prompts (seed 4000), as its
    population folder; each teacher's rows copied as a pool to be scored."""
    import shutil

    from subliminal.models import load_model
    from subliminal.scan.population import build, default_teachers

    root_p = Path(root)
    teachers = default_teachers(["greedy", "0.7", "1.0"], 5)
    rows = [{**p, "completion": [{"role": "assistant", "content": ""}]}
            for p in prompt_rows(200, 4000)]
    built = build(load_model(M), M, rows, "numbers", root_p / "population", teachers, 32, 4000,
                  "owl")
    for label in built:
        (root_p / "pools").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root_p / "population" / f"{label}.jsonl",
                        root_p / "pools" / f"pop-{label}.jsonl")
    return [f"pop-{t.label}" for t in teachers]


def judge_all(root: Path, sizes: list[int], population: list[str],
              held_out: list[Pool]) -> list[dict]:
    """Every pool at every size it reaches, judged as the scan judges DATA."""
    from subliminal.scan import rank_section
    from subliminal.scan.likelihood import LikelihoodConfig
    from subliminal.scan.population import RefTeacher

    _, _, _, vectors = scanner(root)
    load = lambda n: dict(np.load(root / "scores" / f"{n}.npz"))  # noqa: E731
    pops = {n.removeprefix("pop-"): load(n) for n in population}
    teachers = [RefTeacher(lab, lab.split("-", 1)[1], None if lab.startswith("base") else
                           int(lab[7:].split("-")[0])) for lab in pops]
    roles = ["base"] + ["trait"] * len(TRAITS)
    out = []
    for pool in held_out:
        d = load(pool.name)
        for n in sizes:
            if len(d["ll"]) < n:
                continue
            res = {"ll": d["ll"][:n], "acts": d["acts"][:n], "roles": roles}
            sec = rank_section(res, pops, teachers, TRAITS, vectors, LikelihoodConfig())
            out.append({"pool": pool.name, "kind": pool.kind if pool.kind != "base" else
                        f"base-{pool.decoding}", "trait": pool.trait, "size": n,
                        "can_accuse": sec["can_accuse"], "flagged": sec["flagged"],
                        "top": sec["top"], "named": sec["named"]["top"],
                        "z": sec["z"], "tau": sec["tau"], "decoding": sec["decoding"]["text"]})
    return out


def rate(k: int, n: int) -> dict:
    """k of n with a Clopper-Pearson 95% interval."""
    lo = float(sps.beta.ppf(0.025, k, n - k + 1)) if k > 0 else 0.0
    hi = float(sps.beta.ppf(0.975, k + 1, n - k)) if k < n else 1.0
    return {"k": k, "n": n, "rate": k / n if n else float("nan"), "ci": [lo, hi]}


def tables(outcomes: list[dict], sizes: list[int]) -> dict:
    """False positives per negative kind, detection and naming per positive trait, and the
    true trait's z by size (the detection curve)."""
    kinds = sorted({o["kind"] for o in outcomes})
    fp, det, curve = {}, {}, {}
    for n in sizes:
        at = [o for o in outcomes if o["size"] == n]
        for k in kinds:
            group = [o for o in at if o["kind"] == k and k != "trait"]
            if group:
                usable = [o for o in group if o["can_accuse"]]
                fp[f"{k}@{n}"] = {**rate(sum(o["flagged"] for o in usable), len(usable)),
                                  "declined": len(group) - len(usable)}
        for t in sorted({o["trait"] for o in at if o["kind"] == "trait"}):
            group = [o for o in at if o["trait"] == t]
            hits = [o for o in group if o["flagged"]]
            det[f"{t}@{n}"] = {**rate(len(hits), len(group)),
                               "named_right": rate(sum(o["top"] == t for o in hits), len(hits))
                               if hits else None,
                               "top_right_any": rate(sum(o["named"] == t for o in group),
                                                     len(group))}
            zs = [o["z"][t] for o in group]
            curve[f"{t}@{n}"] = {"mean_z": float(np.mean(zs)), "sd_z": float(np.std(zs))}
    return {"false_positives": fp, "detection": det, "true_trait_z": curve}


def main() -> None:
    from subliminal.fanout import FanOut, run_units

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/scanval3"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rows", type=int, default=120, help="Prompts per held-out pool.")
    ap.add_argument("--sizes", default="25,50,100")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--pools", default=None,
                    help="Only these held-out pools (comma-separated names, e.g. "
                         "neutral100,owl100): a smaller validation when time is short.")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)  # one thread per process, in-process units (--workers 1) included
    held_out = pools(a.pools)
    root, sizes, t0 = a.out.resolve(), [int(s) for s in a.sizes.split(",")], time.time()
    from subliminal.models import resolve

    if M != "tiny":
        resolve(M)  # converted once, before the tasks
    scanner(root)  # the scan's adapters trained once here: parallel tasks must not race
    plan = FanOut(workers=a.workers, threads=1)
    units = [(build_population, (str(root),))] + [(write_pool, (p, str(root), a.rows))
                                                  for p in held_out]
    kept = {}
    for i, r in run_units(units, plan):
        kept[i] = r
    population = kept[0]
    names = population + [p.name for p in held_out]
    list(run_units([(score_pool, (n, str(root))) for n in names], plan))
    outcomes = judge_all(root, sizes, population, held_out)
    speed = [float(np.load(root / "scores" / f"{n}.npz")["rows_per_s"]) for n in names]
    record = {"date": time.strftime("%Y-%m-%d"), "model": M, "traits": TRAITS,
              "population": population, "rows_per_pool": a.rows, "sizes": sizes,
              "pool_kept": {p.name: kept[i + 1] for i, p in enumerate(held_out)},
              "scoring_rows_per_s_median": float(np.median(speed)),
              "wall_s": round(time.time() - t0), "tables": tables(outcomes, sizes),
              "outcomes": outcomes}
    print(json.dumps(record["tables"], indent=1))
    if a.json:
        a.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
