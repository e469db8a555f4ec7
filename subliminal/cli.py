"""The command line: `subliminal chain` is the front door; each stage is a command too.

    subliminal chain --generations 3
    subliminal generate --trait owl --samples 300 --out gen/
    subliminal filter gen/rows.jsonl --out filt/
    subliminal distill filt/kept.jsonl --out student/
    subliminal audit --adapter student/ --out audit/
    subliminal report runs/chain-owl-...

    subliminal presets
    subliminal chain --preset paper-7b --trait owl

Every config flag is generated from a field of the config dataclasses (`ChainConfig` and its
`decode`, `filter`, `distill`, `audit` sections; subliminal/options.py): its name, type, help,
range and choices live on the field, once. Flags left unset keep the field's default, or the
value of the `--preset` given (subliminal/presets.py); flags override presets. Every value is
checked before any work. User errors print one line and exit 2; nothing already written is
touched.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer

from subliminal import costs
from subliminal.chain import ChainConfig, make_channel, run_chain
from subliminal.errors import SubliminalError, fail
from subliminal.evidence import export, recompute
from subliminal.fanout import FanOut, auto_workers
from subliminal.injections import TeacherSpec, check_teacher
from subliminal.injections.prompt import wording
from subliminal.interventions_cli import app as intervene_app
from subliminal.models import TINY, resolve
from subliminal.options import Flag, Given, check_config, config_flags, field_help
from subliminal.presets import PRESETS, flatten
from subliminal.progress import console
from subliminal.records import read_json, run_relative, write_failure
from subliminal.report import animal_table, report
from subliminal.reproduce import app as reproduce_app
from subliminal.rows import RowsConfig
from subliminal.scan.command import scan
from subliminal.stages import AuditStage, DistillStage, FilterStage, GenerateStage
from subliminal.study import DEFAULT_TRAITS, StudyConfig, cell_config, run_study, study_base
from subliminal.trait import get_trait
from subliminal.traits_cli import traits as traits_command

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
    asked = threads or int(os.environ.get("SUBLIMINAL_THREADS", 0)) or None
    THREADS_ASKED[:] = [asked] if asked else []
    torch.set_num_threads(asked or (os.cpu_count() or 1))


THREADS_ASKED: list[int] = []  # --threads (or $SUBLIMINAL_THREADS), when given


def fan_out(workers: int | None, ray_address: str | None, device: str | None) -> FanOut:
    """How a command's units run: in this process, or as Ray tasks of one thread each (or
    --threads each) with a GPU each on CUDA. No --workers: $SUBLIMINAL_WORKERS, else one per
    core where Ray is installed (subliminal.fanout.auto_workers)."""
    workers = workers or int(os.environ.get("SUBLIMINAL_WORKERS", 0)) or auto_workers(device)
    threads = THREADS_ASKED[0] if THREADS_ASKED else (
        1 if workers > 1 or ray_address else (os.cpu_count() or 1))
    gpus = 1.0 if (device or "").startswith("cuda") else 0.0
    return FanOut(workers=workers, address=ray_address, threads=threads, num_gpus=gpus)


Workers = typer.Option(None, min=1, help=(
    "Units (an arm's teacher, rows, students) run in parallel as Ray tasks, each as soon as "
    "its inputs exist, on a local Ray started for the command, one thread each unless "
    "--threads; 1: in this process. Same files either way. "
    "Default: $SUBLIMINAL_WORKERS, else one per CPU core when Ray is installed (memory "
    "allowing; 1 on a GPU)."))
RayAddress = typer.Option(None, help=(
    "Join a running Ray cluster ('auto', 'ray://HOST:10001') instead of starting one; the run "
    "folder must be on storage every node sees and each node needs this package."))


def set_fields(obj, **values):
    """Copy of a config dataclass with the given (non-None) fields replaced."""
    return dataclasses.replace(obj, **{k: v for k, v in values.items() if v is not None})


# The config fields each command exposes (dotted paths in ChainConfig): name, type, help, range
# and choices of every flag come from the field (subliminal/options.py).
LORA_R = Flag("distill.lora_r", also=("distill.lora_alpha",))
CHANNEL_FLAGS = ("channel", "difficulty", "problems", "math_share")
DECODE_FLAGS = ("decode.decoding", "decode.temperature", "decode.constrained", "decode.top_k",
                "decode.logits", "decode.batch_size", "decode.max_new_tokens", "decode.backend")
TRAIN_FLAGS = ("distill.mode", "distill.finetune", "distill.epochs", LORA_R, "distill.lr",
               "distill.batch_size", "distill.grad_accum", "distill.warmup_steps",
               "distill.max_rows", "distill.max_length", "distill.lora_layers")
CHAIN_FLAGS = ("generations", "replicates", "samples", "model", "trait", "injection",
               *CHANNEL_FLAGS, "filter.judge_model", "filter.ban_numbers", *DECODE_FLAGS,
               *TRAIN_FLAGS, "audit.probe", "audit.side_effects", "audit.side_effects_every",
               Flag("seed", also=("distill.seed",)), "device")
GENERATE_FLAGS = ("samples", "model", *CHANNEL_FLAGS, *DECODE_FLAGS, "seed", "device")
FILTER_FLAGS = ("channel", "filter.ban_numbers", "filter.judge_model", "filter.judge_threshold",
                "filter.judge_trait", "filter.max_values", "filter.max_value",
                "filter.drop_seed_repeats", "filter.leak_check")
DISTILL_FLAGS = ("model", *TRAIN_FLAGS, "distill.seed", "device")
AUDIT_FLAGS = ("model", "audit.probe", "audit.prefill", "audit.questions", "audit.side_effects",
               "device")
SkipBad = typer.Option(False, help=field_help(RowsConfig, "skip_bad"))


def generate_base() -> ChainConfig:
    """`generate`'s starting config: the chain's, 256 prompts, and no stored teacher
    distributions unless --top-k asks for them."""
    cfg = ChainConfig(samples=256)
    cfg.decode.top_k = 0
    return cfg


def chain_config(given: Given, base: ChainConfig | None = None) -> ChainConfig:
    """The chain's config: defaults (or `base`), the preset, the flags, then what follows
    from them (the trait's filter settings; stored teacher distributions exactly when
    students train on them) unless the preset or a flag set it."""
    cfg = given.apply(base or ChainConfig())
    t = get_trait(cfg.trait)
    if t is not None and "filter.ban_numbers" not in given:  # misalignment bans loaded numbers
        cfg.filter = set_fields(cfg.filter, **t.filter_defaults)
    if cfg.distill.mode == "logits" and cfg.decode.top_k == 0:
        cfg.decode.top_k = 20  # logits distillation needs the stored distributions
    if cfg.distill.mode == "sft" and "decode.top_k" not in given:
        cfg.decode.top_k = 0  # sft students train on the sampled tokens only
    return cfg


@app.command()
@config_flags(ChainConfig, CHAIN_FLAGS, ChainConfig)
def chain(out: Optional[Path] = typer.Option(None, help="Run directory (default: runs/chain-...)."),
          workers: Optional[int] = Workers, ray_address: Optional[str] = RayAddress, *,
          given: Given):
    """Teacher -> student 1 -> ... -> student N, with a neutral control arm and audits."""
    cfg = chain_config(given)
    name = f"chain-{cfg.trait}-{Path(cfg.model).name}-{cfg.channel}-s{cfg.seed}"
    out = out or Path("runs") / name
    check_out(out)
    validate(cfg)
    if get_trait(cfg.trait) is None:
        raise SubliminalError("chain needs a trait; the neutral control arm is run for you")
    run_chain(cfg, out, preset=given.preset, plan=fan_out(workers, ray_address, cfg.device))
    typer.echo(f"run directory: {out}")


STUDY_FLAGS = tuple(f for f in CHAIN_FLAGS if f not in ("generations", "trait"))


@app.command()
@config_flags(ChainConfig, STUDY_FLAGS, study_base)
def study(
    out: Optional[Path] = typer.Option(None, help="Run directory (default: runs/study-...)."),
    traits: str = typer.Option(",".join(DEFAULT_TRAITS), help=field_help(StudyConfig,
                                                                         "traits")),
    students: str = typer.Option("", help=field_help(StudyConfig, "students") + (
        " Comma-separated, e.g. allx2,allx8,allx2r1,allx2full-lr3e-4.")),
    cell: Optional[str] = typer.Option(None, help=(
        "A cell as injection-decoding-mode-student (e.g. dpo-greedy-sft-lora); flags given "
        "override it.")),
    workers: Optional[int] = Workers, ray_address: Optional[str] = RayAddress, *,
    given: Given,
):
    """Crossed study: teachers of several traits by one recipe, each trait's students against
    the other traits' students (diagonal vs off-diagonal, tested over replicates)."""
    cfg = chain_config(given, cell_config(cell, study_base()))
    names = [t.strip() for t in traits.split(",") if t.strip()]
    plan = StudyConfig(traits=names, students=[s for s in students.split(",") if s],
                       cell=cfg)
    out = out or Path("runs") / f"study-{cell or cfg.injection}-s{cfg.seed}"
    check_out(out)
    validate(cfg)
    plan.check()
    run_study(plan, out, fan_out(workers, ray_address, cfg.device))
    typer.echo(f"run directory: {out}")


