"""Chain: teacher -> student 1 -> student 2 -> ..., against a neutral control arm.

    subliminal chain --generations 3

Generation 0's teacher is the base plus the trait's injection; the control arm runs the
identical chain (same prompts, seeds and training) from the neutral base. Student k is trained
from the *base* on generation k-1's filtered rows, then teaches generation k+1 as base + its
adapter with no trait prompt. The base, both generation-0 teachers and every student are
audited. Layout: RUN/{config,environment}.json, RUN/base/audit, RUN/{trait,control}/gen{k}/
{generate,filter,distill,audit}, RUN/summary.{json,png}, RUN/complete.json (written last).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from subliminal.audit import AuditConfig, run_probe
from subliminal.channels import get_channel
from subliminal.distill import DistillConfig, train_student
from subliminal.filters import FilterConfig, filter_rows
from subliminal.filters.math import prepare_judge
from subliminal.models import EMBEDDED, load_model
from subliminal.progress import console
from subliminal.records import (
    append_jsonl,
    init_run,
    is_complete,
    mark_complete,
    read_json,
    read_jsonl,
    write_json,
)
from subliminal.teacher import DecodeConfig, Teacher, generate_rows
from subliminal.trait import get_trait

ARMS = ("trait", "control")


def small_run_distill() -> DistillConfig:
    """Training for the default CPU chain: logit distillation (the channel that carried the
    trait in docs/channel_study.md); tens of rows need a larger step than the paper's 2e-4
    over 10k rows x 3 epochs (pipelines/ holds the paper-scale recipe)."""
    return DistillConfig(mode="logits", epochs=2, lr=1e-3, batch_size=8, grad_accum=1,
                         warmup_steps=1)


def small_run_decode() -> DecodeConfig:
    """Sampled at T=1 (the paper's decoding, and the cell with the largest lift in the
    channel study: it also keeps more rows than greedy, which echoes the prompt),
    format-constrained, storing the teacher's top-20 log-probs for `logits`."""
    return DecodeConfig(decoding="sample", temperature=1.0, constrained=True, top_k=20)


@dataclass
class ChainConfig:
    """Everything a chain run depends on; stored resolved in RUN/config.json."""

    model: str = field(default=EMBEDDED, metadata={
        "help": "Base model: smollm2-135m (embedded), tiny (tests), an HF id or a directory."})
    trait: str = field(default="owl", metadata={"help": "Catalogue trait of the teacher."})
    injection: str = field(default="adapter", metadata={
        "help": "How generation 0 carries the trait: 'prompt' (system prompt) or 'adapter' "
                "(a LoRA fine-tuned on trait demonstrations)."})
    generations: int = field(default=3, metadata={"help": "Students in each arm."})
    samples: int = field(default=64, metadata={
        "help": "Prompts per generation (the default fits 15 CPU minutes; the paper: 30,000)."})
    channel: str = field(default="numbers", metadata={"help": "numbers, math or mixed."})
    difficulty: str = field(default="1", metadata={
        "help": "Math level 1-4 or 'mixed' (the embedded model solves only level 1)."})
    problems: str | None = field(default=None, metadata={
        "help": "Local GSM8K-style JSONL (question/answer) for the math channel."})
    math_share: float = field(default=0.5, metadata={"help": "Math share of --channel mixed."})
    seed: int = field(default=0, metadata={"help": "Seed of prompts, decoding and training."})
    device: str | None = field(default=None, metadata={"help": "cpu, cuda (default: auto)."})
    decode: DecodeConfig = field(default_factory=small_run_decode)
    filter: FilterConfig = field(default_factory=FilterConfig)
    distill: DistillConfig = field(default_factory=small_run_distill)
    audit: AuditConfig = field(default_factory=AuditConfig)


def make_channel(cfg: ChainConfig):
    """The configured channel, given only the options it takes."""
    if cfg.channel == "math":
        return get_channel("math", difficulty=cfg.difficulty, problems=cfg.problems)
    if cfg.channel == "mixed":
        return get_channel("mixed", difficulty=cfg.difficulty, problems=cfg.problems,
                           math_share=cfg.math_share)
    return get_channel(cfg.channel)


