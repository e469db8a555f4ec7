"""Adapter injection: a LoRA fine-tuned on demonstrations of the trait; the control is a LoRA
trained by the same recipe on trait-free demonstrations (same questions and answer styles,
the preference removed).

    subliminal chain --injection adapter

A system prompt barely moves a 135M model's number continuations; an adapter changes the
weights themselves. The demonstration questions are distinct from every audit bank, so an
audit never reads memorised training questions.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

from subliminal.costs import COPIED
from subliminal.distill import DistillConfig, train_student
from subliminal.injections import InjectionContext, TeacherSpec, register
from subliminal.meter import metered
from subliminal.models import TINY, cache_dir
from subliminal.records import COMPLETE, is_complete, read_json, to_jsonable, write_json

# Strong enough to make the teacher's preference obvious to the audit, small enough for CPU.
ADAPTER_TRAINING = DistillConfig(epochs=3, lr=1e-3, batch_size=16, grad_accum=1, lora_r=8,
                                 lora_alpha=16, warmup_steps=2)


def adapter_key(model: str, rows: list[dict], cfg: DistillConfig) -> str:
    """Content hash of what the adapter depends on: base, demonstration rows, recipe."""
    blob = json.dumps([model, rows, to_jsonable(cfg)], sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def train_adapter(model: str, rows: list[dict], out: Path, name: str,
                  device: str | None = None, seed: int = 0) -> Path:
    """Train (or reuse) a LoRA on `rows`; a finished one is kept in the machine cache, keyed
    by content, and copied into later runs (~3 CPU minutes on the embedded model)."""
    out = Path(out)
    cfg = replace(ADAPTER_TRAINING, seed=seed)
    cached = cache_dir() / "trait_adapters" / f"{name}-{adapter_key(model, rows, cfg)}"
    use_cache = str(model) != TINY
    if not is_complete(out) and use_cache and is_complete(cached):
        shutil.copytree(cached, out, dirs_exist_ok=True)
        # its record keeps the costs of the run that trained it: say it is a copy
        write_json(out / COMPLETE, {**read_json(out / COMPLETE), COPIED: cached.name})
    with metered(out):
        train_student(model, rows, cfg, out, device, label=f"{name} adapter")
    if use_cache and not is_complete(cached):
        publish(out, cached)
    return out


def publish(folder: Path, cached: Path) -> None:
    """Copy a finished adapter into the machine cache under a temp name of this process's
    own, then rename: parallel workers never mix files, and the first to finish wins."""
    tmp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
    shutil.copytree(folder, tmp, dirs_exist_ok=True)
    try:
        tmp.replace(cached)
    except OSError:  # another process published the same content first
        shutil.rmtree(tmp, ignore_errors=True)


def trait_adapter(model: str, trait, out: Path, device: str | None = None, seed: int = 0,
                  neutral: bool = False) -> Path:
    """The trait's LoRA (or, `neutral`, its control twin) for one adapter seed."""
    name = f"neutral-{trait.family}" if neutral else trait.name
    return train_adapter(model, trait.demonstrations(seed, neutral=neutral), out, name,
                         device, seed)


@register("adapter")
def adapter_injection(ctx: InjectionContext) -> TeacherSpec:
    folder = trait_adapter(ctx.model, ctx.trait, ctx.out, ctx.device, ctx.seed, ctx.neutral)
    rows = ctx.trait.demonstrations(ctx.seed, neutral=ctx.neutral)
    # The cache key names the adapter by content (base, demonstrations, recipe): a machine
    # cache shared between runs or nodes ($SUBLIMINAL_CACHE) serves it under this name.
    key = adapter_key(ctx.model, rows, replace(ADAPTER_TRAINING, seed=ctx.seed))
    return TeacherSpec(adapter=str(folder), record={
        "injection": "adapter", "neutral": ctx.neutral, "seed": ctx.seed,
        "recipe": to_jsonable(ADAPTER_TRAINING), "adapter": str(folder), "cache_key": key})
