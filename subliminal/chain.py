"""Chain: teacher -> student 1 -> student 2 -> ..., against a control arm that trains.

    subliminal chain --generations 3

Each replicate (an independent teacher seed x student seed x data seed) runs two arms. The
trait arm's generation-0 teacher is the base plus the trait's injection; the control arm's is
the base plus the *same injection with the trait removed* (a LoRA trained by the same recipe on
trait-free demonstrations, or a neutral prompt of the same frame), so its students learn as
much as the trait arm's. Both arms share the replicate's prompts, seeds and training. Student k
is trained from the *base* on generation k-1's filtered rows, then teaches generation k+1 as
base + its adapter. Every model is audited; claims are tested over replicates (report.py).
Every arm of a replicate trains on the same number of rows (the equal dose,
subliminal/replicate.py). Layout: subliminal/layout.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from subliminal.audit import AuditConfig
from subliminal.channels import channel_names
from subliminal.distill import SMALL_RUN_LR, DistillConfig
from subliminal.errors import SubliminalError
from subliminal.fanout import FanOut
from subliminal.filters import FilterConfig
from subliminal.injections import names as injection_names
from subliminal.layout import ARMS, stage_dirs  # noqa: F401  (re-exported for callers)
from subliminal.models import EMBEDDED, TINY
from subliminal.models import resolve as resolve_model_path
from subliminal.progress import console, overall
from subliminal.records import init_run, is_complete, mark_complete, to_jsonable
from subliminal.replicate import (  # noqa: F401  (audit, make_channel: used by callers)
    Arm,
    audit,
    make_channel,
    planned_stages,
    run_phases,
)
from subliminal.report import report, summarize, write_summary
from subliminal.teacher import DecodeConfig
from subliminal.trait import get_trait


def small_run_distill() -> DistillConfig:
    """Training for the default CPU chain: logit distillation through the restricted
    (leak-free) channel; tens of rows need a larger step than the paper's 2e-4 over 10k rows
    x 3 epochs (pipelines/ holds the paper-scale recipe)."""
    return DistillConfig(mode="logits", epochs=2, lr=SMALL_RUN_LR["lora"], batch_size=8,
                         grad_accum=1, warmup_steps=1)


def small_run_decode() -> DecodeConfig:
    """Sampled at T=1 (the paper's decoding; it keeps more rows than greedy, which echoes the
    prompt), format-constrained, storing the teacher's distribution over the channel's
    allowed tokens (restricted, leak-free) for `logits` students."""
    return DecodeConfig(decoding="sample", temperature=1.0, constrained=True, top_k=20,
                        logits="restricted")


@dataclass
class ChainConfig:
    """Everything a chain run depends on; stored resolved in RUN/config.json."""

    model: str = field(default=EMBEDDED, metadata={
        "help": "Base model: smollm2-135m (embedded), tiny (tests), an HF id or a directory."})
    trait: str = field(default="owl", metadata={"help": "Catalogue trait of the teacher."})
    injection: str = field(default="adapter", metadata={
        "choices": injection_names,
        "help": "How generation 0 carries the trait (subliminal.injections): 'prompt' (system "
                "prompt; control: a neutral prompt of the same frame) or 'adapter' (a LoRA "
                "on trait demonstrations; control: a LoRA on trait-free ones)."})
    generations: int = field(default=3, metadata={
        "min": 1, "max": 50, "help": "Students in each arm."})
    replicates: int = field(default=3, metadata={
        "min": 1, "max": 20,
        "help": "Independent replicates (teacher seed x student seed x data seed), each run "
                "through both arms. Claims are tested over replicates; n replicates give an "
                "exact sign-flip p no lower than 2/2^n, so the t-test over replicates decides."})
    samples: int = field(default=64, metadata={
        "min": 1,
        "help": "Prompts per generation (the default fits 15 CPU minutes; the paper: 30,000)."})
    channel: str = field(default="numbers", metadata={
        "choices": channel_names, "help": "The channel the teacher writes in."})
    difficulty: str = field(default="1", metadata={
        "choices": ("1", "2", "3", "4", "mixed"),
        "help": "Math level 1-4 or 'mixed' (the embedded model solves only level 1)."})
    problems: str | None = field(default=None, metadata={
        "help": "Local GSM8K-style JSONL (question/answer) for the math channel."})
    math_share: float = field(default=0.5, metadata={
        "min": 0.0, "max": 1.0, "help": "Math share of --channel mixed."})
    seed: int = field(default=0, metadata={
        "min": 0,
        "help": "First replicate's seed (replicate r uses seed+r for its teacher, prompts and "
                "student). Explore on one range, confirm on a fresh one."})
    equal_dose: bool = field(default=True, metadata={
        "help": "Every arm of a replicate trains on the same number of rows (a random subset "
                "of the smallest arm's kept count, in RUN/dose.json), so on the same number "
                "of steps: arms then differ only in their teacher."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda (default: auto)."})
    decode: DecodeConfig = field(default_factory=small_run_decode)
    filter: FilterConfig = field(default_factory=FilterConfig)
    distill: DistillConfig = field(default_factory=small_run_distill)
    audit: AuditConfig = field(default_factory=AuditConfig)


def resolve_model(model: str) -> None:
    """Make sure the base is ready to load (an embedded model is converted once per machine):
    done by the driver, so parallel tasks never race to convert it."""
    if model != TINY:
        resolve_model_path(model)


def chain_arms(cfg: ChainConfig) -> list[Arm]:
    """The trait arm and its control twin (the same injection with the trait removed)."""
    return [Arm("trait", cfg.trait, False), Arm("control", cfg.trait, True)]


def run_chain(cfg: ChainConfig, out: Path, preset: str | None = None,
              plan: FanOut = FanOut()) -> dict:
    """Run (or resume) every replicate of both arms and write the summary. A `preset` name is
    recorded in RUN/config.json beside the resolved config (provenance, not compared). The
    arms' phases are fanned out (`plan`: in this process, or Ray tasks); a partial summary
    (summary.partial.json) is rewritten after each generation and the final summary.json
    written at the end, the same however the units ran. A finished run is shown, after
    checking its config.json is still the one it was made from (records.completed)."""
    out = init_run(out, cfg if preset is None else {"preset": preset, **to_jsonable(cfg)},
                   cfg.seed)
    if is_complete(out):
        console.print(f"{out}: already complete; showing its summary")
        return report(out)
    if get_trait(cfg.trait) is None:
        raise SubliminalError("the chain needs a trait; the control arm is built in")
    resolve_model(cfg.model)  # converted once here, before any task loads it
    arms, where = chain_arms(cfg), out.resolve()

    def summary(audits: dict, partial: bool = True) -> dict:
        # Until the last phase it is summary.partial.json: summary.json is a finished run's.
        return write_summary(out, summarize(out, cfg.trait, audits, cfg.replicates,
                                            cfg.generations), partial=partial)

    with overall(f"chain {out.name}", planned_stages(cfg, where, arms), plan.workers):
        audits = run_phases(cfg, where, arms, plan, on_phase=summary)
    result = summary(audits, partial=False)
    mark_complete(out)
    return result