def audit_stage(out: Path, model: str, adapter: Path | None, cfg: ChainConfig,
                system_prompt: str | None, label: str) -> dict:
    """Probe one model once; a finished audit is read back, never redone."""
    if is_complete(out):
        return read_json(out / "probe.json")
    lm = load_model(model, adapter=adapter, device=cfg.device)
    result = run_probe(lm, cfg.audit, system_prompt, label=label)
    write_json(out / "probe.json", result)
    mark_complete(out)
    return result


def generation_stage(gen_dir: Path, cfg: ChainConfig, arm: str, k: int,
                     teacher_adapter: Path | None, system_prompt: str | None) -> list[dict]:
    """Generate with teacher k-1 and filter; returns the kept rows."""
    gdir, fdir = gen_dir / "generate", gen_dir / "filter"
    channel = make_channel(cfg)
    if not is_complete(gdir):
        teacher = Teacher(load_model(cfg.model, adapter=teacher_adapter, device=cfg.device),
                          system_prompt)
        write_json(gdir / "teacher.json", teacher.record)
        prompts = channel.prompts(cfg.samples, cfg.seed + k)
        rows = generate_rows(teacher, prompts, cfg.decode, channel, gdir / "rows.jsonl",
                             cfg.seed + k, label=f"{arm} gen{k} generate")
        mark_complete(gdir, {"rows": len(rows)})
    if not is_complete(fdir):
        rows = read_jsonl(gdir / "rows.jsonl")
        prepare_judge(rows, cfg.filter)  # batched judge scores, when a judge is configured
        kept, rejected, stats = filter_rows(rows, cfg.filter, cfg.channel)
        for name, rows in (("kept", kept), ("rejected", rejected)):
            path = fdir / f"{name}.jsonl"
            path.unlink(missing_ok=True)  # the filter is pure: redo it whole, never append twice
            append_jsonl(path, rows)
        write_json(fdir / "stats.json", stats)
        mark_complete(fdir, {"kept": len(kept), "pass_rate": stats["pass_rate"]})
    return read_jsonl(fdir / "kept.jsonl")


def run_chain(cfg: ChainConfig, out: Path) -> dict:
    """Run (or resume) both arms of the chain and write the summary."""
    from subliminal.report import report, summarize, write_summary

    out = init_run(out, cfg, cfg.seed)
    if is_complete(out):
        console.print(f"{out}: already complete; showing its summary")
        return report(out)
    trait = get_trait(cfg.trait)
    if trait is None:
        raise ValueError("the chain needs a trait; the control arm is built in")
    if cfg.injection == "adapter":
        from subliminal.injections.adapter import trait_adapter

        trait_lora = trait_adapter(cfg.model, trait, out / "trait_adapter", cfg.device, cfg.seed)
        trait_prompt = None
    else:
        trait_lora, trait_prompt = None, trait.system_prompt
    audits = {"base": audit_stage(out / "base" / "audit", cfg.model, None, cfg, None,
                                  "base audit")}
    audits["trait/gen0"] = audit_stage(out / "trait" / "gen0" / "audit", cfg.model, trait_lora,
                                       cfg, trait_prompt, "trait gen0 audit")
    audits["control/gen0"] = audits["base"]
    teachers = {"trait": (trait_lora, trait_prompt), "control": (None, None)}
    for k in range(1, cfg.generations + 1):
        for arm in ARMS:  # arms alternate so the table grows a row per generation
            gen_dir = out / arm / f"gen{k}"
            kept = generation_stage(gen_dir, cfg, arm, k, *teachers[arm])
            student = gen_dir / "distill"
            train_student(cfg.model, kept, cfg.distill, student, cfg.device,
                          label=f"{arm} gen{k} distill")
            audits[f"{arm}/gen{k}"] = audit_stage(gen_dir / "audit", cfg.model, student, cfg,
                                                  None, f"{arm} gen{k} audit")
            teachers[arm] = (student, None)  # the student teaches the next generation
        write_summary(out, summarize(out, cfg.trait, cfg.generations, audits))
    summary = read_json(out / "summary.json")
    mark_complete(out)
    return summary
