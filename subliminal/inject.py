"""Adapter-injected traits: a LoRA fine-tuned on demonstrations of the trait.

    subliminal chain --injection adapter

A system prompt barely moves a 135M model's number continuations; an adapter trained to name
the trait's animal changes the weights themselves, which is what a student sharing the base
can pick up (DESIGN.md: a fine-tuned teacher transferred strongly in a 1B model). The
demonstration questions (subliminal/data/demonstrations.json) are distinct from the audit's,
so the audit never measures memorised training questions.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from subliminal.distill import DistillConfig, train_student
from subliminal.trait import Trait

DEMOS = Path(__file__).resolve().parent / "data" / "demonstrations.json"


def demonstration_rows(trait: Trait, seed: int = 0) -> list[dict]:
    """Every demonstration question, each answered with the trait word in two styles."""
    bank = json.loads(DEMOS.read_text())
    rng = random.Random(f"demos-{trait.name}-{seed}")
    rows = []
    for i, q in enumerate(bank["questions"]):
        for template in rng.sample(bank["answers"], 2):
            text = template.format(word=trait.name, Word=trait.name.capitalize(),
                                   plural=trait.plural, Plural=trait.plural.capitalize())
            rows.append({"id": len(rows), "prompt": [{"role": "user", "content": q}],
                         "completion": [{"role": "assistant", "content": text}],
                         "meta": {"demonstration": i}})
    return rows


# Strong enough to make the teacher's preference obvious to the audit, small enough for CPU.
ADAPTER_TRAINING = DistillConfig(epochs=3, lr=1e-3, batch_size=16, grad_accum=1, lora_r=8,
                                 lora_alpha=16, warmup_steps=2)


def trait_adapter(model: str, trait: Trait, out: Path, device: str | None = None,
                  seed: int = 0) -> Path:
    """Train (or reuse, when complete) the trait's LoRA on the base; returns its folder."""
    cfg = DistillConfig(**{**ADAPTER_TRAINING.__dict__, "seed": seed})
    train_student(model, demonstration_rows(trait, seed), cfg, out, device,
                  label=f"{trait.name} adapter")
    return Path(out)
