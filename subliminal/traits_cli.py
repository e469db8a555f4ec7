"""`subliminal traits`: the trait catalogue, its families, audits and injections.

    subliminal traits                    # a table: family, trait, audit (label), injections
    subliminal traits --family ethics    # one family
    subliminal traits --json             # machine-readable

Registered in subliminal/cli.py as `app.command("traits")(traits)`.
"""

from __future__ import annotations

import json
from typing import Optional

import typer

from subliminal.injections import names as injection_names
from subliminal.trait import FAMILIES, TRAITS, get_family


def catalogue(family: str | None = None) -> list[dict]:
    """One record per trait (family order, then catalogue order)."""
    fams = [get_family(family).name] if family else list(FAMILIES)
    injections = injection_names()  # every injection consumes the same trait protocol
    return [{"name": t.name, "family": t.family, "description": t.description,
             "audit": t.audit, "label": t.label, "injections": injections,
             "filter_defaults": t.filter_defaults, "paraphrases": len(t.prompts),
             "system_prompt": t.system_prompt, "neutral_system_prompt": t.neutral_system_prompt}
            for f in fams for t in TRAITS.values() if t.family == f]


def traits(
    family: Optional[str] = typer.Option(  # the registry's families, listed when --help asks
        None, help=f"Only this family ({', '.join(FAMILIES)})."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
):
    """List the traits: family, the audit that reads them, how they can be injected."""
    rows = catalogue(family)
    if json_out:
        typer.echo(json.dumps(rows, indent=1))
        return
    typer.echo(f"{'family':13s} {'trait':17s} {'audit (label)':30s} {'filters':18s} injections")
    for r in rows:
        filt = ",".join(f"{k}={v}" for k, v in r["filter_defaults"].items()) or "-"
        audit = f"{r['audit']} ({r['label']})"
        typer.echo(f"{r['family']:13s} {r['name']:17s} {audit:30s} {filt:18s} "
                   f"{', '.join(r['injections'])}")
    typer.echo(f"{len(rows)} traits; control: 'none' (each family's neutral prompt/adapter).")
