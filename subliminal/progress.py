"""Progress: per-stage bars, and one overall line for a run (stage k of N, elapsed, ETA).

    subliminal chain --generations 3      # the overall line sits above the stage bars

Stage bars (`track`) show count, elapsed and remaining time. A run's overall line (`overall`)
watches the run folder: a stage counts as done when its `complete.json` exists, so the line
is right whether stages run here or in Ray workers, and after a resume. Stages are weighted by
their expected cost (a student costs ~100x a filter), and the ETA is the elapsed time scaled
by the weight still to do. When stderr is not a terminal (a `nohup` run's log), where a live
display would show nothing until the end, the overall line is printed as plain text each time
a stage finishes. `SUBLIMINAL_QUIET=1` (set inside Ray workers) draws nothing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")
console = Console(stderr=True)
_LIVE: list[Progress] = []  # the run's live display, when an overall line is shown
POLL_SECONDS = 1.0  # how often the overall line looks for finished stages

# Expected CPU seconds of each kind of stage on the embedded model at the defaults (measured
# 2026-12-06, benchmarks/README.md); only their ratios matter for the ETA.
WEIGHTS = {"teacher": 60.0, "audit": 15.0, "battery": 70.0, "generate": 40.0, "filter": 1.0,
           "distill": 85.0}


def quiet() -> bool:
    return os.environ.get("SUBLIMINAL_QUIET", "") not in ("", "0")


def _columns(count: bool = True) -> tuple:
    return (TextColumn("{task.description}"), BarColumn(),
            *((MofNCompleteColumn(),) if count else ()), TimeElapsedColumn(),
            TimeRemainingColumn())


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar (under the run's overall line when one is shown)."""
    if quiet():
        yield from items
        return
    if _LIVE:
        progress = _LIVE[0]
        task = progress.add_task(description, total=total if total is not None else
                                 len(items) if hasattr(items, "__len__") else None)
        try:
            for item in items:
                yield item
                progress.advance(task)
        finally:
            progress.remove_task(task)
        return
    with Progress(*_columns(), console=console, transient=False) as progress:
        yield from progress.track(items, total=total, description=description)


@contextlib.contextmanager
def overall(name: str, stages: list[tuple[Path, str, float]], workers: int = 1
            ) -> Iterator[None]:
    """Show `name: stage k of N` with elapsed time and an ETA while the body runs. `stages`:
    each planned stage's folder, kind (a key of WEIGHTS) and cost relative to that kind's
    usual one (a student of 8 epochs costs 4 of 2 epochs)."""
    if quiet() or not stages:
        yield
        return
    weight = weights(stages)
    with Progress(*_columns(count=False), console=console, transient=False,
                  disable=not console.is_terminal) as progress:  # a log gets plain lines
        total = sum(weight)
        task = progress.add_task(name, total=total)
        stop = threading.Event()
        start, first, shown = time.monotonic(), None, -1

        def poll() -> None:
            nonlocal first, shown
            while True:
                done = [(Path(f) / "complete.json").exists() for f, _, _ in stages]
                spent = sum(w for w, d in zip(weight, done, strict=True) if d)
                first = spent if first is None else first  # done before this run (a resume)
                line = f"{name}: stage {sum(done)} of {len(stages)}" + (
                    f" ({workers} workers)" if workers > 1 else "")
                progress.update(task, completed=spent, description=line)
                if not console.is_terminal and spent != shown:  # a stage finished: log it
                    shown = spent
                    console.print(plain_line(line, time.monotonic() - start, spent - first,
                                             total - spent), highlight=False,
                                  soft_wrap=True)  # one line per stage in a log, never folded
                if stop.wait(POLL_SECONDS):
                    return

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        _LIVE.append(progress)
        try:
            yield
        finally:
            _LIVE.remove(progress)
            stop.set()
            thread.join()


def weights(stages: list[tuple[Path, str, float]]) -> list[float]:
    """Each planned stage's expected cost: its kind's weight times its own scale."""
    return [WEIGHTS.get(kind, 10.0) * scale for _, kind, scale in stages]


def plain_line(line: str, elapsed: float, gained: float, left: float) -> str:
    """`line`, the elapsed time, and an ETA from this run's own pace (weight gained per second
    since it started; none before its first stage finishes)."""
    eta = f", ETA {_clock(left * elapsed / gained)}" if gained > 0 else ""
    return f"{line}, {_clock(elapsed)} elapsed{eta}"


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"
