"""The run's overall line, as a `nohup` log shows it (stderr not a terminal)."""

import io
import json
import time

from rich.console import Console

from subliminal import progress


def finish(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "complete.json").write_text(json.dumps({}))


def test_a_log_gets_a_line_per_finished_stage_with_an_eta(tmp_path, monkeypatch):
    log = io.StringIO()
    narrow = Console(file=log, force_terminal=False, width=30)  # a log line is never folded
    monkeypatch.setattr(progress, "console", narrow)
    monkeypatch.setattr(progress, "POLL_SECONDS", 0.02)
    monkeypatch.delenv("SUBLIMINAL_QUIET", raising=False)
    stages = [(tmp_path / "teacher", "teacher"), (tmp_path / "gen", "generate"),
              (tmp_path / "student", "distill")]
    finish(tmp_path / "teacher")  # done by an earlier run: not this run's pace
    with progress.overall("chain x", stages):
        time.sleep(0.1)
        finish(tmp_path / "gen")
        time.sleep(0.1)
    lines = [ln for ln in log.getvalue().splitlines() if ln.startswith("chain x: stage")]
    assert lines[0].startswith("chain x: stage 1 of 3, 0:00:00 elapsed")
    assert "ETA" not in lines[0]  # nothing finished by this run yet
    assert lines[1].startswith("chain x: stage 2 of 3") and "ETA" in lines[1]
    assert len(lines) == 2  # one line per change, not per poll


def test_the_eta_scales_elapsed_time_by_the_weight_left():
    assert progress.plain_line("s", 60, 10, 30) == "s, 0:01:00 elapsed, ETA 0:03:00"
    assert progress.plain_line("s", 3725, 0, 30) == "s, 1:02:05 elapsed"
