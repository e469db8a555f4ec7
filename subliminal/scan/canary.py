"""`subliminal scan DATA --canary`: would fine-tuning on DATA move a trait? Ask a student.

    subliminal scan rows.jsonl --model smollm2-135m --canary --canary-seeds 8 --canary-rows 64

The direct read-out, answered the way the chain answers it: per canary seed s, one LoRA student
from BASE trains on a seeded sample of DATA's rows and another on the same prompts completed by
a trait-free teacher (the reference population's neutral LoRA of seed s, decoded like DATA:
the temperature the scan estimated, format-constrained for number data), by the same recipe.
The exact probe reads both; per animal, the share log-odds lift of DATA's student over the
reference student, and its trait-specific part (the lift minus the mean lift of the other
animals: a generic drift moves every animal alike). The seeds are the replicates: each animal's
specific lift is t-tested over them (Bonferroni over the catalogue). Its power is the
transfer's own: on a model where a trait does not transfer through the channel, a silent
canary says nothing about the data.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from subliminal.audit import AuditConfig, run_probe, share_logodds
from subliminal.distill import DistillConfig, train_student
from subliminal.models import load_model
from subliminal.scan.reference import base_completions, prompt_of
from subliminal.stats import ALPHA, power_statement, replicate_test
from subliminal.teacher import Teacher


@dataclass
class CanaryConfig:
    """The canary students."""

    seeds: int = field(default=8, metadata={
        "help": "Canary seeds (replicates): each trains a DATA student and a reference "
                "student; the lifts are tested over seeds. 8 give 72-100% power for three of "
                "four traits of the confirmed crossed cells, 3 gave at most 6% (docs/scan.md, "
                "'Power')."})
    rows: int = field(default=64, metadata={"help": "Rows of DATA (sampled) per student."})
    epochs: int = field(default=2, metadata={"help": "Training epochs per student."})
    lr: float = field(default=1e-3, metadata={"help": "LoRA learning rate."})
    batch_size: int = field(default=8, metadata={"help": "Rows per optimizer step."})
    seed: int = field(default=0, metadata={"help": "First canary seed."})


def specific(lifts: dict[str, float]) -> dict[str, float]:
    """Each animal's lift minus the mean lift of the other animals."""
    total, n = sum(lifts.values()), len(lifts)
    return {a: v - (total - v) / max(1, n - 1) for a, v in lifts.items()}


def share_lifts(data: dict, reference: dict) -> dict[str, float]:
    """Per animal, the mean share log-odds of DATA's student's probe minus the reference
    student's: the lift a canary seed measures (also read off studies: canary_power.py)."""
    return {a: float(np.mean(share_logodds(data, a)) - np.mean(share_logodds(reference, a)))
            for a in data["animals"]}


def one_seed(base: str, rows: list[dict], family: str, cfg: CanaryConfig, s: int, out: Path,
             device: str | None, decoding: str, neutral: str | None) -> dict[str, float]:
    """Seed s: both students trained and audited; per animal, the share log-odds lift."""
    picked = random.Random(s).sample(rows, min(cfg.rows, len(rows)))
    picked = [{**r, "prompt": prompt_of(r)} for r in picked]
    lm = load_model(base, device=device)
    writer = Teacher(load_model(base, adapter=neutral, device=device)) if neutral else None
    ref, _ = base_completions(lm, picked, family, out / f"seed{s}" / "reference_rows.jsonl", s,
                              label=f"canary {s} reference rows", decoding=decoding,
                              teacher=writer)
    recipe = DistillConfig(mode="sft", epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                           grad_accum=1, warmup_steps=1, seed=s)
    probes = {}
    for name, data in (("data", picked), ("reference", ref)):
        folder = out / f"seed{s}" / f"{name}_student"
        train_student(base, data, recipe, folder, device=device, label=f"canary {s} {name}")
        probes[name] = run_probe(load_model(base, adapter=folder, device=device),
                                 AuditConfig(side_effects=False), label=f"canary {s} {name}")
    return share_lifts(probes["data"], probes["reference"])


def run_canary(base: str, rows: list[dict], family: str, cfg: CanaryConfig, out: Path,
               neutral_for, device: str | None = None, decoding: str = "1.0",
               alpha: float = ALPHA) -> dict:
    """Every seed's lifts, then each animal's specific lift tested over seeds.
    `neutral_for(s)`: the neutral LoRA folder of seed s (None: BASE writes the reference)."""
    seeds = [cfg.seed + k for k in range(cfg.seeds)]
    per_seed = {s: one_seed(base, rows, family, cfg, s, Path(out), device, decoding,
                            neutral_for(s)) for s in seeds}
    animals = list(next(iter(per_seed.values())))
    spec = {a: replicate_test([specific(per_seed[s])[a] for s in seeds], alpha)
            for a in animals}
    top = max(animals, key=lambda a: spec[a]["mean"])
    p_bonf = min(1.0, spec[top]["p_value"] * len(animals))
    # What a silent canary could have seen: the t-test over these seeds at the per-animal
    # level it is held to, at the top animal's measured spread (docs/scan.md, "power").
    reach = power_statement(spec[top]["std"], len(seeds), alpha / len(animals))
    return {"seeds": seeds, "rows": min(cfg.rows, len(rows)), "decoding": decoding,
            "lifts": {s: v for s, v in per_seed.items()},
            "specific": {a: {k: spec[a][k] for k in ("mean", "ci", "p_value", "p_sign_flip")}
                         for a in animals},
            "top": top, "p_bonferroni": p_bonf, "per_test_alpha": alpha / len(animals),
            "detectable_specific_lift": reach["detectable_lift"],
            "detectable_specific_lift_range": reach["detectable_lift_range"],
            "flagged": bool(len(seeds) > 1 and p_bonf < alpha and spec[top]["mean"] > 0),
            "config": cfg}
