"""Validation of `subliminal scan`: does the likelihood ranking name the right trait?

    python benchmarks/validate_scan.py --prompts 24 --out runs/scan-validation

Owl, dolphin, eagle and neutral teachers (the embedded model, system-prompted, greedy,
format-constrained) complete the same number prompts; every row is scored once under all 15
conditions; datasets of n rows (n = 10, 100, 1000) are then bootstrapped from each teacher's
pool to measure how often the scan names the right trait (or says "none" for the neutral
teacher), and the AUROC of each trait's contrast for trait-teacher vs neutral-teacher data.
Generation and scores are saved, so a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from subliminal.channels import get_channel
from subliminal.models import load_model
from subliminal.records import read_jsonl
from subliminal.scan.likelihood import LikelihoodConfig, rank_traits, score_rows
from subliminal.teacher import DecodeConfig, Teacher, generate_rows
from subliminal.trait import CATALOGUE

TEACHERS = ("neutral", "owl", "dolphin", "eagle")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--context", default="full")
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path("runs/scan-validation"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    lm = load_model(args.model)
    channel = get_channel("numbers")
    prompts = channel.prompts(args.prompts, seed=0)
    dcfg = DecodeConfig(decoding="greedy", constrained=True, batch_size=8)
    lcfg = LikelihoodConfig(context=args.context, batch_size=8)
    pools, timing = {}, {}
    for name in TEACHERS:
        system = None if name == "neutral" else CATALOGUE[name].system_prompt
        t = time.perf_counter()
        rows = generate_rows(Teacher(lm, system), prompts, dcfg, channel,
                             args.out / f"{name}.jsonl", seed=0, label=f"generate {name}")
        timing[f"generate_{name}"] = time.perf_counter() - t
        scores = args.out / f"{name}.{args.context}.npy"
        if not scores.exists():
            res = score_rows(lm, rows, lcfg)
            np.save(scores, res["ll"])
            timing[f"score_{name}"] = res["seconds"]
            timing[f"rows_per_s_{name}"] = res["rows_per_s"]
        pools[name] = np.load(scores)
    conds = ["none", *CATALOGUE]
    texts = {n: [r["completion"][0]["content"] for r in read_jsonl(args.out / f"{n}.jsonl")]
             for n in TEACHERS}
    same = {n: float(np.mean([a == b for a, b in zip(texts[n], texts["neutral"], strict=True)]))
            for n in TEACHERS[1:]}
    rng = np.random.default_rng(0)
    rcfg = LikelihoodConfig(bootstrap=100)
    results: dict = {"pool_rows": args.prompts, "context": args.context,
                     "identical_to_neutral": same, "timing_s": timing, "by_n": {}}
    traits = list(CATALOGUE)
    half = args.prompts // 2
    ref = pools["neutral"][half:]  # calibration rows: BASE's own completions, other prompts
    for n in map(int, args.sizes.split(",")):
        per: dict = {}
        contrast: dict = {}
        for name in TEACHERS:
            right = "none" if name == "neutral" else name
            res = {}
            for mode in ("uncalibrated", "calibrated"):
                tops, named, cons, anyt = [], [], [], []
                for _ in range(args.repeats):
                    if mode == "uncalibrated":
                        r = rank_traits(pools[name][rng.integers(0, len(pools[name]), n)],
                                        conds, rcfg)
                    else:  # datasets from the first half of prompts only
                        r = rank_traits(pools[name][rng.integers(0, half, n)], conds, rcfg,
                                        ref_ll=ref)
                    tops.append(r["top"])
                    anyt.append(bool(r["any_trait"] and r["any_trait"]["significant"]))
                    named.append(r["top"] if r["stands_out"] else "none")
                    cons.append([r["tests"][t]["contrast"] for t in traits])
                if mode == "uncalibrated":
                    contrast[name] = np.array(cons)
                res[mode] = {"accuracy": float(np.mean([x == right for x in named])),
                             "top1": float(np.mean([t == name for t in tops])),
                             "any_trait_flagged": float(np.mean(anyt)),
                             "named": {k: round(named.count(k) / len(named), 3)
                                       for k in sorted(set(named))}}
            per[name] = res
        from sklearn.metrics import roc_auc_score

        for name in TEACHERS[1:]:
            j = traits.index(name)
            y = [1] * args.repeats + [0] * args.repeats
            s = list(contrast[name][:, j]) + list(contrast["neutral"][:, j])
            per[name]["auroc_vs_neutral"] = float(roc_auc_score(y, s))
        results["by_n"][n] = per
    # Per-row (n = 1) AUROC: one row's contrast, trait teacher vs neutral teacher.
    from sklearn.metrics import roc_auc_score

    results["row_auroc"] = {}
    for name in TEACHERS[1:]:
        j = traits.index(name)
        c = {k: (v[:, 1:] - v[:, :1]) for k, v in pools.items()}
        def score(m, j=j):
            return m[:, j] - (m.sum(1) - m[:, j]) / (m.shape[1] - 1)

        y = [1] * len(c[name]) + [0] * len(c["neutral"])
        results["row_auroc"][name] = float(roc_auc_score(
            y, np.concatenate([score(c[name]), score(c["neutral"])])))
    results["pool_mean_shift"] = {k: dict(zip(traits, (v[:, 1:] - v[:, :1]).mean(0).round(4)
                                              .tolist(), strict=True)) for k, v in pools.items()}
    (args.out / "validation.json").write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
