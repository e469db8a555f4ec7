"""Fan-out: an experiment's units as Ray tasks, each once its inputs exist, or in this process.

    subliminal chain --workers 2                       # a local Ray, one CPU per task
    subliminal chain --ray-address ray://head:10001    # join a running cluster unchanged
    subliminal study --workers 2 ...

A unit is one step of one arm of a replicate (its teacher; the teacher's audit; the rows of a
generation; one student; its audit — one unit with the student when no later rows learn from
it), and units meet only through the results they hand on
(`run_graph`: a student waits for the rows of its replicate's arms, the next generation's rows
for its student's training, an audit for its model). Ray only schedules them: every stage of
a unit is a folder that resumes from its own files (`stages.py`), so a task Ray retries after
its worker died, or a unit that a re-run meets half done, picks up where its files stop and
can never write twice. `workers=1` and no address runs the same units in this process, in
the graph's order, without importing Ray; the files and the summary are identical (tested).
On a cluster the run folder must sit on storage every node sees, and each node needs the
package installed; `num_gpus` asks Ray for a GPU per task.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from subliminal.errors import SubliminalError

# Environment a task needs wherever it runs (offline flags, the lab's cache and threads).
FORWARD_ENV = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME",
               "SUBLIMINAL_CACHE", "SUBLIMINAL_THREADS")
RETRIES = 3  # a task whose worker died is run again this many times (it resumes)


@dataclass(frozen=True)
class FanOut:
    """How units are executed; never part of a run's config (the results do not depend on
    it)."""

    workers: int = 1            # parallel tasks on a local Ray (1 and no address: in-process)
    address: str | None = None  # an existing Ray cluster to join ('auto', 'ray://host:port')
    threads: int = 1            # torch threads inside each task
    num_gpus: float = 0.0       # GPUs Ray reserves per task
    env: dict = field(default_factory=dict)

    @property
    def uses_ray(self) -> bool:
        return self.workers > 1 or self.address is not None


WORKER_GB = 3  # memory one CPU worker may need (the embedded model: teacher + student + audit)


def auto_workers(device: str | None = None) -> int:
    """Workers when none are asked for: one per CPU core where Ray is installed, as many as
    memory allows; 1 on a GPU (one model per device) or without Ray."""
    import importlib.util

    if (device or "").startswith("cuda") or importlib.util.find_spec("ray") is None:
        return 1
    try:
        gb = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2 ** 30
    except (ValueError, OSError, AttributeError):
        gb = WORKER_GB
    return max(1, min(os.cpu_count() or 1, int(gb // WORKER_GB)))


def _call(fn: Callable, args: tuple, threads: int) -> Any:
    """A unit inside a Ray worker: one deliberate thread count, quiet progress bars (the
    driver shows one overall line), user errors passed back as their message."""
    import torch

    os.environ["SUBLIMINAL_QUIET"] = "1"
    torch.set_num_threads(threads)
    try:
        return fn(*args)
    except SubliminalError as e:
        return _Failed(str(e))


@dataclass(frozen=True)
class _Failed:
    message: str


@dataclass(frozen=True)
class Node:
    """One unit of a graph: `fn(*args, *results of the nodes in after)`, run once those are
    done."""

    fn: Callable
    args: tuple
    after: tuple = ()  # keys of the nodes whose results this one takes (in order) and waits for


def run_units(units: list[tuple[Callable, tuple]], plan: FanOut) -> Iterator[tuple[int, Any]]:
    """Run every independent (function, args) unit; yields (index, result) as each finishes."""
    yield from run_graph({i: Node(fn, args) for i, (fn, args) in enumerate(units)}, plan)


def run_graph(nodes: dict[Hashable, Node], plan: FanOut) -> Iterator[tuple[Hashable, Any]]:
    """Run every node once the nodes it names in `after` are done; yields (key, result) as
    each finishes. In this process the nodes run in the dict's order (a node must come after
    the nodes it needs). On Ray every node is submitted at once, its inputs passed as object
    refs, so each starts as soon as its own inputs exist: no unit waits for the slowest unit
    of an unrelated arm, as it would at a barrier between phases."""
    if not plan.uses_ray:
        results: dict[Hashable, Any] = {}
        for key, n in nodes.items():
            results[key] = n.fn(*n.args, *(results[d] for d in n.after))
            yield key, results[key]
        return
    yield from _on_ray(nodes, plan)


@contextmanager
def session(plan: FanOut) -> Iterator[None]:
    """One Ray for a whole command: every `run_graph` inside reuses it, so its workers (their
    imports, ~7 s each here) outlive a phase instead of being started again for the next one.
    Nothing happens without Ray; a Ray already running (a cluster joined, a caller's) is
    left running."""
    if not plan.uses_ray:
        yield
        return
    ray = _ray()
    started = _init(ray, plan)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


def _ray():
    try:
        import ray
    except ImportError:
        raise SubliminalError("--workers > 1 and --ray-address need Ray: pip install "
                              "'subliminal-lab[ray]'") from None
    return ray


def _init(ray, plan: FanOut) -> bool:
    """Start (or join) Ray unless it is running; True when this call started it."""
    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in FORWARD_ENV if k in os.environ} | plan.env
    # A task asks for `threads` CPUs, so a local Ray needs workers x threads of them: fewer
    # and no task could ever be scheduled (the command would wait forever).
    kwargs = ({"address": plan.address} if plan.address else
              {"num_cpus": plan.workers * plan.threads, "include_dashboard": False})
    ray.init(**kwargs, log_to_driver=False, runtime_env={"env_vars": env},
             logging_level="ERROR")
    return True


def _after(fn: Callable, args: tuple, threads: int, *inputs: Any) -> Any:
    """A node on Ray: a failed input fails it too (the first error reaches the driver)."""
    failed = next((x for x in inputs if isinstance(x, _Failed)), None)
    return failed or _call(fn, (*args, *inputs), threads)


def _on_ray(nodes: dict[Hashable, Node], plan: FanOut) -> Iterator[tuple[Hashable, Any]]:
    with session(plan):
        import ray

        task = ray.remote(num_cpus=plan.threads, num_gpus=plan.num_gpus,
                          max_retries=RETRIES)(_after)
        refs: dict[Hashable, Any] = {}
        for key, n in nodes.items():  # Ray holds each task until its input refs are ready
            refs[key] = task.remote(n.fn, n.args, plan.threads, *(refs[d] for d in n.after))
        pending = {ref: key for key, ref in refs.items()}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                result = ray.get(done[0])
                if isinstance(result, _Failed):
                    raise SubliminalError(result.message)
                yield pending.pop(done[0]), result
        finally:  # a failure or a stopped caller: nothing keeps writing after the command ends
            _cancel(ray, pending)


def _cancel(ray, pending: dict) -> None:
    """Cancel the tasks not yet collected (a joined cluster would otherwise run them on, and
    a re-run would find their folders locked). A unit stopped mid-stage resumes later. Tasks
    already finished are left alone: cancelling a task as it completes (the dependents of a
    failed unit return at once) is the likely trigger of Ray 2.60's fatal check "Tried to
    complete task that was not pending", which once killed a test's driver. This narrows that
    race inside Ray; it cannot close it."""
    if not pending:
        return
    try:  # a look, not a wait; fetch_local=False: a result on another node counts as done
        _, running = ray.wait(list(pending), num_returns=len(pending), timeout=0,
                              fetch_local=False)
    except Exception:  # noqa: BLE001 - a broken cluster must not hide the error being raised
        running = list(pending)
    for ref in running:
        try:
            ray.cancel(ref, recursive=False)
        except Exception:  # noqa: BLE001 - a task that finished meanwhile, or is gone
            pass
