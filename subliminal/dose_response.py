"""The dose-response of a transfer, across crossed studies: one point per student recipe.

    python pipelines/dose_response.py docs/evidence/e1b-adapter-sample-logits \
        docs/evidence/e2-rank-adapter-sample-logits --plot docs/study/dose_response.png

A study's students differ in their recipe only (`--students ROWSxEPOCHS[rRANK|full][-lrLR]`:
the same rows, more passes, another LoRA rank, every weight), so each recipe is a point on a
dose axis; studies of different cells (greedy vs sampled teachers, adapter vs DPO teachers)
add series. Every point is the study's own deciding read-out, read from its record
(`study.json`, or `study.partial.json` for a study with replicates missing): the diagonal
contrast (own teacher's students minus the other traits' teachers' students, share log-odds)
with its 95% CI and t-test p over replicates, the range of optimizer steps its replicates
took (equal dose: every arm of a replicate took the same), and what the student trained (its
LoRA rank, or every weight) at which learning rate. Nothing is recomputed or pooled here:
points of different studies rest on different replicates.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from subliminal.distill import DistillConfig
from subliminal.errors import SubliminalError
from subliminal.records import differing, read_json
from subliminal.replicate import Student
from subliminal.stats import replicate_test


def study_record(folder: Path) -> tuple[dict, bool]:
    """FOLDER's study record and whether it is finished."""
    for name, finished in (("study.json", True), ("study.partial.json", False)):
        if (Path(folder) / name).exists():
            return read_json(Path(folder) / name), finished
    raise SubliminalError(f"{folder}: no study.json or study.partial.json (not a study record)")


def cell_name(cell: dict) -> str:
    """The cell as `subliminal study --cell` names it: injection-decoding-mode-finetune."""
    return "-".join((cell["injection"], cell["decode"]["decoding"], cell["distill"]["mode"],
                     cell["distill"]["finetune"]))


def points(folder: Path) -> list[dict]:
    """One point per student recipe of the study in FOLDER; a record that lacks what a point
    needs is refused in one line naming the folder."""
    return _readable(folder, "read", _points, Path(folder))


def _readable(folder: Path, what: str, fn: Callable, *args: Any) -> Any:
    """fn(*args), a record lacking a field it needs refused in one line naming FOLDER."""
    try:
        return fn(*args)
    except (KeyError, TypeError, IndexError) as e:
        raise SubliminalError(f"{folder}: not a study record this version can {what} "
                              f"({type(e).__name__}: {e})") from None


def _points(folder: Path) -> list[dict]:
    record, finished = study_record(folder)
    cell = read_json(folder / "config.json")["cell"]
    out = []
    for name, r in record["students"].items():
        d, recipe = r["diagonal_test"], r["recipe"]
        trained = Student(**recipe).training(DistillConfig(**cell["distill"]))
        out.append({
            "study": folder.name, "finished": finished, "cell": cell_name(cell),
            "recipe": name, "epochs": recipe["epochs"], "rows": recipe["rows"] or "all",
            "lora_r": trained.lora_r if trained.finetune == "lora" else None,
            "lr": trained.lr, "steps": r["steps"],
            "n": r["n_replicates"], "lift": d["lift"], "ci": d["ci"], "p": d["p_value"],
            "p_sign_flip": d["p_sign_flip"], "lifts": d["lifts"],
            "raw_logp": r["raw_logp_diagonal_test"]["mean"]})
    return out


def paired(folder: Path, low: str, high: str, low_from: Path | None = None) -> dict:
    """Recipe HIGH against recipe LOW of one finished study, paired over its replicates: per
    replicate D(HIGH) - D(LOW) (both recipes' students learn from the same teachers and rows,
    so the replicate is the pair), its mean, 95% CI and two-sided t-test p, the sign-flip p
    beside it, and the difference detectable at 80% power (noncentral t). Only a finished
    study is read: an unfinished one's recipes may count different replicates, and pairing
    them by position would pair the wrong ones. LOW_FROM: LOW's students come from that
    study instead, paired replicate by replicate only where both studies hold the same cell
    and seeds and every arm's two students learned from the same rows (`same_rows`); the
    pairs are the replicates both studies hold (the first n of each: replicate r is seed
    S + r in both), `n` says how many. A record missing what pairing needs is refused in one
    line naming the folder."""
    return _readable(folder, "pair", _paired, Path(folder), low, high, low_from)


