"""Chain: teacher -> student 1 -> student 2 -> ..., against a control arm that trains.

    subliminal chain --generations 3

Each replicate (an independent teacher seed x student seed x data seed) runs two arms. The
trait arm's generation-0 teacher is the base plus the trait's injection; the control arm's is
the base plus the *same injection with the trait removed* (a LoRA trained by the same recipe on
trait-free demonstrations, or a neutral prompt of the same frame), so its students learn as
much as the trait arm's. Both arms share the replicate's prompts, seeds and training. Student k
is trained from the *base* on generation k-1's filtered rows, then teaches generation k+1 as
base + its adapter. Every model is audited; claims are tested over replicates (report.py).
Layout: RUN/{config,environment}.json, RUN/base/audit, RUN/rep{r}/{trait,control}/teacher,
RUN/rep{r}/{arm}/gen{k}/{generate,filter,distill,audit}, RUN/summary.{json,png},
RUN/complete.json (written last).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from subliminal.audit import AuditConfig
from subliminal.channels import get_channel
from subliminal.distill import DistillConfig
from subliminal.errors import SubliminalError
from subliminal.fanout import FanOut, run_units
from subliminal.filters import FilterConfig
from subliminal.injections import TeacherSpec
from subliminal.injections import names as injection_names
from subliminal.models import EMBEDDED, TINY
from subliminal.models import resolve as resolve_model_path
from subliminal.progress import console, overall
from subliminal.records import init_run, is_complete, mark_complete, to_jsonable
from subliminal.stages import AuditStage, DistillStage, FilterStage, GenerateStage
from subliminal.teacher import DecodeConfig
from subliminal.trait import get_trait

ARMS = ("trait", "control")


def small_run_distill() -> DistillConfig:
    """Training for the default CPU chain: logit distillation through the restricted
    (leak-free) channel; tens of rows need a larger step than the paper's 2e-4 over 10k rows
    x 3 epochs (pipelines/ holds the paper-scale recipe)."""
    return DistillConfig(mode="logits", epochs=2, lr=1e-3, batch_size=8, grad_accum=1,
                         warmup_steps=1)


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
        "choices": ("numbers", "math", "mixed"), "help": "The channel the teacher writes in."})
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


def make_channel(cfg: ChainConfig):
    """The configured channel, given only the options it takes."""
    if cfg.channel == "math":
        return get_channel("math", difficulty=cfg.difficulty, problems=cfg.problems)
    if cfg.channel == "mixed":
        return get_channel("mixed", difficulty=cfg.difficulty, problems=cfg.problems,
                           math_share=cfg.math_share)
    return get_channel(cfg.channel)


def stage_dirs(out: Path, r: int, arm: str, k: int) -> Path:
    return Path(out) / f"rep{r}" / arm / f"gen{k}"


def replicate_seed(cfg: ChainConfig, r: int) -> int:
    """Replicate r's seed: its teacher adapter, prompts and student all derive from it, so
    replicates are independent (teacher x student x data) and both arms of one share them."""
    return cfg.seed + r


def generation(cfg: ChainConfig, out: Path, r: int, arm: str, k: int,
               teacher: TeacherSpec) -> tuple[Path, dict]:
    """Generation k of one arm: the teacher writes, the filter keeps, a student trains from
    the base, and the student is audited. Returns the student folder and its audit."""
    gdir, seed = stage_dirs(out, r, arm, k), replicate_seed(cfg, r)
    tag = f"rep{r} {arm} gen{k}"
    GenerateStage(gdir / "generate", model=cfg.model, teacher=teacher,
                  channel=make_channel(cfg), decode=cfg.decode, samples=cfg.samples,
                  seed=seed * 1000 + k, device=cfg.device, run_dir=out,
                  label=f"{tag} generate").run()
    FilterStage(gdir / "filter", rows_path=gdir / "generate" / "rows.jsonl", config=cfg.filter,
                channel=cfg.channel).run()
    DistillStage(gdir / "distill", rows_path=gdir / "filter" / "kept.jsonl", model=cfg.model,
                 config=replace(cfg.distill, seed=seed), device=cfg.device,
                 label=f"{tag} distill").run()
    student = TeacherSpec(adapter=str((gdir / "distill").relative_to(out)))
    result = audit(cfg, out, gdir / "audit", student, f"{tag} audit", k)  # as it teaches
    return gdir / "distill", result


def audit_config(cfg: ChainConfig, k: int) -> AuditConfig:
    """Generation k's audit: the side-effect battery reads the teachers and the last
    generation (where it informs a claim), intermediate students only on request."""
    every = cfg.audit.side_effects_every or k in (0, cfg.generations)
    return cfg.audit if every else replace(cfg.audit, side_effects=False)


def audit(cfg: ChainConfig, out: Path, folder: Path, spec: TeacherSpec | None,
          label: str, k: int = 0) -> dict:
    """Audit generation k's model with the chain's trait's own audit (and the battery)."""
    return AuditStage(folder, model=cfg.model, teacher=spec, config=audit_config(cfg, k),
                      device=cfg.device, run_dir=out, label=label, trait=cfg.trait).run()


