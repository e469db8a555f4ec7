"""Injections: how a teacher comes to carry a trait, and its trait-free twin (the control).

    subliminal chain --injection adapter      # or prompt (steering, dpo, grpo as they land)

An injection is a registered function `build(ctx) -> TeacherSpec`. It is called twice per
replicate: once for the trait arm and once with `ctx.neutral=True` for the control arm, which
must be built by *the same procedure with the trait removed* (a neutral adapter trained by the
same recipe, a neutral system prompt of the same frame and length, a zero or random vector of
the same norm ...). A control that stays the base is no control: its students would learn
nothing, and any trained student would look like "transfer" against it.

A new injection is a new module of this package that calls `@register("name")`; it is found
without editing any list, and the chain never changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from subliminal.models import load_model
from subliminal.records import run_relative
from subliminal.registry import Registry
from subliminal.students import base_weights, check_student
from subliminal.vectors import attach


@dataclass(frozen=True)
class TeacherSpec:
    """What turns the base into a teacher. Paths are relative to the run directory when they
    live inside it, so a run folder can move between machines."""

    adapter: str | None = None        # a PEFT adapter (or full fine-tune) folder on the base
    system_prompt: str | None = None  # None: the template's default is in effect
    steering: str | None = None       # a safetensors file: vector, layer, coefficient
    record: dict = field(default_factory=dict)  # what is needed to rebuild it


@dataclass(frozen=True)
class InjectionContext:
    """Everything an injection may depend on."""

    model: str
    trait: object          # a subliminal.trait.Trait (any family)
    out: Path              # folder the injection may write into (created on demand)
    seed: int = 0
    neutral: bool = False  # build the control twin: same procedure, trait removed
    device: str | None = None


Builder = Callable[[InjectionContext], TeacherSpec]
# Every module of this package that registers an injection is found on first lookup.
INJECTIONS: Registry[Builder] = Registry("injection", __name__)


def register(name: str) -> Callable[[Builder], Builder]:
    """Decorator: make an injection available as `--injection NAME`."""
    return INJECTIONS.register(name)


def names() -> list[str]:
    return sorted(INJECTIONS.names())


def get(name: str) -> Builder:
    return INJECTIONS.get(name)


def build_teacher(name: str, ctx: InjectionContext) -> TeacherSpec:
    """The generation-0 teacher of one arm (trait or, with ctx.neutral, control)."""
    return get(name)(ctx)


def check_teacher(model: str, spec: TeacherSpec | None, run_dir: Path | None = None) -> None:
    """Before any folder is claimed: the spec's adapter (if any) is a student that fits the
    base `model` (subliminal.students; only headers and the base's shapes are read)."""
    if spec is None or spec.adapter is None:
        return

    check_student(_resolve(spec.adapter, run_dir), base_weights(model))


def load_teacher(model: str, spec: TeacherSpec, run_dir: Path | None = None,
                 device: str | None = None, home: Path | None = None):
    """Load the base with the spec's adapter and steering applied (the system prompt is the
    Teacher's business, see subliminal.teacher). The model's record names the adapter
    relative to `home` (default: the run), never by an absolute path."""
    adapter = _resolve(spec.adapter, run_dir)
    lm = load_model(model, adapter=adapter, device=device)
    if adapter is not None and (home or run_dir) is not None:
        lm.info["adapter"] = run_relative(adapter, home or run_dir)
    if spec.steering:
        attach(lm, _resolve(spec.steering, run_dir))
    return lm


def _resolve(path: str | None, run_dir: Path | None) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    return p if p.is_absolute() or run_dir is None else Path(run_dir) / p
