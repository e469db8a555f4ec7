"""What a run spent, read back from its stages' own records.

    subliminal costs runs/default                 # by kind of stage, then the totals
    subliminal costs runs/default --stages --peak 103.5

Every stage writes its wall and CPU seconds, model positions and estimated matmul GFLOP into
its `complete.json` (`subliminal.meter`), so a chain or a study can be profiled from its
folder after the fact, on any machine, without rerunning it — and the committed evidence of a
run carries its costs as well as its results. `--peak` (the machine's fp32 matmul GFLOP/s of
one thread; `benchmarks/bench_chain.py` measures it) adds each row's fraction of it: the
physical limit, and how close the code came.

Only what the run itself spent is counted: a stage that finished before the run started (a
teacher adapter copied from the machine cache keeps the record of the run that trained it) is
left out and counted in a note, as is anything before `since`. A stage resumed after a kill
measured its last attempt only (`resumed` in its record), so its figures undercount; the
table says how many.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from subliminal.errors import SubliminalError

FIGURES = ("wall_s", "cpu_s", "positions", "head_positions", "gflop")
STAMP = "%Y-%m-%dT%H:%M:%S%z"  # how stage and environment records write their times
COPIED = "copied_from_cache"    # a stage record copied from the machine cache says so


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


def moment(text: str, where: str) -> datetime:
    """An ISO time with its offset ('2026-12-07T06:49:27+0000'); naive times are UTC."""
    for parse in (lambda x: datetime.strptime(x, STAMP), datetime.fromisoformat):
        try:  # the records' own stamp ('+0000') first: Python 3.10's fromisoformat refuses it
            t = parse(text)
            return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    raise SubliminalError(f"{where}: not an ISO time: {text!r}")


def run_start(run: Path) -> str:
    """When the run first started (its environment record), or '' for a bare stage folder."""
    env = Path(run) / "environment.json"
    try:
        return json.loads(env.read_text()).get("time", "") if env.exists() else ""
    except (OSError, json.JSONDecodeError) as e:
        raise SubliminalError(f"{env}: unreadable ({e})") from None


def records(run: Path) -> tuple[list[tuple[Path, dict]], int]:
    """Every stage record under `run` that holds costs this run spent, and how many others
    there are (copied from the machine cache, or written before stages recorded costs)."""
    found, other = [], 0
    for path in Path(run).rglob("complete.json"):
        if path.parent == Path(run):  # the run's own record, not a stage's
            continue
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise SubliminalError(f"{path}: unreadable stage record ({e})") from None
        if "cpu_s" in rec and COPIED not in rec:
            found.append((path, rec))
        else:
            other += 1
    return found, other


def stage_rows(run: Path, since: str = "") -> tuple[list[dict], int]:
    """One row per stage of `run` that recorded its costs and finished at or after `since`
    (default: the run's start), in finishing order; and how many others were left out (from
    before, copied from the cache, or without costs)."""
    start = run_start(run)
    floor = (moment(since, "--since") if since else
             moment(start, str(Path(run) / "environment.json")) if start else None)
    found, earlier = records(run)
    rows = []
    for path, rec in found:
        done = moment(rec.get("finished", ""), str(path))
        if floor and done < floor:
            earlier += 1
            continue
        where = path.parent.relative_to(run)
        rows.append({"stage": str(where), "kind": kind_of(where),
                     "finished": done.astimezone(timezone.utc).isoformat(),
                     "resumed": bool(rec.get("resumed")),
                     **{k: rec.get(k, 0) for k in FIGURES}})
    return sorted(rows, key=lambda r: r["finished"]), earlier


def by_kind(rows: list[dict]) -> list[dict]:
    """The rows summed per kind (with how many stages), in order of first appearance."""
    kinds: dict[str, dict] = {}
    for r in rows:
        k = kinds.setdefault(r["kind"], {"stage": r["kind"], "kind": r["kind"], "n": 0,
                                         "resumed": 0, **dict.fromkeys(FIGURES, 0)})
        k["n"] += 1
        k["resumed"] += r["resumed"]
        for f in FIGURES:
            k[f] += r[f]
    return list(kinds.values())


def rate(row: dict) -> float:
    """Achieved GFLOP per CPU-second."""
    return row["gflop"] / row["cpu_s"] if row["cpu_s"] > 0 else 0.0


def label(row: dict) -> str:
    """A row's name; a single stage resumed after a stop says so."""
    return row["stage"] + (" (resumed)" if "n" not in row and row["resumed"] else "")


def table(rows: list[dict], peak: float | None = None, earlier: int = 0) -> str:
    """Markdown: each row (a stage, or a kind with its count), the totals, then notes on
    what the figures leave out."""
    share = (lambda r: f" {rate(r) / peak:.0%} |") if peak else (lambda r: "")  # noqa: E731
    head = ("| stage | n | wall s | CPU s | positions | GFLOP | GFLOP/CPU-s |"
            + (" of peak |" if peak else "") + "\n|" + "---|" * (7 + bool(peak)) + "\n")
    body = "".join(f"| {label(r)} | {r.get('n', 1)} | {r['wall_s']:.1f} | {r['cpu_s']:.1f} "
                   f"| {r['positions']} | {r['gflop']:.0f} | {rate(r):.1f} |{share(r)}\n"
                   for r in rows)
    total = {f: sum(r[f] for r in rows) for f in FIGURES}
    n, resumed = sum(r.get("n", 1) for r in rows), sum(r["resumed"] for r in rows)
    notes = ([f"{resumed} stage(s) resumed after a stop: their figures are the last attempt's "
              "only, so the totals undercount\n"] if resumed else []) + (
        [f"{earlier} stage record(s) left out: copied from the machine cache, finished before "
         "the run started or --since, or written without costs\n"] if earlier else [])
    return head + body + (f"| **all stages** | {n} | {total['wall_s']:.0f} | "
                          f"**{total['cpu_s']:.0f}** | {total['positions']} | "
                          f"**{total['gflop']:.0f}** | {rate(total):.1f} |{share(total)}\n"
                          ) + "".join(["\n", *notes] if notes else [])
