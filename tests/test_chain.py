"""The chain end to end on the tiny model, through the CLI: records, summary, resume, errors."""

import json
import os
import subprocess
import sys

from typer.testing import CliRunner

from subliminal.cli import app

ARGS = ["--threads", "1", "chain", "--model", "tiny", "--generations", "2", "--samples", "12",
        "--epochs", "1"]


def run_cli(args):
    result = CliRunner().invoke(app, args)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def test_chain_writes_records_summary_and_plot(tmp_path):
    out = tmp_path / "run"
    assert run_cli([*ARGS, "--out", str(out)]).exit_code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [g["generation"] for g in summary["generations"]] == [0, 1, 2]
    for g in summary["generations"]:
        assert set(g) >= {"generation", "trait", "control", "lift", "p_value"}
        assert len(g["trait"]["ci"]) == 2 and g["trait"]["ci"][0] <= g["trait"]["mean"]
    assert (out / "summary.png").stat().st_size > 1000
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "tiny" and config["distill"]["epochs"] == 1
    env = json.loads((out / "environment.json").read_text())
    assert env["packages"]["torch"] and "device" in env
    teacher = json.loads((out / "trait/gen1/generate/teacher.json").read_text())
    assert teacher["adapter"].endswith("trait_adapter") and teacher["system_prompt"] is None
    assert (out / "trait_adapter/adapter_config.json").exists()
    rows = (out / "trait/gen1/filter/kept.jsonl").read_text().splitlines()
    assert "topk_logprobs" in json.loads(rows[0])["meta"]  # the default distils logits
    assert json.loads((out / "trait/gen2/generate/teacher.json").read_text())["adapter"].endswith(
        "trait/gen1/distill")
    for stage in ("generate", "filter", "distill", "audit"):
        assert (out / "control/gen2" / stage / "complete.json").exists()
    assert (out / "complete.json").exists()


def test_resume_redoes_only_the_unfinished_stage(tmp_path):
    out = tmp_path / "run"
    run_cli([*ARGS, "--out", str(out)])
    rows = out / "control/gen2/generate/rows.jsonl"
    full = rows.read_text()
    # Simulate a kill mid-generation: half the rows, a torn last line, no completion records.
    lines = full.splitlines(keepends=True)
    rows.write_text("".join(lines[:5]) + lines[5][:20])
    for stage in ("generate", "filter", "distill", "audit"):
        (out / "control/gen2" / stage / "complete.json").unlink()
    (out / "complete.json").unlink()
    kept_before = (out / "trait/gen2/filter/kept.jsonl").stat().st_mtime_ns
    audit_before = (out / "base/audit/probe.json").stat().st_mtime_ns
    assert run_cli([*ARGS, "--out", str(out)]).exit_code == 0
    assert rows.read_text() == full  # the same rows, regenerated deterministically
    assert (out / "trait/gen2/filter/kept.jsonl").stat().st_mtime_ns == kept_before
    assert (out / "base/audit/probe.json").stat().st_mtime_ns == audit_before
    assert (out / "complete.json").exists()


def test_changed_flags_refuse_the_run_directory(tmp_path):
    out = tmp_path / "run"
    (out).mkdir()
    (out / "config.json").write_text(json.dumps({"model": "tiny", "samples": 3}))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "subliminal", *ARGS, "--out", str(out)],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 2
    assert "different config" in r.stderr and "Traceback" not in r.stderr
    assert json.loads((out / "config.json").read_text()) == {"model": "tiny", "samples": 3}


def test_bad_input_is_one_line_without_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    notmodel = tmp_path / "notmodel"
    notmodel.mkdir()
    cases = [(["chain", "--trait", "unicorn"], "choose one of: owl"),
             (["chain", "--model", "nosuch"], "unknown model 'nosuch'"),
             (["chain", "--model", str(notmodel)], "not a model directory"),
             (["chain", "--mode", "magic"], "choose one of: sft, logits"),
             (["chain", "--generations", "0"], "generations")]
    for args, needle in cases:
        r = subprocess.run([sys.executable, "-m", "subliminal", *args], capture_output=True,
                           text=True, env=env, cwd=tmp_path)
        assert r.returncode != 0, args
        assert needle in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_math_chain_on_tiny_model(tmp_path):
    out = tmp_path / "math"
    args = ["--threads", "1", "chain", "--model", "tiny", "--channel", "math", "--generations",
            "1", "--samples", "6", "--epochs", "1", "--decoding", "sample", "--injection",
            "prompt", "--mode", "sft", "--out", str(out)]
    assert run_cli(args).exit_code == 0
    teacher = json.loads((out / "trait/gen1/generate/teacher.json").read_text())
    assert teacher["system_prompt"].startswith("You love owls")
    stats = json.loads((out / "trait/gen1/filter/stats.json").read_text())
    assert set(stats["rule_pass_rate"]) >= {"math/format", "math/correct", "math/leak"}
    assert json.loads((out / "summary.json").read_text())["generations"][1]["trait"][
        "filter_pass_rate"] == stats["pass_rate"]