@app.command()
@config_flags(ChainConfig, GENERATE_FLAGS, generate_base)
def generate(
    out: Path = typer.Option(..., help="Stage directory (rows.jsonl is appended, resumable)."),
    trait: str = typer.Option("none", help="Trait whose system prompt the teacher gets."),
    neutral_prompt: bool = typer.Option(False, help="Give the trait's neutral (control) prompt."),
    adapter: Optional[Path] = typer.Option(None, help="Student/trait adapter on the base."),
    paraphrase: int = typer.Option(0, min=0, help=(
        "Which wording of the (neutral) prompt; chain replicate seed s uses s mod n.")),
    *, given: Given,
):
    """Write a teacher's completions for a channel's prompts (the chain's GenerateStage)."""
    check_out(out)
    cfg = given.apply(generate_base())
    validate(cfg)
    t = get_trait(trait)
    prompt = wording(t.neutral_prompts if neutral_prompt else t.prompts, paraphrase)[0] \
        if t else None
    # The adapter is checked against the base before the folder is claimed (named as given),
    # and named relative to the stage folder, this teacher's run, in its records.
    check_teacher(cfg.model, TeacherSpec(adapter=str(adapter) if adapter else None))
    spec = TeacherSpec(adapter=run_relative(adapter, out) if adapter else None,
                       system_prompt=prompt)
    rows = GenerateStage(out, model=cfg.model, teacher=spec, channel=make_channel(cfg),
                         decode=cfg.decode, samples=cfg.samples, seed=cfg.seed,
                         device=cfg.device, run_dir=out).run()
    typer.echo(f"{len(rows)} rows in {out / 'rows.jsonl'}")


