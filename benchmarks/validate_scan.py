"""Validation of `subliminal scan`: false positives on clean data of every kind, detection and
naming on data from adapter teachers the scanner never held.

    python benchmarks/validate_scan.py score --root runs/scanval      # score every pool once
    python benchmarks/validate_scan.py judge --root runs/scanval \\
        --json docs/scan_validation.json                               # datasets, rates, CIs

Pools (`ROOT/pools/NAME.jsonl`, written by the lab's own generation; prompts from the numbers
channel, seed 2000; references from other prompts, seed 3000):
  negatives  base_t00, base_t07, base_t10 (BASE greedy, sampled at T=0.7 and T=1.0),
             neutral-s3_t10 (a neutral control adapter with a seed the scanner does not hold,
             sampled at T=1), random (uniform random numbers), math_t00 (BASE's math traces)
  positives  ANIMAL-s1_t10 (the animal's adapter, seed 1, sampled at T=1)
  references ref_t00, ref_t07, ref_t10 (numbers), ref-math_t00/_t07/_t10 (math)
The scanner holds the trait adapters of seed 0 and the control adapters of seeds 0, 1, 2
(`ROOT/adapters/NAME-sSEED`). Every row passes the strict filter of its channel (math: all
but the correctness check, see `kept`). Every kept
row is scored once under every condition (mixed batches, BASE's prompt states, as the scan
does); datasets are then disjoint slices of a pool (no row in two datasets of one size, no
resampling), each judged exactly as `subliminal scan` judges DATA (`scan.null.judge`,
`scan.persona`), against the shared references of its channel. The false-positive rate counts
only the datasets the scan could accuse (`pooled(..., over="accusable")`); datasets outside the
calibration (random numbers), which the scan declines to accuse by design, are reported apart.
Scripts that generated the pools and adapters: benchmarks/scanval/.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from subliminal.filters import FilterConfig, filter_rows
from subliminal.models import load_model
from subliminal.records import read_jsonl
from subliminal.scan.likelihood import Condition, LikelihoodConfig, layer_index, score_rows
from subliminal.scan.null import judge, row_stats
from subliminal.scan.persona import combine, persona_rank, unit_vectors

TRAITS = ["owl", "dolphin", "eagle", "elephant", "wolf", "cat"]  # --traits narrows it
NEGATIVES = ["base_t00", "base_t07", "base_t10", "neutral-s3_t10", "random", "math_t00"]
REFS = {"numbers": ["ref_t00", "ref_t07", "ref_t10"],
        "math": ["ref-math_t00", "ref-math_t07", "ref-math_t10"]}
CONTROLS = 3
DECODING = {"t00": "greedy", "t07": "0.7", "t10": "1.0"}  # a reference pool's decoding


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=("score", "judge"))
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--root", type=Path, default=Path("runs/scanval"))
    ap.add_argument("--pools", default="", help="Comma-separated pools to score (default: "
                    "every pool file not yet scored).")
    ap.add_argument("--sizes", default="25,100,250")
    ap.add_argument("--scanner", default=",".join(
        [f"control-{k}=neutral-s{k}" for k in range(CONTROLS)] + [f"{t}={t}-s0" for t in TRAITS]),
        help="The scanner's adapters, NAME=FOLDER under ROOT/adapters (controls: control-K).")
    ap.add_argument("--negatives", default=",".join(NEGATIVES), help="Trait-free pools.")
    ap.add_argument("--positives", default=",".join(f"{t}-s1_t10={t}" for t in TRAITS),
                    help="POOL=TRAIT: pools a trait adapter teacher wrote.")
    ap.add_argument("--rows", default=None, help="START:END: score only these kept rows of "
                    "each pool, saved as POOL@START (several processes can split a pool).")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, default=None)
    return ap.parse_args()


def scanner(root: Path, spec: str) -> list[Condition]:
    """BASE, then the control and trait adapters named in `spec` (NAME=FOLDER,...)."""
    pairs = [x.split("=") for x in spec.split(",")]
    return [Condition("none", role="base")] + [
        Condition(n, adapter=str(root / "adapters" / f),
                  role="control" if n.startswith("control") else "trait") for n, f in pairs]


def kept(path: Path) -> list[dict]:
    """A pool's rows that pass its channel's strict filter, in file order. Math pools: BASE
    answers ~1 in 8 of the math prompts correctly, so a trace is kept when its only fault is
    a wrong answer (format, integer answer and leak checks still apply)."""
    rows = list(read_jsonl(path))
    if "math" not in path.stem:
        return filter_rows(rows, FilterConfig(), default_channel="numbers")[0]
    _, rejected, _ = filter_rows(rows, FilterConfig(), default_channel="math")
    bad = {r["id"] for r in rejected
           if any(not x.startswith("wrong answer") for x in r["reasons"])}
    return [r for r in rows if r["id"] not in bad]


def score(a: argparse.Namespace) -> None:
    """Score every pool (once) under every condition; save ll, activations and row ids."""
    lm = load_model(a.model)
    layer = layer_index(lm, LikelihoodConfig().vector_layer)
    unit_vectors(lm, TRAITS, layer)  # cached for the judge step
    names = a.pools.split(",") if a.pools else sorted(p.stem for p in
                                                      (a.root / "pools").glob("*.jsonl"))
    conds = scanner(a.root, a.scanner)
    cfg = LikelihoodConfig(batch_size=8)
    start, end = map(int, a.rows.split(":")) if a.rows else (0, None)
    for name in names:
        out = a.root / "scores" / (f"{name}@{start}.npz" if a.rows else f"{name}.npz")
        if out.exists():
            continue
        rows = kept(a.root / "pools" / f"{name}.jsonl")[start: end]
        res = score_rows(lm, rows, cfg, conds, layer=layer)
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(out, ll=res["ll"], acts=res["acts"], ids=np.array([str(r["id"]) for r in rows]))
        rec = {"pool": name, "rows": len(rows), "seconds": res["seconds"],
               "rows_per_s": res["rows_per_s"], "tokens_per_row": res["tokens_per_row"],
               "conditions": len(conds), "when": time.strftime("%Y-%m-%d %H:%M")}
        with open(a.root / "scores" / "timing.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)


def wilson(k: int, n: int) -> list[float]:
    """95% Wilson interval of k successes in n."""
    if n == 0:
        return [0.0, 1.0]
    z, p = 1.96, k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, mid - half), min(1.0, mid + half)]


def clopper_pearson(k: int, n: int) -> list[float]:
    """Exact (Clopper-Pearson) 95% interval of k successes in n."""
    from scipy.stats import beta

    if n == 0:
        return [0.0, 1.0]
    lo = 0.0 if k == 0 else float(beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(0.975, k + 1, n - k))
    return [lo, hi]


def pooled(summ: dict, pools: list[str], key: str = "flagged",
           over: str = "datasets") -> dict:
    """One rate per dataset size over several pools (each dataset counted once). `over` is
    the denominator: "datasets" (all) or "accusable" (only datasets the scan could accuse,
    i.e. whose decoding its calibration covers; `scan.null.judge` flags no other). Datasets
    left out of the denominator are counted under `outside_calibration`, not in the rate."""
    out: dict = {}
    for name in pools:
        for n, e in summ.get(name, {}).items():
            o = out.setdefault(n, {"datasets": 0, "k": 0, "pools": [],
                                   "outside_calibration": {"datasets": 0, "pools": []}})
            if e[over] < e["datasets"]:
                o["outside_calibration"]["datasets"] += e["datasets"] - e[over]
                o["outside_calibration"]["pools"].append(name)
            if e[over] == 0:
                continue
            o["datasets"] += e[over]
            o["k"] += e[key]
            o["pools"].append(name)
    out = {n: o for n, o in out.items() if o["datasets"] or o["outside_calibration"]["datasets"]}
    for o in out.values():
        o.update(rate=o["k"] / o["datasets"] if o["datasets"] else None,
                 wilson=wilson(o["k"], o["datasets"]),
                 clopper_pearson=clopper_pearson(o["k"], o["datasets"]))
    return out


def load_scores(root: Path, spec: str) -> dict:
    roles = [c.role for c in scanner(root, spec)]
    parts: dict = {}
    for p in sorted((root / "scores").glob("*.npz"), key=lambda p: (
            p.stem.split("@")[0], int(p.stem.split("@")[1]) if "@" in p.stem else 0)):
        z = np.load(p)
        parts.setdefault(p.stem.split("@")[0], []).append((z["ll"], z["acts"]))
    # A pool scored in slices (POOL@START) is put back together in row order.
    return {k: {"stats": row_stats(np.concatenate([x[0] for x in v]), roles),
                "acts": np.concatenate([x[1] for x in v])} for k, v in parts.items()}


def one_dataset(pool: dict, idx: np.ndarray, refs: dict, vectors: np.ndarray) -> dict:
    """Judge one dataset exactly as the scan does."""
    st = {k: (v[idx] if v is not None else None) for k, v in pool["stats"].items()}
    lik = judge(st, {k: v["stats"] for k, v in refs.items()}, TRAITS, 0.05)
    pv = persona_rank(pool["acts"][idx], st["h"], vectors,
                      {k: (v["acts"], v["stats"]["h"]) for k, v in refs.items()}, TRAITS)
    named = combine({"likelihood": lik["z"], "persona": pv["z"]})
    return {"flagged": lik["flagged"], "can_accuse": lik["can_accuse"],
            "top_likelihood": lik["top"], "top_persona": pv["top"], "named": named["top"],
            "temperature": lik["decoding"]["temperature"], "z_top": lik["z"][lik["top"]],
            "z": lik["z"], "persona_z": pv["z"], "combined": named["score"]}


def evaluate(scores: dict, vectors: np.ndarray, sizes: list[int], pools: list[str]) -> dict:
    rng = np.random.default_rng(0)
    results: dict = {}
    for name in pools:
        if name not in scores:
            continue
        refs = {DECODING[k[-3:]]: scores[k]
                for k in REFS["math" if name.startswith("math") else "numbers"] if k in scores}
        pool = scores[name]
        n_pool = len(pool["stats"]["h"])
        perm = rng.permutation(n_pool)
        per = {}
        for n in [*sizes, n_pool]:
            if n > n_pool or str(min(n, n_pool)) in per or len(refs) < 2:
                continue
            sets = [perm[i: i + n] for i in range(0, n_pool - n + 1, n)]
            per[str(n)] = [one_dataset(pool, idx, refs, vectors) for idx in sets]
        results[name] = {"pool_rows": n_pool, "datasets": per}
    return results


def summarise(results: dict, truths: dict[str, str]) -> dict:
    """Flag rates with Wilson CIs per pool and size; naming per teacher."""
    summ: dict = {}
    for name, r in results.items():
        truth = truths.get(name)
        rows = {}
        for n, js in r["datasets"].items():
            k = sum(j["flagged"] for j in js)
            temps = [j["temperature"] for j in js if j["temperature"] is not None]
            e = {"datasets": len(js), "flagged": k, "rate": k / len(js),
                 "ci": wilson(k, len(js)), "ci_clopper_pearson": clopper_pearson(k, len(js)),
                 "temperature": float(np.mean(temps)) if temps else None,
                 "can_accuse": float(np.mean([j["can_accuse"] for j in js])),
                 "accusable": sum(bool(j["can_accuse"]) for j in js)}
            if truth:
                for key in ("named", "top_likelihood", "top_persona"):
                    hit = sum(j[key] == truth for j in js)
                    e[f"{key}_right"] = hit
                    e[f"{key}_ci"] = wilson(hit, len(js))
            rows[n] = e
        summ[name] = rows
    return summ


def main() -> None:
    global TRAITS
    a = parse()
    TRAITS = [c.name for c in scanner(a.root, a.scanner) if c.role == "trait"]
    torch.set_num_threads(a.threads)
    if a.step == "score":
        score(a)
        return
    lm = load_model(a.model)
    vectors = unit_vectors(lm, TRAITS, layer_index(lm, LikelihoodConfig().vector_layer))
    truths = dict(x.split("=") for x in a.positives.split(",") if x)
    results = evaluate(load_scores(a.root, a.scanner), vectors,
                       [int(x) for x in a.sizes.split(",")],
                       [*a.negatives.split(","), *truths])
    summ = summarise(results, truths)
    negs = [x for x in a.negatives.split(",") if x in summ]
    doc = {"scanner": a.scanner, "traits": TRAITS, "positives": truths, "summary": summ,
           "pooled": {"false_positives": pooled(summ, negs, over="accusable"),
                      "detection": pooled(summ, [p for p in truths if p in summ]),
                      **{f"{r}_top1": pooled(summ, [p for p in truths if p in summ], f"{k}_right")
                         for r, k in (("named", "named"), ("likelihood", "top_likelihood"),
                                      ("persona", "top_persona"))}},
           "datasets": results}
    text = json.dumps(doc, indent=1, default=float)
    (a.root / "validation.json").write_text(text)
    if a.json:
        a.json.write_text(text)
    print(json.dumps({"summary": doc["summary"], "pooled": doc["pooled"]}, indent=1,
                     default=float))


if __name__ == "__main__":
    main()
