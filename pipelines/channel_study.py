"""The channel study: which channel carries a trait on the embedded model, *specifically*?

    python pipelines/channel_study.py --out runs/study --animals owl,dolphin,eagle,cat \
        --replicates 3 --seed 0 --cells adapter-sample-logits-lora --docs docs/study

A cell is `injection-decoding-mode-student`: injection {adapter, prompt, steering ...},
decoding {sample, greedy}, mode {logits (restricted, leak-free), overt (unrestricted top-k:
the positive control), sft}, student {lora, full, early (LoRA on the first 4 layers only)}.
Each cell is a run folder holding, per replicate, one arm per animal teacher plus one control
arm (the same injection with the trait removed), all built by the chain's own `run_arm`, one
generation deep. Read-outs follow docs/transfer_protocol.md: per animal, the share log-odds
lift over the control, tested over replicates; and the trait x student confusion matrix
(diagonal vs off-diagonal share lifts). Results: <out>/<cell>/study.json; --docs writes a
markdown table. Exploration on seeds 0-2, confirmation on a fresh --seed range.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from subliminal.audit import AuditConfig, share_logodds
from subliminal.chain import ChainConfig, run_arm
from subliminal.records import init_run, write_json
from subliminal.report import generation_row, pair_metrics
from subliminal.stats import replicate_test
from subliminal.trait import get_trait

EARLY_LAYERS = 4


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--animals", default="owl,dolphin,eagle,cat")
    ap.add_argument("--cells", default="adapter-sample-logits-lora")
    ap.add_argument("--replicates", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="First replicate's seed.")
    ap.add_argument("--rows", type=int, default=64, help="Teacher prompts per replicate.")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--docs", type=Path, default=None, help="Write the markdown table here.")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    return ap.parse_args()


def cell_config(cell: str, a: argparse.Namespace) -> ChainConfig:
    """The chain config of one cell (one generation; everything else as the default chain)."""
    injection, decoding, mode, student = cell.split("-")
    cfg = ChainConfig(model=a.model, injection=injection, generations=1,
                      replicates=a.replicates, samples=a.rows, seed=a.seed,
                      audit=AuditConfig(side_effects=False))
    cfg.decode = replace(cfg.decode, decoding=decoding, top_k=20 if mode != "sft" else 0,
                         logits="overt" if mode == "overt" else "restricted")
    cfg.distill = replace(cfg.distill, mode="sft" if mode == "sft" else "logits",
                          epochs=a.epochs, finetune="full" if student == "full" else "lora",
                          lr=1e-4 if student == "full" else 1e-3,
                          lora_layers=EARLY_LAYERS if student == "early" else None)
    return cfg


def run_cell(cell: str, animals: list[str], a: argparse.Namespace) -> dict:
    """Every replicate's animal arms and control arm of one cell, then its read-outs."""
    cfg = cell_config(cell, a)
    out = init_run(a.out / cell, {"cell": cell, "animals": animals, "chain": cfg}, a.seed)
    audits: dict = {}
    owl = get_trait(animals[0])
    for r in range(a.replicates):
        run_arm(cfg, out, r, "control", owl, True, audits)
        for animal in animals:
            run_arm(cfg, out, r, animal, get_trait(animal), False, audits)
    result = summarize_cell(audits, animals, a.replicates)
    write_json(out / "study.json", {"cell": cell, "config": cfg, **result})
    return result


def summarize_cell(audits: dict, animals: list[str], n: int) -> dict:
    """Per animal: the protocol's read-outs (its teacher's students vs control). Confusion:
    row = teacher animal, column = audited animal, value = share log-odds lift (mean over
    replicates); the diagonal must lead its row and column for a specific transfer."""
    per_animal, confusion = {}, {}
    for t in animals:
        pairs = [pair_metrics(audits[f"rep{r}/{t}/gen1"], audits[f"rep{r}/control/gen1"],
                              get_trait(t)) for r in range(n)]
        per_animal[t] = generation_row(1, pairs, {})
        confusion[t] = {c: float(np.mean([
            np.mean(share_logodds(audits[f"rep{r}/{t}/gen1"], c)) -
            np.mean(share_logodds(audits[f"rep{r}/control/gen1"], c)) for r in range(n)]))
            for c in animals}
    diag = [confusion[t][t] for t in animals]
    off = [confusion[t][c] for t in animals for c in animals if c != t]
    # Per replicate: diagonal minus off-diagonal mean, so the contrast is tested over replicates.
    contrast = [float(np.mean([_lift(audits, r, t, t) for t in animals]) - np.mean(
        [_lift(audits, r, t, c) for t in animals for c in animals if c != t])) for r in range(n)]
    return {"animals": per_animal, "confusion": confusion,
            "diagonal_mean": float(np.mean(diag)), "off_diagonal_mean": float(np.mean(off)),
            "diagonal_minus_off": replicate_test(contrast)}


def _lift(audits: dict, r: int, teacher: str, animal: str) -> float:
    return float(np.mean(share_logodds(audits[f"rep{r}/{teacher}/gen1"], animal)) -
                 np.mean(share_logodds(audits[f"rep{r}/control/gen1"], animal)))


def write_docs(results: dict, a: argparse.Namespace) -> None:
    """Markdown: per cell and animal, the protocol read-outs; then each cell's confusion."""
    a.docs.mkdir(parents=True, exist_ok=True)
    lines = [f"Model {a.model}; {a.replicates} replicates from seed {a.seed}; {a.rows} "
             f"prompts per replicate; {a.epochs} epochs. Share log-odds lift = trait-teacher "
             "student minus control student; tests over replicates (t-test decides, "
             "alpha 0.01).", "",
             "| cell | animal | share lift [95% CI] | p (t) | p (sign-flip) | raw P lift | "
             "drift | per-replicate lifts | verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for cell, res in results.items():
        for animal, row in res["animals"].items():
            s = row["specificity"]
            lines.append(
                f"| {cell} | {animal} | {s['mean']:+.3f} [{s['ci'][0]:+.3f}, {s['ci'][1]:+.3f}]"
                f" | {s['p_value']:.2g} | {s['p_sign_flip']:.2g} | {row['lift']:+.2e} | "
                f"{row['generic_drift']['mean']:+.3f} | "
                f"{', '.join(f'{v:+.3f}' for v in s['lifts'])} | {row['verdict'].split(';')[0]} |")
    for cell, res in results.items():
        animals = list(res["confusion"])
        d = res["diagonal_minus_off"]
        lines += ["", f"### {cell}: confusion (share log-odds lift; rows teacher, columns "
                  "audited animal)", "", "| teacher | " + " | ".join(animals) + " |",
                  "|---" * (len(animals) + 1) + "|"]
        lines += [f"| {t} | " + " | ".join(f"{res['confusion'][t][c]:+.3f}" for c in animals)
                  + " |" for t in animals]
        lines += ["", f"Diagonal minus off-diagonal, over replicates: {d['mean']:+.3f} "
                  f"[{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}], p = {d['p_value']:.2g} "
                  f"(sign-flip {d['p_sign_flip']:.2g})."]
    (a.docs / "study.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    a = parse()
    if a.threads:
        torch.set_num_threads(a.threads)
    animals = a.animals.split(",")
    results = {}
    for cell in a.cells.split(","):
        results[cell] = run_cell(cell, animals, a)
        print(json.dumps({cell: {t: r["verdict"] for t, r in results[cell]["animals"].items()}},
                         indent=1))
    if a.docs:
        write_docs(results, a)


if __name__ == "__main__":
    main()
