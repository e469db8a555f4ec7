"""The scan as a loop over registered parts: order, one record per part, extension, resume."""

from __future__ import annotations

import dataclasses
import json

import pytest

from subliminal.scan import PARTS, ScanConfig, get, names, part_file, register, run_scan


def data_file(tmp_path, n=5, name="d.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps({"prompt": f"Continue: {i}", "completion": "1, 2, 3"}) + "\n"
                         for i in range(n)))
    return str(p)


@pytest.fixture
def parts_snapshot():
    """Registering in a test must not leak into other tests."""
    saved = dict(PARTS)
    yield
    PARTS.clear()
    PARTS.update(saved)


def test_builtin_parts_in_order():
    assert names()[:4] == ["static", "likelihood", "canary", "clean"]
    assert get("static").wanted(ScanConfig()) and not get("canary").wanted(ScanConfig())
    with pytest.raises(Exception, match="unknown scan part"):
        get("nope")


def test_loop_runs_parts_in_order_and_writes_a_record_each(tmp_path, parts_snapshot):
    seen = []

    @register("first_extra")
    def first(ctx):
        seen.append(("first_extra", sorted(k for k in ("static",) if k in ctx.report)))
        return {"rows": len(ctx.loaded.rows)}

    @register("second_extra")
    def second(ctx):
        seen.append(("second_extra", ctx.report["first_extra"]["rows"]))
        return {"ok": True}

    @register("unwanted", wanted=lambda cfg: False)
    def unwanted(ctx):
        raise AssertionError("a part the config does not want must not run")

    out = tmp_path / "out"
    rep = run_scan(data_file(tmp_path), ScanConfig(likelihood_on=False, out=out))
    # run_scan was not edited: the registered extras ran after the built-in static part
    assert seen == [("first_extra", ["static"]), ("second_extra", 5)]
    assert list(rep["parts"]) == ["load", "static", "first_extra", "second_extra"]
    assert rep["complete"] is True and rep["second_extra"] == {"ok": True}
    for name in ("static", "first_extra", "second_extra"):
        saved = json.loads(part_file(out, name).read_text())
        assert saved["complete"] is True and saved["part"] == name
        assert saved["record"] == json.loads(json.dumps(rep[name]))
    assert not part_file(out, "unwanted").exists()
    assert json.loads((out / "scan.json").read_text())["complete"] is True


def test_killed_scan_resumes_without_rerunning_completed_parts(tmp_path, parts_snapshot):
    calls = {"static": 0, "flaky": 0}
    real_static = PARTS["static"].run

    def counted_static(ctx):
        calls["static"] += 1
        return real_static(ctx)

    PARTS["static"] = dataclasses.replace(PARTS["static"], run=counted_static)

    @register("flaky")
    def flaky(ctx):
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise KeyboardInterrupt  # the scan is killed during this part
        return {"static_rows": ctx.report["static"]["rows"]}

    out, data = tmp_path / "out", data_file(tmp_path)
    cfg = ScanConfig(likelihood_on=False, out=out)
    with pytest.raises(KeyboardInterrupt):
        run_scan(data, cfg)
    left = json.loads((out / "scan.json").read_text())
    assert left["complete"] is False and left["parts"]["static"] == "done"
    assert left["parts"]["flaky"] == "pending" and not part_file(out, "flaky").exists()
    rep = run_scan(data, cfg)  # same config, same DATA: resume
    assert calls == {"static": 1, "flaky": 2}  # static was not re-run
    assert rep["resumed"] == ["static"] and rep["complete"] is True
    assert rep["flaky"]["static_rows"] == 5 and rep["static"]["rows"] == 5
    # DATA changed in place: a completed part's record no longer applies, so it runs again
    data_file(tmp_path, n=7)
    rep = run_scan(data, cfg)
    assert calls["static"] == 2 and rep["static"]["rows"] == 7 and "resumed" not in rep

