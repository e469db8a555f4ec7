"""Validation of `subliminal scan`: does the likelihood ranking name the right trait?

    python benchmarks/validate_scan.py --injection adapter --prompts 384 --context completion \
        --traits owl,dolphin,eagle,elephant,wolf,cat --out runs/scan-validation-adapter
    python benchmarks/validate_scan.py --injection prompt --prompts 16 --context full \
        --out runs/scan-validation                  # the first, system-prompt validation

Labelled datasets come from the lab's own generation: owl, dolphin and eagle teachers and the
neutral teacher (plain BASE) complete the same numbers-channel prompts (greedy, format-
constrained) and the strict number filter keeps what a publisher would publish. A trait
teacher is injected the way the scan's `--injection` is: by the trait's system prompt, or by a
trait LoRA trained with `--teacher-seed` (a different seed from the scanner's own adapters, so
the scan never sees the exact weights that wrote the data). Every kept row is scored once
under every condition; datasets of n rows are then drawn from each pool to measure how often
the scan names the right trait (or says "none" for neutral data), and the AUROC of each
trait's contrast, trait-teacher vs neutral data. Two kinds of draw: `bootstrap` (with
replacement; n above the pool size only re-weighs the pool and overstates power) and `disjoint`
(the pool split into non-overlapping datasets: honest, but few of them). Calibrated rankings
use datasets from the first half of the prompts and, as the reference, the neutral teacher's
rows for the second half (what `--reference-rows` generates). Everything is saved under --out,
so a rerun resumes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from subliminal.channels import get_channel
from subliminal.filters import FilterConfig, filter_rows
from subliminal.injections.adapter import trait_adapter
from subliminal.models import load_model
from subliminal.records import read_jsonl
from subliminal.scan.likelihood import (
    LikelihoodConfig,
    conditions,
    rank_traits,
    row_contrast,
    score_rows,
)
from subliminal.teacher import DecodeConfig, Teacher, generate_rows
from subliminal.trait import CATALOGUE, Trait


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--injection", default="prompt", choices=("prompt", "adapter"))
    ap.add_argument("--teachers", default="owl,dolphin,eagle")
    ap.add_argument("--controls", default="", help="Teachers with a preference outside the "
                    "catalogue (e.g. maple): the right answer for their data is 'none'.")
    ap.add_argument("--traits", default=None, help="Scanner's traits (default: catalogue).")
    ap.add_argument("--teacher-seed", type=int, default=1, help="Teacher adapters' seed.")
    ap.add_argument("--prompts", type=int, default=24, help="Prompts per teacher.")
    ap.add_argument("--context", default="full")
    ap.add_argument("--sizes", default="10,25,50,100,1000")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("runs/scan-validation"))
    return ap.parse_args()


def writers(a: argparse.Namespace) -> list[str]:
    """Every non-neutral teacher: catalogue traits, then out-of-catalogue controls."""
    return a.teachers.split(",") + [c for c in a.controls.split(",") if c]


def pools_for(a: argparse.Namespace, traits: list[str], timing: dict
              ) -> tuple[dict, dict, set]:
    """Generate, filter and score every teacher's pool (cached under --out); also returns
    the ids of the first half of the prompts (calibrated datasets come from these)."""
    lm = load_model(a.model)
    channel = get_channel("numbers")
    prompts = channel.prompts(a.prompts, seed=1000)  # seeds no chain or test uses
    dcfg = DecodeConfig(decoding="greedy", constrained=True, batch_size=32)
    lcfg = LikelihoodConfig(context=a.context, batch_size=16, injection=a.injection)
    conds = conditions(traits, a.injection, a.model, a.out / "scanner_adapters")
    pools, kept_rows = {}, {}
    for name in ["neutral", *writers(a)]:
        trait = None if name == "neutral" else CATALOGUE.get(name) or Trait(name, name + "s")
        if trait and a.injection == "adapter":
            folder = trait_adapter(a.model, trait, a.out / "teacher_adapters" / name,
                                   seed=a.teacher_seed)
            teacher = Teacher(load_model(a.model, adapter=folder))
        else:
            teacher = Teacher(lm, trait.system_prompt if trait else None)
        t = time.perf_counter()
        rows = generate_rows(teacher, prompts, dcfg, channel, a.out / f"{name}.jsonl", seed=0,
                             label=f"generate {name}")
        timing.setdefault(f"generate_{name}", time.perf_counter() - t)
        kept, _, _ = filter_rows(rows, FilterConfig())
        kept_rows[name] = kept
        scores = a.out / f"{name}.{a.context}.npy"
        if not scores.exists():
            res = score_rows(lm, kept, lcfg, conds)
            np.save(scores, res["ll"])
            timing[f"score_{name}"] = res["seconds"]
            timing[f"rows_per_s_{name}"] = res["rows_per_s"]
            timing[f"tokens_per_row_{name}"] = res["tokens_per_row"]
        pools[name] = np.load(scores)
        timing[f"kept_{name}"] = f"{len(kept)}/{len(rows)}"
    return pools, kept_rows, {p["id"] for p in prompts[: a.prompts // 2]}


def judge(pool: np.ndarray, idx: np.ndarray, names: list[str], ref: np.ndarray | None) -> dict:
    r = rank_traits(pool[idx], names, LikelihoodConfig(bootstrap=100), ref_ll=ref)
    return {"top": r["top"], "named": r["top"] if r["stands_out"] else "none",
            "any": bool(r["any_trait"] and r["any_trait"]["significant"]),
            "contrast": [r["tests"][t]["contrast"] for t in r["traits"]],
            # The any-trait statistic: mean shift over all traits (calibration only shifts it).
            "mean_shift": float(np.mean(list(r["mean_shift"].values())))}


def draws(n_pool: int, n: int, repeats: int, rng, kind: str):
    """Row-index sets: `repeats` bootstrap draws, or the pool cut into disjoint sets."""
    if kind == "bootstrap":
        return [rng.integers(0, n_pool, n) for _ in range(repeats)]
    perm = rng.permutation(n_pool)
    return [perm[i: i + n] for i in range(0, n_pool - n + 1, n)]


def evaluate(pools: dict, kept: dict, first_ids: set, traits: list[str],
             a: argparse.Namespace) -> dict:
    names = ["none", *traits]
    teachers = writers(a)
    rng = np.random.default_rng(0)
    # Calibration: datasets from the first half of prompts, reference = neutral second half.
    first = {k: np.array([r["id"] in first_ids for r in v], dtype=bool)
             for k, v in kept.items()}
    out: dict = {}
    for kind in ("bootstrap", "disjoint"):
        out[kind] = {}
        for n in map(int, a.sizes.split(",")):
            per: dict = {}
            for mode in ("uncalibrated", "calibrated"):
                res: dict = {}
                for name in ["neutral", *teachers]:
                    pool = pools[name]
                    ref = None
                    if mode == "calibrated":
                        pool = pool[first[name]]
                        ref = pools["neutral"][~first["neutral"]]
                    sets = draws(len(pool), n, a.repeats, rng, kind)
                    if not sets or (kind == "disjoint" and len(sets) < 2):
                        continue
                    res[name] = [judge(pool, idx, names, ref) for idx in sets]
                if len(res) < 2:
                    continue
                row = {}
                for name, js in res.items():
                    right = name if name in a.teachers.split(",") else "none"
                    entry = {"datasets": len(js),
                             "accuracy": float(np.mean([j["named"] == right for j in js])),
                             "named": {k: round([j["named"] for j in js].count(k) / len(js), 3)
                                       for k in sorted({j["named"] for j in js})}}
                    if mode == "calibrated":
                        entry["any_trait_flagged"] = float(np.mean([j["any"] for j in js]))
                    if name != "neutral" and "neutral" in res:
                        y = [1] * len(js) + [0] * len(res["neutral"])
                        entry["auroc_any_vs_neutral"] = float(roc_auc_score(
                            y, [j["mean_shift"] for j in js + res["neutral"]]))
                        if name in traits:
                            k = traits.index(name)
                            entry["top1"] = float(np.mean([j["top"] == name for j in js]))
                            entry["auroc_vs_neutral"] = float(roc_auc_score(
                                y, [j["contrast"][k] for j in js + res["neutral"]]))
                    row[name] = entry
                per[mode] = row
            out[kind][n] = per
    shift = {x: v[:, 1:] - v[:, :1] for x, v in pools.items()}  # rows x traits, per pool

    def row_auroc(name: str, score) -> float:
        """Per-row AUROC of score(shift): this teacher's rows vs the neutral teacher's."""
        pos, neg = score(shift[name]), score(shift["neutral"])
        return float(roc_auc_score([1] * len(pos) + [0] * len(neg), np.concatenate([pos, neg])))

    out["row_auroc"] = {n: row_auroc(n, lambda m, k=traits.index(n): row_contrast(m)[:, k])
                        for n in teachers if n in traits}
    out["row_auroc_any"] = {n: row_auroc(n, lambda m: m.mean(1)) for n in teachers}
    out["pool_mean_shift"] = {x: dict(zip(traits, m.mean(0).round(5).tolist(), strict=True))
                              for x, m in shift.items()}
    return out


def table(results: dict) -> str:
    """The markdown table for docs/scan_validation.md: every n, draw kind and teacher."""
    def f(x):
        return "–" if x is None else f"{x:.2f}"

    lines = ["| draw | n | teacher | datasets | uncal. acc | cal. acc | cal. named | "
             "any-trait flagged | AUROC own | AUROC any |", "|---" * 10 + "|"]
    for kind in ("disjoint", "bootstrap"):
        for n, per in results[kind].items():
            cal, unc = per.get("calibrated", {}), per.get("uncalibrated", {})
            for name, e in cal.items():
                named = ", ".join(f"{k} {v:.0%}" for k, v in
                                  sorted(e["named"].items(), key=lambda kv: -kv[1]))
                lines.append(
                    f"| {kind} | {n} | {name} | {e['datasets']} | "
                    f"{f(unc.get(name, {}).get('accuracy'))} | {f(e['accuracy'])} | {named} | "
                    f"{f(e.get('any_trait_flagged'))} | {f(e.get('auroc_vs_neutral'))} | "
                    f"{f(e.get('auroc_any_vs_neutral'))} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    a = parse()
    torch.set_num_threads(a.threads)
    a.out.mkdir(parents=True, exist_ok=True)
    traits = a.traits.split(",") if a.traits else list(CATALOGUE)
    old = a.out / "validation.json"  # a rerun only re-judges: keep the first run's timings
    timing: dict = json.loads(old.read_text())["timing_s"] if old.exists() else {}
    pools, kept, first_ids = pools_for(a, traits, timing)
    texts = {k: [r["completion"][0]["content"] for r in read_jsonl(a.out / f"{k}.jsonl")]
             for k in pools}
    same = {k: float(np.mean([x == y for x, y in zip(texts[k], texts["neutral"], strict=True)]))
            for k in pools if k != "neutral"}
    results = {"args": {k: str(v) for k, v in vars(a).items()}, "traits": traits,
               "pool_rows": {k: len(v) for k, v in pools.items()},
               "identical_to_neutral": same, "timing_s": timing,
               **evaluate(pools, kept, first_ids, traits, a)}
    (a.out / "validation.json").write_text(json.dumps(results, indent=2))
    (a.out / "validation_table.md").write_text(table(results))
    print(json.dumps({k: results[k] for k in ("pool_rows", "row_auroc", "timing_s")}, indent=1))


if __name__ == "__main__":
    main()
