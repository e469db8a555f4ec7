"""Tables and the plot of a crossed study (`study.json`): what `subliminal study` prints.

    subliminal study ... --out runs/study        # prints these; writes RUN/study.png

The dose-response table has one line per student recipe (and the teachers): steps, the
diagonal lift with its 95% CI over replicates, the deciding p and the sign-flip p, the same
contrast on raw log P, and the detectable lift. The confusion table of a recipe shows, per
teacher row and audited trait column, the share log-odds lift over the control twin's
student (mean [95% CI] over replicates): the diagonal should stand out in its column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.table import Table


def _line(name: str, steps: str, r: dict) -> tuple[str, ...]:
    d, raw = r["diagonal_test"], r["raw_logp_diagonal_test"]
    return (name, steps, f"{d['lift']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]",
            f"{d['p_value']:.2g}", f"{d['p_sign_flip']:.2g}", f"{raw['mean']:+.3f} "
            f"(p={raw['p_value']:.2g})", f"{d['detectable_lift']:+.3g}")


def dose_table(result: dict) -> Table:
    t = Table(title=f"Crossed study, {', '.join(result['traits'])}: diagonal lift (own "
                    f"teacher's students - other teachers' students, share log-odds), "
                    f"{result['n_replicates']} replicates [95% CI]; t-test over replicates")
    for col in ("model", "steps", "diagonal lift", "p", "p sign-flip", "raw log P diagonal",
                "detectable (80%)"):
        t.add_column(col, justify="right")
    t.add_row(*_line("teachers (gen 0)", "-", result["teachers"]))
    for name, r in result["students"].items():
        t.add_row(*_line(name, ",".join(map(str, r["steps"])) or "?", r))
    return t


def confusion_table(result: dict, name: str) -> Table:
    r = result["students"][name]
    conf, traits = r["confusion_vs_control"], result["traits"]
    t = Table(title=f"students '{name}': share log-odds lift over the control twin's student "
                    "(rows: teacher; columns: audited trait) [95% CI over replicates]")
    t.add_column("teacher")
    for c in traits:
        t.add_column(c, justify="right")
    for row in traits:
        cells = [conf[row][c] for c in traits] if conf else [None] * len(traits)
        t.add_row(row, *(f"{x['mean']:+.3f} [{x['ci'][0]:+.2f}, {x['ci'][1]:+.2f}]"
                         if x else "n/a" for x in cells))
    return t


def plot(result: dict, path: Path) -> None:
    """Left: diagonal lift per student recipe against its steps, replicates as dots. Right:
    the first recipe's mean share matrix (rows teacher, columns audited trait), each column
    centred on its mean so the diagonal shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, hm) = plt.subplots(1, 2, figsize=(10, 4))
    for i, (name, r) in enumerate(result["students"].items()):
        d = r["diagonal_test"]
        x = (r["steps"] or [i])[0]
        ax.errorbar([x], [d["lift"]], yerr=[[d["lift"] - d["ci"][0]], [d["ci"][1] - d["lift"]]],
                    marker="o", capsize=4, label=name)
        ax.scatter([x] * len(d["lifts"]), d["lifts"], s=10, color="gray")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("optimizer steps (log)")
    ax.set_ylabel("diagonal lift (share log-odds)")
    ax.legend(fontsize=7)
    first = next(iter(result["students"].values()))
    traits = result["traits"]
    m = np.array([[first["share_matrix_mean"][t][c] for c in traits] for t in traits])
    m = m - m.mean(0, keepdims=True)
    lim = float(np.abs(m).max()) or 1.0
    im = hm.imshow(m, cmap="coolwarm", vmin=-lim, vmax=lim)
    hm.set_xticks(range(len(traits)), traits, rotation=45)
    hm.set_yticks(range(len(traits)), traits)
    hm.set_xlabel("audited trait")
    hm.set_ylabel("teacher")
    fig.colorbar(im, ax=hm)
    fig.suptitle("Crossed study: specificity of transfer (replicates as dots)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
