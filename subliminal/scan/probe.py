"""`subliminal scan DATA --model BASE --probe`: does a short fine-tune on DATA move a trait?

    subliminal scan rows.jsonl --model smollm2-135m --probe --probe-rows 200

Two LoRA students from BASE on the same prompts: one on a sample of DATA's completions, one
(the control) on a neutral teacher's completions to those prompts, as many rows, decoded like
DATA (format-constrained for number data). The neutral teacher is the scan's first control
adapter (BASE + a LoRA trained on trait-free demonstrations) with the adapter injection, else
BASE. The exact audit probe reads every catalogue animal on both; the lift of each animal is
paired over the probe's questions, with a CI and a p-value. The specificity read-out: each
animal's lift minus the mean lift of the other animals, and its share of the positive lifts
(a trait, not a general drift, moves one animal more than the others).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from subliminal.audit import AuditConfig, animal_scores, run_probe
from subliminal.distill import DistillConfig, train_student
from subliminal.models import load_model
from subliminal.scan.reference import base_completions, prompt_of
from subliminal.stats import paired_test
from subliminal.teacher import Teacher


@dataclass
class ProbeConfig:
    """The probe fine-tunes."""

    rows: int = field(default=200, metadata={"help": "Rows of DATA (sampled) per student."})
    # The training of the channel study's LoRA students (docs/channel_study.md), whose lifts
    # are measured: a probe trained the same way is read against those figures.
    epochs: int = field(default=2, metadata={"help": "Training epochs per student."})
    lr: float = field(default=1e-3, metadata={"help": "LoRA learning rate."})
    batch_size: int = field(default=16, metadata={"help": "Rows per optimizer step."})
    audit_probe: str = field(default="prefill", metadata={"help": "'prefill' or 'direct'."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling, generation, training."})


def specificity(lifts: dict[str, dict]) -> dict[str, dict]:
    """Per animal: lift minus the mean lift of the others, and share of the positive lifts."""
    pos = sum(max(0.0, v["lift"]) for v in lifts.values())
    n = len(lifts)
    total = sum(v["lift"] for v in lifts.values())
    return {a: {"specificity": v["lift"] - (total - v["lift"]) / max(1, n - 1),
                "share": max(0.0, v["lift"]) / pos if pos > 0 else 0.0}
            for a, v in lifts.items()}


def run_probe_scan(base: str, rows: list[dict], family: str, cfg: ProbeConfig, out: Path,
                   device: str | None = None, decoding: str = "1.0",
                   teacher_adapter: str | None = None) -> dict:
    """Train the DATA and control students, audit both, and return per-animal lifts."""
    out = Path(out)
    rng = random.Random(cfg.seed)
    sample = rows if len(rows) <= cfg.rows else rng.sample(rows, cfg.rows)
    sample = [{**r, "prompt": prompt_of(r)} for r in sample]
    lm = load_model(base, device=device)
    teacher = Teacher(load_model(base, adapter=teacher_adapter, device=device)) \
        if teacher_adapter else None
    control, constrained = base_completions(lm, sample, family, out / "control_rows.jsonl",
                                            cfg.seed, label="control rows", decoding=decoding,
                                            teacher=teacher)
    dcfg = DistillConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, grad_accum=1,
                         warmup_steps=2, seed=cfg.seed)
    trained = {}
    for name, data in (("data", sample), ("control", control)):
        trained[name] = train_student(base, data, dcfg, out / f"{name}_student", device=device,
                                      label=f"probe {name} student")
    acfg = AuditConfig(probe=cfg.audit_probe)
    audits = {name: run_probe(load_model(base, adapter=out / f"{name}_student", device=device),
                              acfg, label=f"audit {name} student")
              for name in ("data", "control")}
    lifts = {}
    for animal in audits["data"]["animals"]:
        lifts[animal] = paired_test(animal_scores(audits["data"], animal),
                                    animal_scores(audits["control"], animal))
        lifts[animal]["data_mean"] = sum(animal_scores(audits["data"], animal)) / len(
            audits["data"]["probs"])
    top = max(lifts, key=lambda a: lifts[a]["lift"])
    return {"rows": len(sample), "family": family, "constrained_control": constrained,
            "control_teacher": teacher_adapter or "BASE", "control_decoding": decoding,
            "specificity": specificity(lifts),
            "config": cfg, "lifts": lifts, "top_lift": top,
            "losses": {k: v["losses"][-1] if v.get("losses") else None
                       for k, v in trained.items()},
            "questions": len(audits["data"]["probs"])}
