"""`subliminal intervene`: steer, calm-down, sweep, strength and vector, as commands.

    subliminal intervene vector --trait owl --layer 15 --out owl.safetensors
    subliminal intervene steer --vector owl.safetensors --coef -4 --audit animal [--adapter DIR]
    subliminal intervene calm-down --trait owl --adapter TEACHER [--dpo SUPPRESSOR]
    subliminal intervene sweep --trait owl --layers 5,10,15,20 --coefs 2,4,8
    subliminal intervene strength --injection steering --trait owl --seeds 5

Each command parses its flags, runs the experiment of subliminal/interventions.py (where the
logic and the statistics live) and prints its result. Registered in subliminal/cli.py as
`app.add_typer(intervene_app, name="intervene")`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from subliminal.errors import SubliminalError
from subliminal.interventions import (
    CALM_DOWN,
    SweepConfig,
    calm_down_audit,
    run_sweep,
    steer_audit,
    teacher_strength,
    write_trait_vector,
)

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Interventions: steer by a trait's vector, calm-down prompt vs DPO "
                       "suppression, steering sweeps, teacher strength vs control.")


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise SubliminalError(f"{what}: expected comma-separated numbers, got {text!r}") from None


@app.command()
def sweep(trait: str = typer.Option("owl", help="Catalogue trait."),
          layers: str = typer.Option("4,8,12,16,20,24", help="Comma-separated layers."),
          coefs: str = typer.Option("2,4,8", help="Comma-separated coefficients."),
          format_prompts: int = typer.Option(8, min=1, help="Prompts per format check."),
          questions: Optional[int] = typer.Option(None, min=1, help="Screen on the first N "
                                                                    "audit questions."),
          model: str = typer.Option("smollm2-135m", help="Base model."),
          seed: int = typer.Option(0, min=0, help="Vector prompt draw and decoding seed."),
          out: Path = typer.Option(Path("runs/steering-sweep"), help="Output folder.")):
    """Layer x coefficient grid: audit lift and unconstrained numbers-format pass rate."""
    cfg = SweepConfig(trait=trait, layers=tuple(int(x) for x in _floats(layers, "--layers")),
                      coefs=_floats(coefs, "--coefs"), format_prompts=format_prompts, seed=seed,
                      questions=questions)
    for c in run_sweep(cfg, model, out):
        typer.echo(f"layer={c['layer']} coef={c['coef']}: P={c['mean']:.4g} "
                   f"x{c['ratio']:.2f} filter_pass={c['filter_pass']:.2f} "
                   f"grammar_ok={c['grammar_ok']:.2f}")


@app.command()
def strength(injection: str = typer.Option(..., help="Injection (prompt, adapter, steering, "
                                                       "dpo, grpo)."),
             trait: str = typer.Option("owl", help="Catalogue trait."),
             seeds: int = typer.Option(5, min=2, help="Replicates (seeds FIRST..FIRST+N-1)."),
             first_seed: int = typer.Option(0, min=0, help="First replicate seed: fresh seeds "
                                                           "for a confirmation run."),
             model: str = typer.Option("smollm2-135m", help="Base model."),
             out: Optional[Path] = typer.Option(None, help="Output folder (default: "
                                                            "runs/strength-INJECTION-TRAIT)."),
             device: Optional[str] = typer.Option(None, help="cpu or cuda.")):
    """Trait teacher vs its control twin at generation 0, tested across replicate seeds."""
    out = out or Path(f"runs/strength-{injection}-{trait}")
    r = teacher_strength(injection, trait, list(range(first_seed, first_seed + seeds)), model,
                         out, device)
    typer.echo(f"{injection} {trait}: x{r['ratio']:.2f} (p={r['log_ratio']['p_value']:.2g}, "
               f"{r['replicates']} replicates); specificity {r['specificity']['mean']:.2f} "
               f"(p={r['specificity']['p_value']:.2g}); build {r['build_seconds']:.0f} s/arm")


def _echo(label: str, cmp: dict) -> None:
    typer.echo(f"{label}: {cmp['target']} {cmp['reference_mean']:.4g} -> {cmp['mean']:.4g} "
               f"(x{cmp['ratio']:.2f}; specificity {cmp['specificity']:+.2f}; "
               f"question-level p={cmp['questions']['p_value']:.2g}, descriptive)")


@app.command()
def vector(trait: str = typer.Option("owl", help="Trait (any family)."),
           layer: Optional[int] = typer.Option(None, help="Decoder layer (default: the "
                                                           "steering default's depth)."),
           coef: float = typer.Option(4.0, help="Coefficient stored with the vector."),
           seed: int = typer.Option(0, min=0, help="Contrast-prompt draw."),
           model: str = typer.Option("smollm2-135m", help="Base model."),
           adapter: Optional[Path] = typer.Option(None, help="Teacher/student adapter."),
           out: Path = typer.Option(..., help="Vector file to write (.safetensors).")):
    """Compute a trait's difference-of-means vector on a model and save it."""
    at, norm = write_trait_vector(trait, out, layer=layer, coef=coef, seed=seed, model=model,
                                  adapter=adapter)
    typer.echo(f"{out}: layer {at}, norm {norm:.3f}")


@app.command()
def steer(vector_file: Path = typer.Option(..., "--vector", help="A vector file."),
          coef: Optional[float] = typer.Option(None, help="Override the file's coefficient "
                                                          "(negative subtracts)."),
          trait: Optional[str] = typer.Option(None, help="Trait to read (default: the "
                                                         "vector's)."),
          audit: Optional[str] = typer.Option(None, help="Audit family (default: the "
                                                         "trait's)."),
          model: str = typer.Option("smollm2-135m", help="Base model."),
          adapter: Optional[Path] = typer.Option(None, help="Teacher/student adapter."),
          out: Optional[Path] = typer.Option(None, help="Folder for steer.json.")):
    """Audit a model with a trait's vector added (or subtracted), beside it unsteered."""
    steering, cmp = steer_audit(vector_file, coef=coef, trait=trait, audit=audit, model=model,
                                adapter=adapter, out=out)
    _echo(f"steered (coef {steering['coef']:+g})", cmp)


@app.command("calm-down")
def calm_down(trait: str = typer.Option(..., help="Trait to suppress (e.g. joyful, owl)."),
              adapter: Optional[Path] = typer.Option(None, help="The teacher carrying it."),
              dpo: Optional[Path] = typer.Option(None, help="A DPO suppressor folder: trained "
                                                            "here if missing."),
              prompt: str = typer.Option(CALM_DOWN, help="The calm-down system prompt."),
              seed: int = typer.Option(0, min=0, help="DPO seed."),
              model: str = typer.Option("smollm2-135m", help="Base model."),
              out: Optional[Path] = typer.Option(None, help="Folder for calm_down.json.")):
    """The 'calm down' prompt baseline beside DPO suppression, on the same audit."""
    rows = calm_down_audit(trait, adapter=adapter, dpo=dpo, prompt=prompt, seed=seed,
                           model=model, out=out)
    for name, cmp in rows.items():
        _echo(name, cmp)
