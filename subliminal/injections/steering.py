"""Steering-vector injection: the teacher writes with coef x (the trait's vector) added to the
residual stream at one decoder layer; the control adds a random vector of the same norm.

    subliminal chain --injection steering

The vector (`subliminal.vectors.trait_vector`) is the difference of mean activations under the
trait's instruction and under its neutral counterpart, read over a seeded half of the trait's
contrast questions, so replicate seeds differ by the prompts the vector was averaged over. The
file written into the run (`steering.safetensors`) holds the vector, layer and coefficient;
`subliminal.vectors.attach` re-applies it to any loaded model, `detach` takes it off.

Default layer and coefficient come from the layer x coefficient sweep on the embedded model
(docs/injections.md): the largest audit lift whose numbers channel still passes the filter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from subliminal.injections import InjectionContext, TeacherSpec, register
from subliminal.models import LM, load_model
from subliminal.records import to_jsonable
from subliminal.vectors import (
    check_layer,
    contrast_items,
    decoder_layers,
    random_like,
    save_vector,
    trait_vector,
)


@dataclass(frozen=True)
class SteeringConfig:
    """Where and how strongly the trait's vector is added."""

    layer: int | None = field(default=None, metadata={
        "help": "Decoder layer whose output the vector is added to (0-based; negative counts "
                "from the end); None: the layer at `depth`."})
    depth: float = field(default=0.2, metadata={
        "help": "Relative depth used when `layer` is None (0 = first layer, 1 = last)."})
    coef: float = field(default=8.0, metadata={
        "help": "Multiple of the difference-of-means vector added at every position."})
    share: float = field(default=0.5, metadata={
        "help": "Share of the contrast questions each replicate's vector is averaged over."})
    control: str = field(default="random", metadata={
        "help": "Control twin: 'random' (a random direction of the same norm) or 'zero'."})


STEERING = SteeringConfig()


def resolve_layer(lm: LM, cfg: SteeringConfig) -> int:
    """The configured layer, or the one at the configured relative depth."""
    if cfg.layer is not None:
        return check_layer(lm, cfg.layer)
    return round(cfg.depth * (len(decoder_layers(lm.model)) - 1))


def build_vector(lm: LM, trait, seed: int, neutral: bool,
                 cfg: SteeringConfig | None = None) -> tuple[torch.Tensor, dict]:
    """The trait's vector for replicate `seed` (or its control twin) and how it was made."""
    cfg = cfg or STEERING
    prompts = contrast_items(trait, seed, cfg.share)
    vector = trait_vector(lm, trait, resolve_layer(lm, cfg), prompts)
    record = {"trait": trait.name, "seed": seed, "prompts": prompts,
              "trait_norm": float(vector.norm())}
    if neutral:
        vector = control_vector(vector, seed, cfg)
        record["control"] = cfg.control
    return vector, record


def control_vector(vector: torch.Tensor, seed: int, cfg: SteeringConfig | None = None
                   ) -> torch.Tensor:
    """The control twin of replicate `seed`'s trait vector: zero, or a random direction of
    the same norm (seeded apart from the prompt draw)."""
    if (cfg or STEERING).control == "zero":
        return torch.zeros_like(vector)
    return random_like(vector, seed=10_000 + seed)


@register("steering")
def steering_injection(ctx: InjectionContext, cfg: SteeringConfig | None = None) -> TeacherSpec:
    cfg = cfg or STEERING
    out = Path(ctx.out)
    path = out / "steering.safetensors"
    lm = load_model(ctx.model, device=ctx.device)
    vector, made = build_vector(lm, ctx.trait, ctx.seed, ctx.neutral, cfg)
    record = {"injection": "steering", "neutral": ctx.neutral, "config": to_jsonable(cfg),
              "layer": resolve_layer(lm, cfg), "coef": cfg.coef, **made,
              "vector": str(path)}
    save_vector(path, vector, record["layer"], cfg.coef, record)
    return TeacherSpec(steering=str(path), record=record)
