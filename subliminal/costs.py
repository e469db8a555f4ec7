"""What a run spent, read back from its stages' own records.

    subliminal costs runs/default                 # by kind of stage, then the totals
    subliminal costs runs/default --stages --peak 103.5

Every stage writes its wall and CPU seconds, model positions and estimated matmul GFLOP into
its `complete.json` (`subliminal.meter`), so a chain or a study can be profiled from its
folder after the fact, on any machine, without rerunning it — and the committed evidence of a
run carries its costs as well as its results. `--peak` (the machine's fp32 matmul GFLOP/s of
one thread; `benchmarks/bench_chain.py` measures it) adds each row's fraction of it: the
physical limit, and how close the code came.

A teacher adapter taken from the machine cache carries the costs of the run that trained it,
which the reading run did not spend; `since` (an ISO time) keeps only the stages that
finished at or after it.
"""

from __future__ import annotations

import json
from pathlib import Path

from subliminal.errors import SubliminalError

FIGURES = ("wall_s", "cpu_s", "positions", "head_positions", "gflop")


def kind_of(where: Path) -> str:
    """A stage folder's kind: the base's, a teacher's or a student's audit, the teacher
    adapter, or the stage's own name (a student recipe's suffix kept: 'distill-allx8')."""
    name, parent = where.name, where.parent.name
    if name == "teacher":
        return "teacher adapter"
    if name == "audit" and parent == "base":
        return "base audit"
    if name.startswith("audit"):
        return ("teacher audit" if parent == "gen0" else "student " + name)
    return name


def stage_rows(run: Path, since: str = "") -> list[dict]:
    """One row per stage folder of `run` that recorded its costs, in finishing order."""
    rows = []
    for path in Path(run).rglob("complete.json"):
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SubliminalError(f"{path}: unreadable stage record ({e})") from None
        if "cpu_s" not in rec or rec.get("finished", "") < since:
            continue
        where = path.parent.relative_to(run)
        rows.append({"stage": str(where), "kind": kind_of(where),
                     "finished": rec.get("finished", ""),
                     **{k: rec.get(k, 0) for k in FIGURES}})
    return sorted(rows, key=lambda r: r["finished"])


def by_kind(rows: list[dict]) -> list[dict]:
    """The rows summed per kind (with how many stages), in order of first appearance."""
    kinds: dict[str, dict] = {}
    for r in rows:
        k = kinds.setdefault(r["kind"], {"stage": r["kind"], "kind": r["kind"], "n": 0,
                                         **dict.fromkeys(FIGURES, 0)})
        k["n"] += 1
        for f in FIGURES:
            k[f] += r[f]
    return list(kinds.values())


def rate(row: dict) -> float:
    """Achieved GFLOP per CPU-second."""
    return row["gflop"] / row["cpu_s"] if row["cpu_s"] > 0 else 0.0


def table(rows: list[dict], peak: float | None = None) -> str:
    """Markdown: each row (a stage, or a kind with its count), then the totals."""
    share = (lambda r: f" {rate(r) / peak:.0%} |") if peak else (lambda r: "")  # noqa: E731
    head = ("| stage | n | wall s | CPU s | positions | GFLOP | GFLOP/CPU-s |"
            + (" of peak |" if peak else "") + "\n|" + "---|" * (7 + bool(peak)) + "\n")
    body = "".join(f"| {r['stage']} | {r.get('n', 1)} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} "
                   f"| {r['positions']} | {r['gflop']:.0f} | {rate(r):.1f} |{share(r)}\n"
                   for r in rows)
    total = {f: sum(r[f] for r in rows) for f in FIGURES}
    n = sum(r.get("n", 1) for r in rows)
    return head + body + (f"| **all stages** | {n} | {total['wall_s']:.0f} | "
                          f"**{total['cpu_s']:.0f}** | {total['positions']} | "
                          f"**{total['gflop']:.0f}** | {rate(total):.1f} |{share(total)}\n")
