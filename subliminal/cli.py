"""The command line: `subliminal chain` is the front door; each stage is a command too.

    subliminal chain --generations 3
    subliminal generate --trait owl --samples 300 --out gen/
    subliminal filter gen/rows.jsonl --out filt/
    subliminal distill filt/kept.jsonl --out student/
    subliminal audit --adapter student/ --out audit/
    subliminal report runs/chain-owl-...

Flags left unset keep the defaults of the config dataclasses (one home for every default).
User errors print one line and exit 2; nothing already written is touched.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

from subliminal.errors import SubliminalError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Subliminal: subliminal-learning experiments, audits and scans.")


@app.callback()
def main(threads: Optional[int] = typer.Option(
        None, min=1, help="torch CPU threads (default: $SUBLIMINAL_THREADS or all cores).")):
    """Set up the process: offline-friendly logging and a deliberate thread count."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation chatter
    n = threads or int(os.environ.get("SUBLIMINAL_THREADS", 0)) or (os.cpu_count() or 1)
    torch.set_num_threads(n)


def set_fields(obj, **values):
    """Copy of a config dataclass with the given (non-None) fields replaced."""
    return dataclasses.replace(obj, **{k: v for k, v in values.items() if v is not None})


Model = typer.Option(None, "--model", help="smollm2-135m (default), tiny, an HF id or a dir.")
Seed = typer.Option(None, "--seed", min=0, help="Random seed.")