def run_arm(cfg: ChainConfig, out: Path, r: int, arm: str, trait, neutral: bool,
            audits: dict) -> None:
    """One arm of replicate r: its generation-0 teacher (the trait's injection, or with
    `neutral` the same injection with the trait removed), then the chain of students, each
    teaching the next. Audits land in `audits['rep{r}/{arm}/gen{k}']`."""
    from subliminal.injections import InjectionContext, build_teacher

    ctx = InjectionContext(model=cfg.model, trait=trait, out=out / f"rep{r}" / arm / "teacher",
                           seed=replicate_seed(cfg, r), neutral=neutral, device=cfg.device)
    teacher = build_teacher(cfg.injection, ctx)
    for part in ("adapter", "steering"):  # relative to the run, so the folder can move
        path = getattr(teacher, part)
        if path and Path(path).is_absolute() == Path(out).is_absolute():
            rel = str(Path(path).relative_to(out))
            teacher = replace(teacher, **{part: rel}, record={**teacher.record, part: rel})
    audits[f"rep{r}/{arm}/gen0"] = audit(cfg, out, stage_dirs(out, r, arm, 0) / "audit",
                                         teacher, f"rep{r} {arm} gen0 audit")
    for k in range(1, cfg.generations + 1):
        student, audits[f"rep{r}/{arm}/gen{k}"] = generation(cfg, out, r, arm, k, teacher)
        rel = str(student.relative_to(out))  # base + its adapter, no prompt, teaches next
        teacher = TeacherSpec(adapter=rel, record={"injection": "student", "adapter": rel})


def arm_unit(cfg: ChainConfig, out: Path, r: int, arm: str) -> dict:
    """One unit of fan-out: arm `arm` of replicate r, all generations; returns its audits."""
    audits: dict = {}
    run_arm(cfg, out, r, arm, get_trait(cfg.trait), arm == "control", audits)
    return audits


def base_unit(cfg: ChainConfig, out: Path) -> dict:
    """The untouched base model's audit (the reference the table prints first)."""
    return {"base": audit(cfg, out, out / "base" / "audit", None, "base audit")}


def planned_stages(cfg: ChainConfig, out: Path) -> list[tuple[Path, str]]:
    """Every stage folder a chain will finish, with its kind (for the overall progress)."""
    def audit_kind(k: int) -> str:
        return "battery" if audit_config(cfg, k).side_effects else "audit"

    stages = [(out / "base" / "audit", audit_kind(0))]
    for r in range(cfg.replicates):
        for arm in ARMS:
            if cfg.injection != "prompt":  # every other injection trains or writes a teacher
                stages.append((out / f"rep{r}" / arm / "teacher", "teacher"))
            stages.append((stage_dirs(out, r, arm, 0) / "audit", audit_kind(0)))
            for k in range(1, cfg.generations + 1):
                stages += [(stage_dirs(out, r, arm, k) / s, s) for s in
                           ("generate", "filter", "distill")]
                stages.append((stage_dirs(out, r, arm, k) / "audit", audit_kind(k)))
    return stages


def run_chain(cfg: ChainConfig, out: Path, preset: str | None = None,
              plan: FanOut = FanOut()) -> dict:
    """Run (or resume) every replicate of both arms and write the summary. A `preset` name is
    recorded in RUN/config.json beside the resolved config (provenance, not compared). The
    arms are units of fan-out (`plan`: in this process, or Ray tasks); the summary is
    rewritten as each replicate's two arms finish, and is the same however they ran."""
    from subliminal.report import report, summarize, write_summary

    out = init_run(out, cfg if preset is None else {"preset": preset, **to_jsonable(cfg)},
                   cfg.seed)
    if is_complete(out):
        console.print(f"{out}: already complete; showing its summary")
        return report(out)
    if get_trait(cfg.trait) is None:
        raise SubliminalError("the chain needs a trait; the control arm is built in")
    resolve_model(cfg.model)  # converted once here, before any task loads it
    units = [(base_unit, (cfg, out.resolve()))] + [
        (arm_unit, (cfg, out.resolve(), r, arm)) for r in range(cfg.replicates) for arm in ARMS]
    audits: dict = {}
    with overall(f"chain {out.name}", planned_stages(cfg, out), plan.workers):
        for i, part in run_units(units, plan):
            audits.update(part)
            r = units[i][1][2] if len(units[i][1]) > 2 else None
            last = f"gen{cfg.generations}"
            if r is not None and "base" in audits and all(
                    f"rep{r}/{arm}/{last}" in audits for arm in ARMS):  # a replicate is whole
                write_summary(out, summarize(out, cfg.trait, audits, cfg.replicates,
                                             cfg.generations))
    summary = write_summary(out, summarize(out, cfg.trait, audits, cfg.replicates,
                                           cfg.generations))
    mark_complete(out)
    return summary
