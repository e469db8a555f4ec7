"""Does DPO suppression of an emotion beat a "calm down" prompt? Replicate-level test.

    python pipelines/calm_down.py --trait joyful --seeds 3 --out runs/calm-down-joyful

For each replicate seed s, a teacher carrying the trait (the adapter injection: LoRA on the
trait's demonstrations, adapter seed s) and its neutral twin (same recipe, trait-free
demonstrations) are trained. The teacher is then audited on the trait's own audit in five arms:
plain; under the calm-down system prompt; under a neutral system prompt of the same token
length (any system prompt changes answers, so the calm-down effect is read against it); with a
DPO suppressor trained on top of it (the trait's pairs flipped: neutral answer preferred); and
with the DPO control (the same pairs, each pair's order drawn at random, same recipe and seed).
Replicate effects (target label's mean score): prompt = calm - neutral prompt; DPO = suppressor
- DPO control; DPO vs prompt = the difference of the two (negative: DPO suppresses more);
installed = teacher - neutral twin (the manipulation check: is there a trait to suppress?).
t-tests run over seeds, never over questions. Writes OUT/replicates.jsonl (one line per seed,
resumable; trained adapters are kept in OUT/seedS/) and OUT/summary.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from subliminal.errors import run_script
from subliminal.injections.adapter import trait_adapter
from subliminal.injections.dpo import preference_pairs, train_dpo
from subliminal.interventions import CALM_DOWN, audit_target
from subliminal.models import attach_adapter, load_model
from subliminal.records import append_jsonl, locked, read_jsonl, write_json
from subliminal.stats import replicate_test
from subliminal.trait import get_trait

# Same token count as CALM_DOWN on the embedded model's tokenizer (28; checked in the record).
NEUTRAL_PROMPT = ("Read the question first. You are a helpful assistant. You answer every "
                  "question you are given. Answer it in your own words, please.")
EFFECTS = {  # effect name -> (arm, reference arm)
    "installed (teacher - neutral twin)": ("teacher", "twin"),
    "prompt (calm down - neutral prompt)": ("calm_down", "neutral_prompt"),
    "dpo (suppressor - random-order control)": ("dpo_suppress", "dpo_control"),
    "calm down vs plain teacher": ("calm_down", "teacher"),
    "dpo suppressor vs plain teacher": ("dpo_suppress", "teacher"),
}


def read(lm, trait, system_prompt: str | None = None) -> dict:
    """The target's mean score and the audit's panel (every label's mean, for drift)."""
    a = audit_target(lm, trait, system_prompt=system_prompt)
    return {"mean": a["mean"], "panel": a["panel"]}


def dpo_arm(model: str, trait, teacher: Path, out: Path, seed: int, control: bool) -> dict:
    """Train (or read back) a DPO LoRA on top of the teacher and audit the result."""
    pairs = preference_pairs(trait, seed, neutral=control, suppress=True)
    rec = train_dpo(model, pairs, out, seed=seed, base_adapter=teacher,
                    record={"trait": trait.name, "suppress": True, "control": control})
    lm = load_model(model, adapter=teacher)
    lm.model = attach_adapter(lm.model, out)
    return {**read(lm, trait), "dpo_seconds": rec.get("seconds")}


def replicate(model: str, trait, seed: int, out: Path) -> dict:
    """One seed: teacher and twin, then the five arms on the teacher."""
    folder = out / f"seed{seed}"
    teacher = trait_adapter(model, trait, folder / "teacher", seed=seed)
    twin = trait_adapter(model, trait, folder / "twin", seed=seed, neutral=True)
    lm = load_model(model, adapter=teacher)
    tok = lm.tokenizer
    row = {"seed": seed, "prompt_tokens": {"calm_down": len(tok(CALM_DOWN)["input_ids"]),
                                           "neutral": len(tok(NEUTRAL_PROMPT)["input_ids"])},
           "twin": read(load_model(model, adapter=twin), trait), "teacher": read(lm, trait),
           "calm_down": read(lm, trait, CALM_DOWN),
           "neutral_prompt": read(lm, trait, NEUTRAL_PROMPT)}
    for name, control in (("dpo_suppress", False), ("dpo_control", True)):
        row[name] = dpo_arm(model, trait, teacher, folder / name, seed, control)
    return row


def summarise(rows: list[dict]) -> dict:
    """Each effect on the target, tested over seeds, plus DPO's effect minus the prompt's."""
    eff = {name: [r[a]["mean"] - r[b]["mean"] for r in rows] for name, (a, b) in
           EFFECTS.items()}
    dpo, prompt = eff["dpo (suppressor - random-order control)"], \
        eff["prompt (calm down - neutral prompt)"]
    eff["dpo effect - prompt effect (negative: DPO suppresses more)"] = [
        d - p for d, p in zip(dpo, prompt, strict=True)]
    return {"n_replicates": len(rows), "tests": {k: replicate_test(v) for k, v in eff.items()},
            "arm_means": {arm: [r[arm]["mean"] for r in rows] for arm in
                          ("twin", "teacher", "calm_down", "neutral_prompt", "dpo_suppress",
                           "dpo_control")},
            "unit_of_evidence": "replicate (teacher adapter seed = DPO seed)"}


def main() -> None:
    """Run (or resume) every seed, then write and print the tests."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trait", default="joyful")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--out", type=Path, default=Path("runs/calm-down-joyful"))
    args = ap.parse_args()
    torch.manual_seed(0)
    trait = get_trait(args.trait)
    with locked(args.out):
        path = args.out / "replicates.jsonl"
        done = {r["seed"] for r in read_jsonl(path)} if path.exists() else set()
        for seed in range(args.seeds):
            if seed not in done:
                append_jsonl(path, [{"id": f"seed{seed}",
                                     **replicate(args.model, trait, seed, args.out)}])
                print(f"seed {seed} done", flush=True)
        rows = sorted(read_jsonl(path), key=lambda r: r["seed"])
        summary = {"trait": trait.name, "model": args.model, "calm_down_prompt": CALM_DOWN,
                   "neutral_prompt": NEUTRAL_PROMPT, **summarise(rows)}
        write_json(args.out / "summary.json", summary)
    for name, t in summary["tests"].items():
        print(f"{name}: {t['mean']:+.4f} [{t['ci'][0]:+.4f}, {t['ci'][1]:+.4f}] "
              f"p={t['p_value']:.3g} (n={t['n_replicates']})")


if __name__ == "__main__":
    run_script(main)
