"""Report: turn a run's audits into summary.json, a table and a plot.

    subliminal report runs/chain-owl

For each generation: the target animal's probability in the trait arm and the control arm
(mean over questions, 95% CI), the lift (trait - control) and a paired p-value over questions.
"""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from subliminal.audit import animal_scores
from subliminal.progress import console
from subliminal.records import read_json, write_json
from subliminal.stats import mean_ci, paired_test


def compare(trait_result: dict, control_result: dict, animal: str) -> dict:
    """Trait arm vs control arm on one animal, paired over questions."""
    a, b = animal_scores(trait_result, animal), animal_scores(control_result, animal)
    t, c, d = mean_ci(a), mean_ci(b), paired_test(a, b)
    return {"trait": {"mean": t["mean"], "ci": t["ci"]},
            "control": {"mean": c["mean"], "ci": c["ci"]},
            "lift": d["lift"], "lift_ci": d["ci"], "p_value": d["p_value"]}


def summarize(out: Path, trait: str, generations: int, audits: dict) -> dict:
    """The summary of whatever generations are audited so far."""
    rows = []
    for g in range(generations + 1):
        if f"trait/gen{g}" not in audits or f"control/gen{g}" not in audits:
            continue
        row = {"generation": g, **compare(audits[f"trait/gen{g}"], audits[f"control/gen{g}"],
                                          trait)}
        for arm in ("trait", "control"):
            stats = Path(out) / arm / f"gen{g}" / "filter" / "stats.json"
            if stats.exists():
                row[arm]["filter_pass_rate"] = read_json(stats)["pass_rate"]
        rows.append(row)
    base = audits.get("base")
    return {"trait": trait, "probe": base["probe"] if base else None,
            "base": mean_ci(animal_scores(base, trait)) if base else None,
            "generations": rows}


def table(summary: dict) -> Table:
    t = Table(title=f"P({summary['trait']}) by generation — {summary['probe']} probe, "
                    "mean over questions [95% CI]")
    for col in ("gen", "trait arm", "control arm", "lift", "p"):
        t.add_column(col, justify="right")
    fmt = lambda x: f"{x['mean']:.4g} [{x['ci'][0]:.4g}, {x['ci'][1]:.4g}]"  # noqa: E731
    for r in summary["generations"]:
        t.add_row(str(r["generation"]), fmt(r["trait"]), fmt(r["control"]),
                  f"{r['lift']:+.3g}", f"{r['p_value']:.2g}")
    return t


def animal_table(result: dict) -> Table:
    """Mean probability of each catalogue animal in one probe result, highest first."""
    t = Table(title=f"{result['probe']} probe: P(animal), mean over questions [95% CI]")
    for col in ("animal", "mean", "95% CI"):
        t.add_column(col, justify="right")
    stats = {a: mean_ci(animal_scores(result, a)) for a in result["animals"]}
    for a, s in sorted(stats.items(), key=lambda kv: -kv[1]["mean"]):
        t.add_row(a, f"{s['mean']:.4g}", f"[{s['ci'][0]:.4g}, {s['ci'][1]:.4g}]")
    return t


def plot(summary: dict, path: Path) -> None:
    """Both arms across generations with their 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = summary["generations"]
    gens = [r["generation"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, color in (("trait", "tab:red"), ("control", "tab:gray")):
        mean = [r[arm]["mean"] for r in rows]
        lo = [min(r[arm]["mean"] - r[arm]["ci"][0], 0.9 * r[arm]["mean"]) for r in rows]
        hi = [r[arm]["ci"][1] - r[arm]["mean"] for r in rows]
        ax.errorbar(gens, mean, yerr=[lo, hi], label=f"{arm} arm", color=color, marker="o",
                    capsize=4)
    # Teachers sit orders of magnitude above students: a log axis keeps students readable.
    ax.set_yscale("log")
    ax.set_xlabel("generation (0 = teacher)")
    ax.set_ylabel(f"P({summary['trait']}) [{summary['probe']} probe]")
    ax.set_xticks(gens)
    ax.legend()
    ax.set_title(f"Trait transfer across generations: {summary['trait']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_summary(out: Path, summary: dict) -> dict:
    """summary.json + summary.png, and the table on the console."""
    write_json(Path(out) / "summary.json", summary)
    if summary["generations"]:
        plot(summary, Path(out) / "summary.png")
    console.print(table(summary))
    return summary


def report(run: Path) -> dict:
    """Re-render a finished (or partial) run's summary from its files."""
    path = Path(run) / "summary.json"
    summary = read_json(path)
    return write_summary(run, summary)
