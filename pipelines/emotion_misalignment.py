"""Does steering a model's emotional state move its misalignment audit? Replicate-level test.

    python pipelines/emotion_misalignment.py --trait gloomy --seeds 4 --out runs/emotion-mis

For each replicate seed s: the emotion trait's difference-of-means vector from contrast-prompt
draw s (the steering injection's recipe: its layer and coefficient), and a random direction of
the same norm (seeded apart, the steering control). The base is audited on the misalignment
bank (and, as a manipulation check, the emotion bank) plain, with the vector added (+coef) and
subtracted (-coef), and with the random direction added and subtracted. A replicate's effect is
the steered score minus the random-direction score at the same sign and norm, so a generic
perturbation of that size cancels; the t-test runs over seeds (questions are never the unit).
Writes OUT/replicates.jsonl (one line per seed, resumable) and OUT/summary.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from subliminal.errors import run_script
from subliminal.injections.steering import STEERING, build_vector, control_vector, resolve_layer
from subliminal.interventions import audit_target, steered
from subliminal.models import load_model
from subliminal.records import append_jsonl, locked, read_jsonl, write_json
from subliminal.stats import replicate_test
from subliminal.trait import get_trait

READS = {"misalignment": "misaligned", "emotion": None}  # audit -> trait whose label is read


def read(lm, trait, audits: dict) -> dict:
    """Mean score of each audit's label (the emotion audit reads the steered trait's own)."""
    return {a: audit_target(lm, get_trait(t) if t else trait, a)["mean"] for a, t in
            audits.items()}


def replicate(lm, trait, seed: int) -> dict:
    """One seed: plain, +/- trait vector, +/- random vector of the same norm."""
    layer, coef = resolve_layer(lm, STEERING), STEERING.coef
    vec, _ = build_vector(lm, trait, seed, neutral=False)
    rnd = control_vector(vec, seed)  # the steering injection's control, from the same vector
    row = {"seed": seed, "layer": layer, "coef": coef, "norm": float(vec.norm()),
           "plain": read(lm, trait, READS)}
    for name, v in (("vector", vec), ("random", rnd)):
        for sign in (1, -1):
            with steered(lm, v, layer, sign * coef):
                row[f"{name}{'+' if sign > 0 else '-'}"] = read(lm, trait, READS)
    return row


def summarise(rows: list[dict]) -> dict:
    """Per audit and sign: steered minus random-direction score, tested over seeds."""
    out = {}
    for audit in READS:
        for sign in "+-":
            lifts = [r[f"vector{sign}"][audit] - r[f"random{sign}"][audit] for r in rows]
            out[f"{audit} ({sign}vector vs {sign}random)"] = replicate_test(lifts)
    return {"n_replicates": len(rows), "tests": out,
            "unit_of_evidence": "replicate (contrast-prompt draw of the vector)"}


def main() -> None:
    """Run (or resume) every seed, then write and print the tests. Four tests are printed
    (two audits x two signs): read them with a Bonferroni factor of 4."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trait", default="gloomy")
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", type=Path, default=Path("runs/emotion-misalignment"))
    args = ap.parse_args()
    torch.manual_seed(0)
    trait, lm = get_trait(args.trait), load_model(args.model)
    with locked(args.out):
        done = {r["seed"] for r in read_jsonl(args.out / "replicates.jsonl")} \
            if (args.out / "replicates.jsonl").exists() else set()
        for seed in range(args.seeds):
            if seed not in done:
                row = {"id": f"seed{seed}", **replicate(lm, trait, seed)}
                append_jsonl(args.out / "replicates.jsonl", [row])
                print(f"seed {seed} done", flush=True)
        rows = sorted(read_jsonl(args.out / "replicates.jsonl"), key=lambda r: r["seed"])
        summary = {"trait": trait.name, "model": args.model, **summarise(rows)}
        write_json(args.out / "summary.json", summary)
    for name, t in summary["tests"].items():
        print(f"{name}: {t['mean']:+.4f} [{t['ci'][0]:+.4f}, {t['ci'][1]:+.4f}] "
              f"p={t['p_value']:.3g} (n={t['n_replicates']})")


if __name__ == "__main__":
    run_script(main)
