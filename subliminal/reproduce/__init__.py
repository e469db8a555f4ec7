"""Reproductions of published subliminal-learning results, one command each.

    subliminal reproduce aux-logits

The config lives in `config.py`, not beside the experiment, so that building the CLI does not
import torch (about 2 s); the experiment module is imported only when a command runs.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import typer

from subliminal.reproduce.config import AuxLogitsConfig

__all__ = ["AuxLogitsConfig", "app"]


def _opt(name: str, *decls: str) -> Any:
    """A typer option whose default and help come from the config field, so they never drift."""
    f = {f.name: f for f in fields(AuxLogitsConfig)}[name]
    return typer.Option(f.default, *decls, help=f.metadata["help"])


app = typer.Typer(help="Reproduce published subliminal-learning results.", no_args_is_help=True)


@app.command("aux-logits")
def aux_logits_command(
    out: Path = typer.Option(Path("runs/aux-logits"), help="Run directory (created; a finished"
                             " run with the same config is shown again, not recomputed)."),
    data: str | None = _opt("data"),
    seeds: int = _opt("seeds"),
    seed: int = _opt("seed"),
    hidden: int = _opt("hidden"),
    m: int = _opt("m", "--m", "-m"),
    loss: str = _opt("loss"),
    lr: float = _opt("lr"),
    epochs: int = _opt("epochs"),
    noise: int = _opt("noise"),
    batch: int = _opt("batch"),
    teacher_epochs: int = _opt("teacher_epochs"),
    teacher_lr: float = _opt("teacher_lr"),
    teacher_batch: int = _opt("teacher_batch"),
    generations: int = _opt("generations"),
    threads: int = _opt("threads"),
) -> None:
    """MNIST aux logits: students learn digits from a teacher's extra logits on noise.

    A student trained only to match the teacher's auxiliary logits on uniform noise (it never
    sees a digit or a class logit) learns to classify digits, if it shares the teacher's
    initialisation. Prints a table per arm and writes aux_logits.json and a plot to --out."""
    # Deferred: the experiment imports torch; building this command group must not (docstring).
    import subliminal.reproduce.aux_logits as experiment

    cfg = AuxLogitsConfig(data=data, seeds=seeds, seed=seed, hidden=hidden, m=m, loss=loss,
                          lr=lr, epochs=epochs, noise=noise, batch=batch,
                          teacher_epochs=teacher_epochs, teacher_lr=teacher_lr,
                          teacher_batch=teacher_batch, generations=generations, threads=threads)
    record = experiment.run(cfg, out)
    experiment.print_table(record)
    typer.echo(f"wrote {out / 'aux_logits.json'} and {out / 'aux_logits.png'}")
