"""The run's overall line, as a `nohup` log shows it (stderr not a terminal)."""

import io
import json
import time

from rich.console import Console

from subliminal import progress
from subliminal.chain import ChainConfig
from subliminal.distill import DistillConfig
from subliminal.replicate import FULL_COST, Arm, Student, planned_stages, student_cost


def finish(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "complete.json").write_text(json.dumps({}))


def test_a_log_gets_a_line_per_finished_stage_with_an_eta(tmp_path, monkeypatch):
    log = io.StringIO()
    narrow = Console(file=log, force_terminal=False, width=30)  # a log line is never folded
    monkeypatch.setattr(progress, "console", narrow)
    monkeypatch.setattr(progress, "POLL_SECONDS", 0.02)
    monkeypatch.delenv("SUBLIMINAL_QUIET", raising=False)
    stages = [(tmp_path / "teacher", "teacher", 1.0), (tmp_path / "gen", "generate", 1.0),
              (tmp_path / "student", "distill", 1.0)]
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


def test_a_longer_student_counts_for_more_of_the_eta(tmp_path):
    """Two students of one arm, 2 and 8 epochs: when the first is done, 4/5 of the students'
    weight is left, so the ETA is four times the time the first took (not once)."""
    config = ChainConfig(replicates=1, generations=1, distill=DistillConfig(epochs=2))
    stages = [s for s in planned_stages(config, tmp_path, [Arm("owl", "owl", False)],
                                        (Student.parse("allx2"), Student.parse("allx8")))
              if s[1] == "distill"]
    assert [s[2] for s in stages] == [1.0, 4.0]
    assert student_cost(config, Student.parse("32x2")) == 32 / config.samples
    assert student_cost(config, Student.parse("640x2")) == 1.0  # never more than the dose
    assert student_cost(config, Student.parse("allx2full-lr1e-4")) == FULL_COST  # every weight
    first, second = progress.weights(stages)
    assert second == 4 * first
    assert progress.plain_line("s", 60, first, second).endswith("ETA 0:04:00")