def _paired(folder: Path, low: str, high: str, low_from: Path | None) -> dict:
    a = _lifts(folder, high)
    b = _lifts(Path(low_from or folder), low)
    if low_from is not None:
        n = min(len(a), len(b))
        same_rows(folder, high, Path(low_from), low, n)
        a, b = a[:n], b[:n]
    # the differences are one lift per replicate: the lab's replicate test reads them (t
    # decides, sign-flip beside it, the detectable difference a null reports)
    test = replicate_test([x - y for x, y in zip(a, b, strict=True)])
    return {"study": folder.name, "low": low if low_from is None else
            f"{Path(low_from).name}:{low}", "high": high, "lifts_low": b,
            "lifts_high": a, "diffs": test["lifts"], "lift": test["mean"], "ci": test["ci"],
            "p_value": test["p_value"], "p_sign_flip": test["p_sign_flip"],
            "n": test["n_replicates"], "detectable": test["detectable_lift"]}


def _lifts(folder: Path, name: str) -> list[float]:
    """The per-replicate diagonal lifts of recipe NAME in a finished study."""
    record, done = study_record(folder)
    if not done or record.get("unfinished"):
        raise SubliminalError(f"{folder}: the study is unfinished; recipes are paired only "
                              f"when every replicate of both is audited")
    if name not in record["students"]:
        raise SubliminalError(f"{folder}: no student recipe {name!r} "
                              f"(the study has {', '.join(record['students'])})")
    return record["students"][name]["diagonal_test"]["lifts"]


def same_rows(folder: Path, high: str, other: Path, low: str, n: int) -> None:
    """Refuse to pair across two studies unless replicate r of both is one replicate: the
    same cell and seeds (so the same teachers and prompts), and in every arm HIGH's student of
    FOLDER and LOW's of OTHER trained on the same rows (sha256 of the kept rows, the same
    dose) — the two studies then differ only in the student recipe."""
    from subliminal.layout import CONTROL, recipe_student, stage_dirs, student_stages

    cells = [read_json(Path(f) / "config.json") for f in (folder, other)]
    differ = differing([c["cell"] for c in cells], skip=("replicates",))
    if differ or cells[0]["traits"] != cells[1]["traits"]:
        raise SubliminalError(f"{folder} and {other}: not one design (cell fields "
                              f"{differ or 'equal'}, traits {cells[0]['traits']} vs "
                              f"{cells[1]['traits']}); their replicates cannot be paired")
    for r in range(n):
        for arm in [*cells[0]["traits"], CONTROL]:
            rows = []
            for f, name in ((folder, high), (other, low)):
                stage = student_stages(stage_dirs(Path(f), r, arm, 1), recipe_student(name))[0]
                rec = read_json(stage / "stage.json")
                rows.append((rec["rows_sha256"], rec["config"]["max_rows"]))
            if rows[0] != rows[1]:
                raise SubliminalError(f"{folder} and {other}: rep{r} {arm}'s students learned "
                                      "from different rows; their replicates cannot be paired")


def paired_markdown(results: list[dict]) -> str:
    """The paired recipe contrasts as one table: a line per study, its per-replicate
    differences and their test."""
    lines = ["| study | contrast | per replicate | mean [95% CI] | p (t) | sign-flip p | n "
             "| detectable (80%) |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        per = ", ".join(f"{d:+.3f}" for d in r["diffs"])
        lines.append(f"| {r['study']} | {r['high']} - {r['low']} | {per} | {r['lift']:+.3f} "
                     f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] | {r['p_value']:.2g} | "
                     f"{r['p_sign_flip']:.2g} | {r['n']} | {r['detectable']:+.3f} |")
    return "\n".join(lines)


def movements(folder: Path) -> list[dict]:
    """Per student recipe of the study in FOLDER, how far its control twin's students moved
    from the base (`crossed.movement`, read from the probes: the study records do not hold
    it), over the replicates whose twin was audited."""
    from subliminal.crossed import movement
    from subliminal.evidence import audits
    from subliminal.layout import CONTROL, audit_key, recipe_key

    folder = Path(folder)
    cfg = read_json(folder / "config.json")
    if not isinstance(cfg, dict) or "traits" not in cfg or "cell" not in cfg:
        raise SubliminalError(f"{folder}: not a crossed study (its config.json has no traits "
                              "and cell); --movement reads a study's control twins")
    probes = audits(folder)
    if "base" not in probes:
        raise SubliminalError(f"{folder}: no base audit (base/audit/probe.json)")
    out = []
    for s in cfg["students"] or [""]:
        reps = [r for r in range(cfg["cell"]["replicates"])
                if audit_key(r, CONTROL, 1, s) in probes]
        if reps:
            out.append({"study": folder.name, "recipe": recipe_key(s),
                        **movement(probes, reps, s)})
    return out


