"""Fan-out on Ray: two workers give the files of one, and a killed worker's task is retried to
the same result (the tiny model, a local Ray of two CPUs)."""

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

ARGS = ["--threads", "1", "chain", "--model", "tiny", "--generations", "2", "--samples", "12",
        "--epochs", "1", "--replicates", "2", "--no-side-effects"]
OUTPUTS = ("rows.jsonl", "kept.jsonl", "adapter_model.safetensors", "probe.json",
           "summary.json")


def run(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SUBLIMINAL_QUIET": "1"}
    return subprocess.Popen([sys.executable, "-m", "subliminal", *ARGS, "--out", str(out),
                             *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def digests(out: Path) -> dict[str, str]:
    """Content hash of every row file, student, probe and the summary, by relative path."""
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.rglob("*")) if p.name in OUTPUTS}


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]


def test_two_workers_write_the_files_of_one(tmp_path):
    finish(run(tmp_path / "one"))
    finish(run(tmp_path / "two", "--workers", "2"))
    one, two = digests(tmp_path / "one"), digests(tmp_path / "two")
    assert len(one) > 20 and one == two


def kill_first_stage_worker(out: Path, driver: int, killed: list) -> None:
    """SIGKILL the first process seen holding a stage folder's lock (a Ray worker)."""
    deadline = time.time() + 300
    while time.time() < deadline and not killed:
        for lock in out.glob("rep*/*/gen*/*/.lock"):
            text = lock.read_text() if lock.exists() else ""
            if '"pid"' in text:
                pid = int(text.split('"pid": ')[1].split(",")[0])
                if pid != driver:
                    os.kill(pid, signal.SIGKILL)
                    killed.append((pid, str(lock.parent.relative_to(out))))
                    return
        time.sleep(0.01)


def test_a_killed_worker_is_retried_to_the_same_result(tmp_path):
    finish(run(tmp_path / "one"))
    proc = run(tmp_path / "two", "--workers", "2")
    killed: list = []
    watcher = threading.Thread(target=kill_first_stage_worker,
                               args=(tmp_path / "two", proc.pid, killed))
    watcher.start()
    finish(proc)
    watcher.join()
    assert killed, "no worker was caught holding a stage"
    assert digests(tmp_path / "two") == digests(tmp_path / "one")


CHECK_FAILED = 3  # the child's exit status when the check itself raised (see in_child)


def in_child(check: str, *args: str) -> None:
    """Run `check(*args)` of this module in a fresh Python: a Ray driver lives there, never in
    pytest's process. Ray can end its driver by itself: a bare exit status 1 when its core
    worker loses the raylet or GCS (in pytest's own process that killed the whole suite in CI
    once), or an abort on one of its internal fatal checks (seen once in CI). The check's own
    failures (any exception, a failed assertion) exit with CHECK_FAILED and fail this test at
    once with the child's stderr; any other non-zero exit is Ray's and is retried once."""
    code = (f"import sys, traceback; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
            f"import test_fanout as t\n"
            f"try:\n    t.{check}(*sys.argv[1:])\n"
            f"except BaseException:\n    traceback.print_exc(); sys.exit(t.CHECK_FAILED)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SUBLIMINAL_QUIET": "1"}
    for _ in range(2):
        done = subprocess.run([sys.executable, "-c", code, *args], env=env, text=True,
                              capture_output=True, timeout=600)
        if done.returncode in (0, CHECK_FAILED):
            break
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-3000:]}"


def test_a_child_that_ray_kills_is_retried_once_and_a_failed_check_is_not(tmp_path):
    tries = tmp_path / "tries"
    in_child("check_dies_once", str(tries))  # exit 1 without a traceback, as Ray's driver does
    assert tries.read_text() == "xx"
    with pytest.raises(AssertionError, match=f"exit {CHECK_FAILED}"):
        in_child("check_that_fails", str(tries))
    assert tries.read_text() == "xxy"


def check_dies_once(tries: str) -> None:
    with open(tries, "a") as f:
        f.write("x")
    if Path(tries).read_text() == "x":
        os._exit(1)


def check_that_fails(tries: str) -> None:
    with open(tries, "a") as f:
        f.write("y")
    raise AssertionError("a check's own failure")


def test_one_session_keeps_its_workers_across_phases():
    in_child("check_one_session_keeps_its_workers")


def check_one_session_keeps_its_workers() -> None:
    """Phases inside `session` reuse Ray's worker processes (their imports and caches); the
    session stops the Ray it started, and leaves one it did not start running."""
    import ray

    from subliminal.fanout import FanOut, run_units, session

    plan, units = FanOut(workers=2), [(os.getpid, ())] * 4
    with session(plan):
        first = {pid for _, pid in run_units(units, plan)}
        second = {pid for _, pid in run_units(units, plan)}
    assert os.getpid() not in first and second <= first
    assert not ray.is_initialized()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        with session(plan):
            list(run_units(units[:1], plan))
        assert ray.is_initialized()
    finally:
        ray.shutdown()


def test_a_graph_runs_by_its_inputs_on_ray_and_a_failure_stops_its_dependents(tmp_path):
    in_child("check_graph_on_ray", str(tmp_path))


def check_graph_on_ray(folder: str) -> None:
    """On Ray a node starts when its own inputs exist, not when an unrelated slow node
    finishes (no barrier between phases), and a failed input fails its dependents with the
    first error without running them (the in-process order: tests/test_graph.py)."""
    import operator

    from subliminal.errors import SubliminalError
    from subliminal.fanout import FanOut, Node, run_graph
    from subliminal.records import write_json
    from subliminal.replicate import Student

    nodes = {"slow": Node(time.sleep, (6,)), "fast": Node(operator.add, (2, 3)),
             "next": Node(operator.mul, (10,), after=("fast",))}
    on_ray = list(run_graph(nodes, FanOut(workers=2)))
    assert sorted(on_ray, key=str) == [("fast", 5), ("next", 50), ("slow", None)]
    assert [k for k, _ in on_ray].index("next") < [k for k, _ in on_ray].index("slow")
    marker = Path(folder) / "dependent-ran.json"  # write_json would record the failure it got
    bad = {"bad": Node(Student.parse, ("2y2",)), "then": Node(write_json, (marker,), ("bad",))}
    with pytest.raises(SubliminalError, match="2y2"):
        list(run_graph(bad, FanOut(workers=2)))
    assert not marker.exists()
    # tasks of 3 threads on 2 workers: Ray is given 6 CPUs (with 2, nothing could be scheduled)
    wide = FanOut(workers=2, threads=3)
    assert list(run_graph({"x": Node(operator.add, (1, 2))}, wide)) == [("x", 3)]