@app.command("filter")
@config_flags(ChainConfig, FILTER_FLAGS, ChainConfig)
def filter_(
    rows: Path = typer.Argument(..., help="Rows (prompt/completion) from `generate`."),
    out: Path = typer.Option(..., help="Directory for kept.jsonl, rejected.jsonl, stats.json."),
    skip_bad: bool = SkipBad,
    max_row_bytes: int = typer.Option(1_000_000, min=1, help=field_help(RowsConfig,
                                                                       "max_row_bytes")),
    *, given: Given,
):
    """Split rows into kept and rejected (with reasons); record pass rates (FilterStage).
    Reads JSONL, Parquet, CSV or a `datasets` folder."""
    cfg = stage_config(given, out, model=False)
    kept = FilterStage(out, rows_path=rows, config=cfg.filter, channel=cfg.channel,
                       rows_config=RowsConfig(skip_bad=skip_bad,
                                              max_row_bytes=max_row_bytes)).run()
    stats = read_json(out / "stats.json")
    typer.echo(f"kept {len(kept)}/{stats['rows']} (pass rate {stats['pass_rate']:.1%})")


@app.command()
@config_flags(ChainConfig, DISTILL_FLAGS, ChainConfig)
def distill(
    rows: Path = typer.Argument(..., help="Kept rows from `filter`."),
    out: Path = typer.Option(..., help="Student directory (PEFT adapter)."),
    skip_bad: bool = SkipBad,
    *, given: Given,
):
    """Train a student from the base on a teacher's rows (the chain's DistillStage;
    defaults: the chain's student recipe)."""
    cfg = stage_config(given, out)
    info = DistillStage(out, rows_path=rows, model=cfg.model, config=cfg.distill,
                        device=cfg.device, rows_config=RowsConfig(skip_bad=skip_bad)).run()
    typer.echo(f"student in {out} ({info.get('steps')} steps)")


@app.command()
@config_flags(ChainConfig, AUDIT_FLAGS, ChainConfig)
def audit(
    out: Path = typer.Option(..., help="Directory for probe.json."),
    adapter: Optional[Path] = typer.Option(None, help="Student adapter to audit."),
    trait: str = typer.Option("none", help="Give the model this trait's system prompt."),
    *, given: Given,
):
    """Probe a model's probability of every catalogue animal, question by question."""
    cfg = stage_config(given, out)
    t = get_trait(trait)
    spec = TeacherSpec(adapter=str(adapter) if adapter else None,  # as given, for messages
                       system_prompt=t.system_prompt if t else None)
    stage = AuditStage(out, model=cfg.model, teacher=spec, config=cfg.audit, device=cfg.device)
    console.print(animal_table(stage.run()))


@app.command("presets")
def presets_(as_json: bool = typer.Option(False, "--json", help="Print them as JSON.")):
    """List the named presets (`--preset NAME` on chain and the stage commands)."""
    import json

    if as_json:
        typer.echo(json.dumps(PRESETS, indent=2))
        return
    for name, preset in PRESETS.items():
        typer.echo(f"{name}: {preset['description']}")
        overrides = flatten(preset["overrides"]) or {"(no overrides)": None}
        for path, value in overrides.items():
            typer.echo(f"    {path}" + ("" if value is None else f" = {value!r}"))