def movement_markdown(rows: list[dict]) -> str:
    """The movement table, one line per study and recipe."""
    lines = ["| study | students | control twin's student vs base: mean abs. share log-odds "
             "change [95% CI] | per replicate | n |", "|---|---|---|---|---|"]
    for m in rows:
        per = ", ".join(f"{v:.3f}" for v in m["per_replicate"])
        lines.append(f"| {m['study']} | {m['recipe']} | {m['mean']:.3f} "
                     f"[{m['ci'][0]:.3f}, {m['ci'][1]:.3f}] | {per} | {m['n_replicates']} |")
    return "\n".join(lines)


def markdown(pts: list[dict]) -> str:
    """The dose-response table, one line per point."""
    head = ("| study | cell | students | trains | lr | optimizer steps (range) | n | diagonal "
            "lift [95% CI] | p | sign-flip p | raw log P |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for p in pts:
        study = p["study"] + ("" if p["finished"] else " (unfinished)")
        steps = "-".join(map(str, sorted({p["steps"][0], p["steps"][-1]})))
        lines.append(
            f"| {study} | {p['cell']} | {p['recipe']} | {trains(p)} | {p['lr']:g} | "
            f"{steps} | {p['n']} | {p['lift']:+.3f} "
            f"[{p['ci'][0]:+.3f}, {p['ci'][1]:+.3f}] | {p['p']:.2g} | {p['p_sign_flip']:.2g} | "
            f"{p['raw_logp']:+.3f} |")
    return "\n".join(lines)


def trains(point: dict) -> str:
    """What a point's students trained: 'LoRA r8', or 'all weights' for a full fine-tune."""
    return "all weights" if point["lora_r"] is None else f"LoRA r{point['lora_r']}"


def _x(point: dict, x: str) -> float:
    return (point["steps"][0] + point["steps"][-1]) / 2 if x == "steps" else point[x]


# Matplotlib's cycle without its grey (C7): grey is the replicates' dots.
SERIES_COLOURS = tuple(f"C{i}" for i in (0, 1, 2, 3, 4, 5, 6, 8, 9))


def _panel(ax, pts: list[dict], x: str, series: Callable[[dict], str]) -> None:
    """Mean and CI per point against X, replicates as grey dots, one colour per SERIES."""
    for i, label in enumerate(dict.fromkeys(map(series, pts))):
        mine = sorted((p for p in pts if series(p) == label), key=lambda p: _x(p, x))
        xs = [_x(p, x) for p in mine]
        ys = [p["lift"] for p in mine]
        err = [[y - p["ci"][0] for y, p in zip(ys, mine, strict=True)],
               [p["ci"][1] - y for y, p in zip(ys, mine, strict=True)]]
        ax.errorbar(xs, ys, yerr=err, marker="os^D"[i // len(SERIES_COLOURS) % 4], capsize=3,
                    color=SERIES_COLOURS[i % len(SERIES_COLOURS)], label=str(label))
        for xi, p in zip(xs, mine, strict=True):
            ax.scatter([xi] * len(p["lifts"]), p["lifts"], s=8, color="gray", zorder=3)
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_ylabel("diagonal lift (share log-odds)")
    # below the axes: with a dozen studies an inside legend hides the points
    ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)


def plot(pts: list[dict], path: Path) -> None:
    """Left: lift against optimizer steps (a series per study and what its students train).
    Right: lift against LoRA rank (a series per study and epochs; full fine-tunes have no rank
    and appear on the left only). Studies are never joined: their replicates differ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 8))
    _panel(left, pts, "steps", lambda p: f"{p['study']}, {trains(p)}, lr {p['lr']:g}")
    left.set_xlabel("optimizer steps (middle of the replicates' range, log)")
    lora = [p for p in pts if p["lora_r"] is not None]
    if lora:
        _panel(right, lora, "lora_r", lambda p: f"{p['study']}, x{p['epochs']}")
    else:
        right.text(0.5, 0.5, "no LoRA students: no rank axis", ha="center",
                   transform=right.transAxes)
    right.set_xlabel("student LoRA rank (log)")
    fig.suptitle("Dose-response of the crossed diagonal lift (replicates as grey dots)",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
