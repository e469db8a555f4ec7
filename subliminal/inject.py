"""Adapter-injected traits: a LoRA fine-tuned on demonstrations of the trait.

    subliminal chain --injection adapter

A system prompt barely moves a 135M model's number continuations; an adapter trained to name
the trait's animal changes the weights themselves, which is what a student sharing the base
can pick up (DESIGN.md: a fine-tuned teacher transferred strongly in a 1B model). The
demonstration questions (subliminal/data/demonstrations.json) are distinct from the audit's,
so the audit never measures memorised training questions.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

from subliminal.distill import DistillConfig, train_student
from subliminal.models import TINY, cache_dir
from subliminal.records import is_complete, to_jsonable
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
    """Train (or reuse) the trait's LoRA on the base; returns its folder.

    The adapter depends only on (model, trait, seed, training config), so a finished one is
    kept in the machine cache and copied into later runs instead of being retrained (~3 CPU
    minutes on the embedded model). The run directory always holds its own copy.
    """
    out = Path(out)
    cfg = DistillConfig(**{**ADAPTER_TRAINING.__dict__, "seed": seed})
    key = hashlib.sha256(json.dumps([model, trait.name, to_jsonable(cfg)],
                                    sort_keys=True).encode()).hexdigest()[:16]
    cached = cache_dir() / "trait_adapters" / f"{trait.name}-{key}"
    if not is_complete(out) and is_complete(cached) and str(model) != TINY:
        shutil.copytree(cached, out, dirs_exist_ok=True)
    train_student(model, demonstration_rows(trait, seed), cfg, out, device,
                  label=f"{trait.name} adapter")
    if not is_complete(cached) and str(model) != TINY:
        shutil.copytree(out, cached, dirs_exist_ok=True)
    return out
