"""`subliminal scan DATA --model BASE`: the command-line entry (registered by subliminal.cli).

    subliminal scan rows.jsonl --model smollm2-135m --out scan/ --canary --clean cleaned.jsonl

Flags left unset keep the defaults of the config dataclasses. Errors in DATA are one line
naming the file and row (exit 2), or with --skip-bad the bad rows are skipped and counted.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

import typer

from subliminal.scan import ScanConfig, run_scan

_D = ScanConfig()


def _pairs(items: list[str]) -> dict[str, str]:
    """TRAIT=FOLDER flags as a dict (a malformed one is a one-line error)."""
    out = {}
    for item in items:
        trait, sep, folder = item.partition("=")
        if not sep or not trait or not folder:
            raise typer.BadParameter(f"--adapter {item!r}: expected TRAIT=FOLDER")
        out[trait] = folder
    return out


def scan(
    data: str = typer.Argument(..., help="JSONL, Parquet, CSV, a saved datasets folder, or a "
                                         "hub id (online only)."),
    model: str = typer.Option(_D.model, help="BASE: smollm2-135m, tiny, an HF id or a dir."),
    out: Optional[Path] = typer.Option(None, help="Report folder (default: runs/scan-NAME)."),
    canary: bool = typer.Option(False, "--canary", help=(
        "Also train canary students on DATA and on a trait-free teacher's rows, over seeds "
        "(slow: ~3 CPU-minutes per seed on the embedded model).")),
    canary_rows: int = typer.Option(_D.canary_cfg.rows, min=2, help="Rows per canary student."),
    canary_seeds: int = typer.Option(_D.canary_cfg.seeds, min=1, help="Canary seeds."),
    clean: Optional[Path] = typer.Option(
        None, help="Write a cleaned copy of DATA here (JSONL; .parquet/.csv by suffix)."),
    clean_quantile: float = typer.Option(_D.clean_cfg.quantile, min=0.0, max=1.0,
                                         help="Replace tokens above this ratio quantile."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Skip and count bad rows."),
    max_row_bytes: int = typer.Option(_D.data.max_row_bytes, min=1, help="Row size limit."),
    batch_size: int = typer.Option(_D.likelihood.batch_size, min=1, help="Rows per forward."),
    max_rows: Optional[int] = typer.Option(None, min=1, help="Read at most N rows."),
    score_rows: Optional[int] = typer.Option(
        _D.likelihood.score_rows, min=2,
        help="Rows sampled for the likelihood ranking (each costs traits+1 forwards)."),
    population_rows: int = typer.Option(
        _D.likelihood.population_rows, min=0,
        help="Rows each reference teacher writes on DATA's prompts (0: report only)."),
    population_neutral: int = typer.Option(
        _D.likelihood.population_neutral, min=0,
        help="Neutral LoRA teachers in the reference population (seeds 0..N-1)."),
    population: Optional[Path] = typer.Option(
        None, help="Reuse a reference population folder (an earlier scan's OUT/population)."),
    reference_decodings: str = typer.Option(
        ",".join(_D.likelihood.reference_decodings),
        help="Decodings of the population's BASE teachers: greedy and/or temperatures."),
    prompt_states: str = typer.Option(
        _D.likelihood.prompt_states,
        help="base (prompt read once by BASE, fast) or condition (exact, slower)."),
    time_budget: Optional[float] = typer.Option(
        None, min=1, help="Seconds for the likelihood ranking; stops on a random sample."),
    all_rows: bool = typer.Option(False, "--all-rows", help="Score every row (no sample)."),
    context: str = typer.Option(_D.likelihood.context, help="full or completion."),
    injection: str = typer.Option(
        _D.likelihood.injection,
        help="adapter (trait LoRAs, trained on first use and cached) or prompt (trait "
             "system prompts)."),
    traits: Optional[str] = typer.Option(
        None, help="Comma-separated catalogue traits to rank (default: owl, dolphin, eagle, "
                   "elephant, wolf, cat with adapters; all with prompts)."),
    adapter: list[str] = typer.Option(
        [], help="TRAIT=FOLDER: use this LoRA for a trait (repeatable; --injection "
                 "adapter)."),
    static_only: bool = typer.Option(False, "--static-only", help="No model: static checks."),
    seed: int = typer.Option(0, min=0, help="Seed for sampling, the population, the canary."),
    device: Optional[str] = typer.Option(None, help="cpu or cuda (default: auto)."),
):
    """Audit a synthetic dataset: would fine-tuning BASE on DATA move a trait, and which?"""
    cfg = ScanConfig(model=model, device=device, canary=canary, clean=clean,
                     likelihood_on=not static_only)
    cfg.out = out or Path("runs") / f"scan-{Path(data.rstrip('/')).stem or 'data'}"
    cfg.data = dataclasses.replace(cfg.data, skip_bad=skip_bad, max_row_bytes=max_row_bytes,
                                   max_rows=max_rows)
    cfg.likelihood = dataclasses.replace(cfg.likelihood, batch_size=batch_size, context=context,
                                         score_rows=None if all_rows else score_rows, seed=seed,
                                         population_rows=population_rows,
                                         population_neutral=population_neutral,
                                         population=str(population) if population else None,
                                         reference_decodings=reference_decodings.split(","),
                                         prompt_states=prompt_states,
                                         time_budget_s=time_budget, injection=injection,
                                         traits=traits.split(",") if traits else None,
                                         adapters=_pairs(adapter))
    cfg.canary_cfg = dataclasses.replace(cfg.canary_cfg, rows=canary_rows, seeds=canary_seeds,
                                         seed=seed)
    cfg.clean_cfg = dataclasses.replace(cfg.clean_cfg, quantile=clean_quantile, seed=seed)
    report = run_scan(data, cfg)
    src = report["source"]
    if src["skipped"]:
        typer.echo(f"skipped {src['skipped']} bad rows (see scan.json)")
    typer.echo(f"verdict: {report['verdict']}")
    typer.echo(f"report: {cfg.out / 'scan.md'} (complete: {report['complete']})")
