"""A run's costs read back from its stages' records: kinds, sums, filters, the command."""

import json
import sys
from pathlib import Path

import pytest

from subliminal import cli, costs
from subliminal.errors import SubliminalError

EVIDENCE = Path(__file__).resolve().parent.parent / "docs" / "evidence"


def stage(run: Path, where: str, finished: str, cpu: float, gflop: float = 0.0) -> None:
    folder = run / where
    folder.mkdir(parents=True)
    rec = {"finished": finished, "wall_s": cpu + 1, "cpu_s": cpu, "positions": 10,
           "head_positions": 2, "gflop": gflop}
    (folder / "complete.json").write_text(json.dumps(rec))


@pytest.fixture
def run(tmp_path) -> Path:
    run = tmp_path / "run"
    stage(run, "base/audit", "2026-01-01T00:00:01+0000", 5, 100)
    stage(run, "rep0/trait/teacher", "2026-01-01T00:00:02+0000", 3, 60)
    stage(run, "rep0/trait/gen0/audit", "2026-01-01T00:00:03+0000", 4, 80)
    stage(run, "rep0/trait/gen1/distill-allx8", "2026-01-01T00:00:05+0000", 10, 500)
    stage(run, "rep0/trait/gen1/audit-allx8", "2026-01-01T00:00:06+0000", 4, 80)
    stage(run, "rep1/trait/gen1/audit-allx8", "2026-01-01T00:00:07+0000", 6, 120)
    (run / "complete.json").write_text(json.dumps({"finished": "2026-01-01T00:00:08+0000"}))
    return run


def test_rows_are_named_by_kind_in_finishing_order_and_sum_per_kind(run):
    rows, earlier = costs.stage_rows(run)
    assert [r["kind"] for r in rows] == ["base audit", "teacher adapter", "teacher audit",
                                         "distill-allx8", "student audit-allx8",
                                         "student audit-allx8"]  # the run's own record: no cpu_s
    assert earlier == 0  # no environment.json: a bare folder counts everything
    kinds = {k["kind"]: k for k in costs.by_kind(rows)}
    assert kinds["student audit-allx8"]["n"] == 2
    assert kinds["student audit-allx8"]["cpu_s"] == 10 and kinds["student audit-allx8"][
        "gflop"] == 200
    assert sum(k["cpu_s"] for k in kinds.values()) == sum(r["cpu_s"] for r in rows) == 32


def test_since_keeps_only_later_stages_and_the_table_totals_them(run):
    rows, earlier = costs.stage_rows(run, since="2026-01-01T00:00:05+0000")
    assert earlier == 3
    # the same moment in another offset selects the same stages; a non-time is refused
    assert costs.stage_rows(run, since="2026-01-01T02:00:05+02:00")[0] == rows
    with pytest.raises(SubliminalError, match="--since: not an ISO time"):
        costs.stage_rows(run, since="yesterday")
    assert [r["stage"] for r in rows] == ["rep0/trait/gen1/distill-allx8",
                                          "rep0/trait/gen1/audit-allx8",
                                          "rep1/trait/gen1/audit-allx8"]
    last = costs.table(rows, peak=100.0).splitlines()[-1]
    assert "**20**" in last and "**700**" in last and "35%" in last  # 700 GFLOP / 20 CPU-s


def test_an_unreadable_record_is_named(run):
    (run / "rep0/trait/teacher/complete.json").write_text("{not json")
    with pytest.raises(SubliminalError, match="rep0/trait/teacher/complete.json"):
        costs.stage_rows(run)


def test_command_prints_kinds_and_refuses_a_folder_without_costs(run, tmp_path, monkeypatch,
                                                                  capsys):
    monkeypatch.setattr(sys, "argv", ["subliminal", "costs", str(run)])
    with pytest.raises(SystemExit) as done:
        cli.run()
    out = capsys.readouterr().out
    assert done.value.code in (0, None) and "| teacher audit | 1 |" in out
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(sys, "argv", ["subliminal", "costs", str(tmp_path / "empty")])
    with pytest.raises(SystemExit) as done:
        cli.run()
    err = capsys.readouterr().err
    assert done.value.code == 2 and err.count("\n") == 1 and "no stage recorded" in err


def test_the_default_chains_timed_costs_recompute_from_its_records():
    """The figures README.md and benchmarks/README.md quote for the default chain's timed
    run: 85 stages, 3,966 CPU-seconds, 212.5 TFLOP."""
    rows, earlier = costs.stage_rows(EVIDENCE / "default-timed-2026-12-07")
    assert len(rows) == 85 and earlier == 0  # an empty cache: every stage ran in this run
    assert round(sum(r["cpu_s"] for r in rows)) == 3966
    assert round(sum(r["gflop"] for r in rows) / 100) / 10 == 212.5


def test_a_stage_started_over_an_unfinished_attempt_says_it_was_resumed(tmp_path):
    """The meter sees only its own attempt: a fresh stage's record has costs and no flag, a
    stage that finds an earlier attempt's files says `resumed`, and `costs` counts it."""
    from subliminal.meter import metered
    from subliminal.records import LOCK, mark_complete

    run = tmp_path / "run"
    fresh, again = run / "rep0/trait/gen1/distill", run / "rep0/control/gen1/distill"
    for folder in (fresh, again):
        folder.mkdir(parents=True)
        (folder / LOCK).write_text("")
    (again / "checkpoint").mkdir()  # what a killed attempt left
    for folder in (fresh, again):
        with metered(folder):
            mark_complete(folder)
    records = {f: json.loads((f / "complete.json").read_text()) for f in (fresh, again)}
    assert "cpu_s" in records[fresh] and "resumed" not in records[fresh]
    assert records[again]["resumed"] is True
    rows, _ = costs.stage_rows(run)
    text = costs.table(rows)
    assert "rep0/control/gen1/distill (resumed)" in text and "1 stage(s) resumed" in text


def test_stages_finished_before_the_run_started_are_left_out_and_counted(run):
    """A teacher adapter copied from the machine cache keeps the record of the run that
    trained it: the run's own start (environment.json) excludes it by default."""
    (run / "environment.json").write_text(json.dumps({"time": "2026-01-01T00:00:02+0000"}))
    rows, earlier = costs.stage_rows(run)
    assert earlier == 1 and "base/audit" not in [r["stage"] for r in rows]
    assert "1 stage record(s) left out" in costs.table(rows, earlier=earlier)


def test_a_copy_from_the_cache_is_left_out_whenever_it_finished_and_stamps_parse(run):
    """A teacher adapter copied from the machine cache is marked as a copy: left out even
    when another run published it after this one started. Times in the records' own stamp
    ('+0000', which Python 3.10's fromisoformat refuses) parse with their offset."""
    import time

    record = run / "rep0/trait/teacher/complete.json"
    rec = json.loads(record.read_text())
    record.write_text(json.dumps({**rec, costs.COPIED: "owl-abc"}))
    rows, earlier = costs.stage_rows(run)
    assert earlier == 1 and "rep0/trait/teacher" not in [r["stage"] for r in rows]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    assert costs.moment(stamp, "x").utcoffset() is not None