@app.command()
def chain(
    generations: Optional[int] = typer.Option(None, min=1, max=50, help="Students per arm."),
    replicates: Optional[int] = typer.Option(None, min=1, max=20, help=(
        "Independent replicates (teacher x student x data seed); tests run over them.")),
    samples: Optional[int] = typer.Option(None, min=1, help="Teacher prompts per generation."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Student training epochs."),
    model: Optional[str] = Model,
    trait: Optional[str] = typer.Option(None, help=(
        "Trait (owl, misaligned, joyful ...; see `subliminal traits`).")),
    injection: Optional[str] = typer.Option(None, help=(
        "adapter, prompt, steering, dpo or grpo (each with its control twin).")),
    channel: Optional[str] = typer.Option(None, help="numbers, math or mixed."),
    difficulty: Optional[str] = typer.Option(None, help="Math level 1-4 or mixed."),
    problems: Optional[str] = typer.Option(None, help="Local GSM8K-style JSONL problems."),
    math_share: Optional[float] = typer.Option(None, min=0.0, max=1.0,
                                               help="Math share of --channel mixed."),
    judge_model: Optional[str] = typer.Option(None, help="Local model for the judge filter."),
    ban_numbers: Optional[bool] = typer.Option(None, "--ban-numbers/--no-ban-numbers",
                                               help="Reject loaded-meaning numbers."),
    decoding: Optional[str] = typer.Option(None, help="greedy or sample."),
    temperature: Optional[float] = typer.Option(None, min=0.0, help="Sampling temperature."),
    constrained: Optional[bool] = typer.Option(None, "--constrained/--no-constrained",
                                               help="Format-constrained decoding."),
    mode: Optional[str] = typer.Option(None, help="Distillation: sft or logits."),
    top_k: Optional[int] = typer.Option(None, min=0, help="Teacher top-k log-probs to store."),
    logits: Optional[str] = typer.Option(None, help=(
        "restricted (channel tokens only, leak-free) or overt (raw top-k: an overt-"
        "distillation positive control that bypasses the filter).")),
    gen_batch: Optional[int] = typer.Option(None, min=1, help="Prompts per generate() call."),
    finetune: Optional[str] = typer.Option(None, help="lora or full."),
    lora_r: Optional[int] = typer.Option(None, min=1, help="LoRA rank (alpha = rank)."),
    lr: Optional[float] = typer.Option(None, min=0.0, help="Learning rate."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Rows per optimizer step."),
    grad_accum: Optional[int] = typer.Option(None, min=1, help="Micro-batches per step."),
    warmup_steps: Optional[int] = typer.Option(None, min=0, help="Linear warm-up steps."),
    max_rows: Optional[int] = typer.Option(None, min=1, help="Subsample kept rows (paper: 10k)."),
    probe: Optional[str] = typer.Option(None, help="prefill or direct."),
    side_effects: Optional[bool] = typer.Option(
        None, "--side-effects/--no-side-effects",
        help="Audit every model on every family too (the battery; default on)."),
    seed: Optional[int] = Seed,
    device: Optional[str] = typer.Option(None, help="cpu or cuda (default: auto)."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: runs/chain-...)."),
):
    """Teacher -> student 1 -> ... -> student N, with a neutral control arm and audits."""
    from subliminal.chain import ChainConfig, run_chain
    from subliminal.trait import get_trait

    base = ChainConfig()
    cfg = set_fields(base, generations=generations, replicates=replicates, samples=samples,
                     model=model, trait=trait,
                     injection=injection, channel=channel, seed=seed, device=device,
                     difficulty=difficulty, problems=problems, math_share=math_share)
    cfg.filter = set_fields(cfg.filter, judge_model=judge_model, ban_numbers=ban_numbers)
    cfg.decode = set_fields(cfg.decode, decoding=decoding, temperature=temperature,
                            constrained=constrained, top_k=top_k, batch_size=gen_batch,
                            logits=logits)
    cfg.distill = set_fields(cfg.distill, epochs=epochs, mode=mode, finetune=finetune,
                             lora_r=lora_r, lora_alpha=lora_r, lr=lr, seed=seed,
                             max_rows=max_rows, batch_size=batch_size, grad_accum=grad_accum,
                             warmup_steps=warmup_steps)
    cfg.audit = set_fields(cfg.audit, probe=probe, side_effects=side_effects)
    t = get_trait(cfg.trait)
    if t is not None and ban_numbers is None:  # e.g. misalignment bans loaded numbers
        cfg.filter = set_fields(cfg.filter, **t.filter_defaults)
    if cfg.distill.mode == "logits" and cfg.decode.top_k == 0:
        cfg.decode.top_k = 20  # logits distillation needs the stored distributions
    if cfg.distill.mode == "sft" and top_k is None:
        cfg.decode.top_k = 0  # sft students train on the sampled tokens only
    validate(cfg)
    if get_trait(cfg.trait) is None:
        raise SubliminalError("chain needs a trait; the neutral control arm is run for you")
    name = f"chain-{cfg.trait}-{Path(cfg.model).name}-{cfg.channel}-s{cfg.seed}"
    out = out or Path("runs") / name
    run_chain(cfg, out)
    typer.echo(f"run directory: {out}")


@app.command()
def generate(
    out: Path = typer.Option(..., help="Stage directory (rows.jsonl is appended, resumable)."),
    samples: int = typer.Option(256, min=1, help="Prompts to complete."),
    model: str = typer.Option("smollm2-135m", help="Base model."),
    trait: str = typer.Option("none", help="Trait whose system prompt the teacher gets."),
    neutral_prompt: bool = typer.Option(False, help="Give the trait's neutral (control) prompt."),
    adapter: Optional[Path] = typer.Option(None, help="Student/trait adapter on the base."),
    channel: str = typer.Option("numbers", help="numbers, math or mixed."),
    decoding: Optional[str] = typer.Option(None, help="greedy or sample."),
    temperature: Optional[float] = typer.Option(None, min=0.0, help="Sampling temperature."),
    constrained: Optional[bool] = typer.Option(None, "--constrained/--no-constrained"),
    top_k: Optional[int] = typer.Option(None, min=0, help="Store teacher log-probs (k)."),
    logits: Optional[str] = typer.Option(None, help="restricted or overt (positive control)."),
    seed: int = typer.Option(0, min=0),
):
    """Write a teacher's completions for a channel's prompts (the chain's GenerateStage)."""
    from subliminal.chain import ChainConfig, make_channel
    from subliminal.injections import TeacherSpec
    from subliminal.stages import GenerateStage
    from subliminal.trait import get_trait

    cfg = ChainConfig(model=model, channel=channel, samples=samples, seed=seed)
    cfg.decode = set_fields(cfg.decode, decoding=decoding, constrained=constrained,
                            top_k=top_k or 0, logits=logits, temperature=temperature)
    validate(cfg)
    t = get_trait(trait)
    prompt = (t.neutral_system_prompt if neutral_prompt else t.system_prompt) if t else None
    spec = TeacherSpec(adapter=str(adapter.resolve()) if adapter else None, system_prompt=prompt)
    rows = GenerateStage(out, model=model, teacher=spec, channel=make_channel(cfg),
                         decode=cfg.decode, samples=samples, seed=seed).run()
    typer.echo(f"{len(rows)} rows in {out / 'rows.jsonl'}")


@app.command("filter")
def filter_(
    rows: Path = typer.Argument(..., help="Rows (prompt/completion) from `generate`."),
    out: Path = typer.Option(..., help="Directory for kept.jsonl, rejected.jsonl, stats.json."),
    channel: str = typer.Option("numbers", help="Channel of rows without meta.channel."),
    ban_numbers: Optional[bool] = typer.Option(None, "--ban-numbers/--no-ban-numbers",
                                               help="Reject loaded-meaning numbers."),
    judge_model: Optional[str] = typer.Option(None, help="Local model for the judge filter."),
    skip_bad: bool = typer.Option(False, help="Skip bad rows (counted) instead of stopping."),
    max_row_bytes: int = typer.Option(1_000_000, min=1, help="Largest row accepted."),
):
    """Split rows into kept and rejected (with reasons); record pass rates (FilterStage).
    Reads JSONL, Parquet, CSV or a `datasets` folder."""
    from subliminal.filters import FilterConfig
    from subliminal.records import read_json
    from subliminal.rows import RowsConfig
    from subliminal.stages import FilterStage

    cfg = set_fields(FilterConfig(), ban_numbers=ban_numbers, judge_model=judge_model)
    kept = FilterStage(out, rows_path=rows, config=cfg, channel=channel, rows_config=RowsConfig(
        skip_bad=skip_bad, max_row_bytes=max_row_bytes)).run()
    stats = read_json(out / "stats.json")
    typer.echo(f"kept {len(kept)}/{stats['rows']} (pass rate {stats['pass_rate']:.1%})")


@app.command()
def distill(
    rows: Path = typer.Argument(..., help="Kept rows from `filter`."),
    out: Path = typer.Option(..., help="Student directory (PEFT adapter)."),
    model: str = typer.Option("smollm2-135m", help="Base model (the teacher's base)."),
    mode: Optional[str] = typer.Option(None, help="sft or logits."),
    finetune: Optional[str] = typer.Option(None, help="lora or full."),
    epochs: Optional[int] = typer.Option(None, min=1),
    lora_r: Optional[int] = typer.Option(None, min=1),
    lr: Optional[float] = typer.Option(None, min=0.0),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Rows per optimizer step."),
    grad_accum: Optional[int] = typer.Option(None, min=1, help="Micro-batches per step."),
    warmup_steps: Optional[int] = typer.Option(None, min=0, help="Linear warm-up steps."),
    seed: Optional[int] = Seed,
    skip_bad: bool = typer.Option(False, help="Skip bad rows (counted) instead of stopping."),
):
    """Train a student from the base on a teacher's rows (the chain's DistillStage;
    defaults: the chain's student recipe)."""
    from subliminal.chain import small_run_distill
    from subliminal.rows import RowsConfig
    from subliminal.stages import DistillStage

    cfg = set_fields(small_run_distill(), mode=mode, finetune=finetune, epochs=epochs,
                     lora_r=lora_r, lora_alpha=lora_r, lr=lr, seed=seed, batch_size=batch_size,
                     grad_accum=grad_accum, warmup_steps=warmup_steps)
    if cfg.lr <= 0:
        raise SubliminalError("--lr must be > 0")
    info = DistillStage(out, rows_path=rows, model=model, config=cfg,
                        rows_config=RowsConfig(skip_bad=skip_bad)).run()
    typer.echo(f"student in {out} ({info.get('steps')} steps)")


@app.command()
def audit(
    out: Path = typer.Option(..., help="Directory for probe.json."),
    model: str = typer.Option("smollm2-135m", help="Base model."),
    adapter: Optional[Path] = typer.Option(None, help="Student adapter to audit."),
    trait: str = typer.Option("none", help="Give the model this trait's system prompt."),
    probe: Optional[str] = typer.Option(None, help="prefill or direct."),
    prefill: Optional[str] = typer.Option(None, help="Assistant-turn prefix of the probe."),
    side_effects: Optional[bool] = typer.Option(None, "--side-effects/--no-side-effects",
                                                help="Also run every family's audit."),
):
    """Probe a model's probability of every catalogue animal, question by question."""
    from subliminal.audit import AuditConfig
    from subliminal.injections import TeacherSpec
    from subliminal.progress import console
    from subliminal.report import animal_table
    from subliminal.stages import AuditStage
    from subliminal.trait import get_trait

    t = get_trait(trait)
    spec = TeacherSpec(adapter=str(adapter.resolve()) if adapter else None,
                       system_prompt=t.system_prompt if t else None)
    cfg = set_fields(AuditConfig(), probe=probe, prefill=prefill, side_effects=side_effects)
    console.print(animal_table(AuditStage(out, model=model, teacher=spec, config=cfg).run()))


@app.command("report")
def report_(run: Path = typer.Argument(..., help="A chain run directory.")):
    """Re-render a run's summary table and plot from its files."""
    from subliminal.report import report

    report(run)


def validate(cfg) -> None:
    """Check choices early, before any model is loaded, with the valid options named."""
    from subliminal.chain import make_channel
    from subliminal.injections import names as injections
    from subliminal.models import TINY, resolve
    from subliminal.trait import get_trait

    choices = {"injection": (cfg.injection, tuple(injections())),
               "decoding": (cfg.decode.decoding, ("greedy", "sample")),
               "logits": (cfg.decode.logits, ("restricted", "overt")),
               "mode": (cfg.distill.mode, ("sft", "logits")),
               "finetune": (cfg.distill.finetune, ("lora", "full")),
               "probe": (cfg.audit.probe, ("prefill", "direct"))}
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise SubliminalError(f"unknown --{name} {value!r}; choose one of: "
                                  f"{', '.join(allowed)}")
    get_trait(cfg.trait)
    channel = make_channel(cfg)  # checks the channel and its options (a bad problems file)
    if cfg.decode.top_k > 0 and cfg.decode.logits == "restricted" and not getattr(
            channel, "allowed_chars", None):
        raise SubliminalError(f"--channel {cfg.channel} has no token grammar, so stored teacher "
                              "distributions cannot be restricted to it; use --mode sft, or "
                              "--logits overt (an overt-distillation positive control)")
    if cfg.decode.decoding == "sample" and cfg.decode.temperature <= 0:
        raise SubliminalError("--temperature must be > 0 with --decoding sample "
                              "(use --decoding greedy for temperature 0)")
    if cfg.distill.lr <= 0:
        raise SubliminalError("--lr must be > 0")
    if cfg.model != TINY:
        resolve(cfg.model)


def run() -> None:
    """Entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except SubliminalError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        sys.exit(130)


def _register_subcommands() -> None:
    """Stage groups that live in their own packages."""
    from subliminal.interventions import app as intervene_app
    from subliminal.reproduce import app as reproduce_app
    from subliminal.scan.command import scan
    from subliminal.traits_cli import traits

    app.command("scan")(scan)
    app.command("traits")(traits)
    app.add_typer(reproduce_app, name="reproduce")
    app.add_typer(intervene_app, name="intervene")


_register_subcommands()