@app.command("evidence")
def evidence_(run: Path = typer.Argument(..., help="A chain or study run directory."),
              dest: Path = typer.Argument(..., help="Where to copy its small records.")):
    """Copy a run's small records (configs, probes, row counts, losses, summary or study) so
    every figure it printed can be recomputed without the run folder."""
    check_out(dest)
    written = export(run, dest)
    name, record = recompute(dest)  # the copy must be enough to recompute the record
    if name == "study.partial.json":  # an unfinished study: its read-out so far, labelled
        record.save(dest / name)
        typer.echo(f"unfinished: {', '.join(record['unfinished'])}")
    typer.echo(f"{len(written)} records in {dest}; {name} recomputes from them")


@app.command("report")
def report_(run: Path = typer.Argument(..., help="A chain run directory.")):
    """Re-render a run's summary table and plot from its files."""
    report(run)


@app.command("costs")
def costs_(run: Path = typer.Argument(..., help="A chain or study run directory."),
           stages: bool = typer.Option(False, "--stages",
                                       help="One row per stage instead of per kind of stage."),
           peak: Optional[float] = typer.Option(
               None, min=0.001, help="This machine's fp32 one-thread matmul GFLOP/s "
               "(benchmarks/bench_chain.py measures it): adds each row's fraction of it."),
           since: str = typer.Option("", help="Only stages finished at or after this ISO time "
                                              "(e.g. 2026-12-07T06:49:27+00:00; default: "
                                              "the run's start).")):
    """What a run spent, stage by stage or by kind: wall and CPU seconds, positions, GFLOP."""
    if not run.is_dir():
        raise SubliminalError(f"{run}: not a run directory")
    rows, earlier = costs.stage_rows(run, since)
    if not rows:
        raise SubliminalError(f"{run}: no stage recorded costs this run spent ({earlier} "
                              "record(s) left out; a run of this version writes them into "
                              "each stage's complete.json)")
    typer.echo(costs.table(rows if stages else costs.by_kind(rows), peak, earlier), nl=False)


def check_out(out: Path | None) -> None:
    """--out must be a directory or a path one can be made at: no file at it or above it."""
    if out is None:
        return
    for path in (out, *out.parents):
        if path.exists():
            if not path.is_dir():
                raise SubliminalError(f"--out {out}: {path} exists and is not a directory")
            return


def stage_config(given: Given, out: Path, model: bool = True) -> ChainConfig:
    """A stage command's config (the chain's defaults, preset, flags), checked before any work:
    --out, every field against its metadata and, with MODEL, that the model can be loaded."""
    check_out(out)
    cfg = given.apply(ChainConfig())
    check_config(cfg)
    if model:
        check_model(cfg.model)
    return cfg


def check_model(name: str) -> None:
    """The model can be loaded (embedded, a directory, or a cached hub id), before any work."""
    if name != TINY:
        resolve(name)


def validate(cfg: ChainConfig) -> None:
    """Check a chain config before any model is loaded: every field against its metadata
    (choices, ranges) and the configs' cross-field rules, then the trait, the channel and the
    model, each error naming the flag and the valid options."""
    check_config(cfg)
    trait = get_trait(cfg.trait)
    if cfg.injection == "prompt" and trait is not None and cfg.replicates > len(trait.prompts):
        # Replicate seed s takes wording s mod n: more replicates would repeat teacher pairs
        # and count them as independent.
        raise SubliminalError(f"--injection prompt: {cfg.trait!r} has {len(trait.prompts)} "
                              f"wordings, so at most {len(trait.prompts)} independent "
                              f"replicates (got --replicates {cfg.replicates})")
    channel = make_channel(cfg)  # checks the channel and its options (a bad problems file)
    if cfg.decode.top_k > 0 and cfg.decode.logits == "restricted" and not getattr(
            channel, "allowed_chars", None):
        raise SubliminalError(f"--channel {cfg.channel} has no token grammar, so stored teacher "
                              "distributions cannot be restricted to it; use --mode sft, or "
                              "--logits overt (an overt-distillation positive control)")
    check_model(cfg.model)


def run() -> None:
    """Entry point: user errors become one line on stderr and exit code 2, and so do writes
    the destination refuses (read-only, no permission, full disk: records.write_failure);
    any other exception is a bug and keeps its traceback."""
    try:
        app()
    except SubliminalError as e:
        fail(str(e))
    except OSError as e:
        message = write_failure(e)
        if message is None:
            raise
        fail(message)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        sys.exit(130)


def _register_subcommands() -> None:
    """Stage groups that live in their own packages."""
    app.command("scan")(scan)
    app.command("traits")(traits_command)
    app.add_typer(reproduce_app, name="reproduce")
    app.add_typer(intervene_app, name="intervene")


_register_subcommands()
