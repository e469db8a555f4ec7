"""The chain end to end on the tiny model, through the CLI: records, summary, resume, errors."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from subliminal.cli import app

ARGS = ["--threads", "1", "chain", "--model", "tiny", "--generations", "2", "--samples", "12",
        "--epochs", "1", "--replicates", "2", "--no-side-effects"]


def run_cli(args):
    result = CliRunner().invoke(app, args)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.mark.slow  # whole stages on the tiny model: seconds, not milliseconds
def test_chain_writes_records_summary_and_plot(tmp_path):
    out = tmp_path / "run"
    assert run_cli([*ARGS, "--out", str(out)]).exit_code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [g["generation"] for g in summary["generations"]] == [0, 1, 2]
    for g in summary["generations"]:
        assert g["n_replicates"] == 2 and len(g["lifts"]) == 2
        assert set(g) >= {"trait", "control", "lift", "p_value", "specificity", "generic_drift",
                          "verdict"}
        assert g["verdict"].removeprefix("teachers (injection vs control twin): ").split(
            " (")[0] in (
            "specific transfer against the control twin", "generic drift, not specific",
            "profile shift, not specific", "no transfer detected",
            "specific effect against the control twin", "no effect detected")
        assert g["generation"] > 0 or "transfer" not in g["verdict"]  # teachers: effects
        assert "noncentral t" in g["verdict"] and "spread's 95% range" in g["verdict"]
        assert g["specificity"]["p_sign_flip_floor"] == 0.5  # 2 / 2^2
    assert (out / "summary.png").stat().st_size > 1000
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "tiny" and config["distill"]["epochs"] == 1
    assert config["audit"]["questions"] == "animal_preference"  # a name, never a path
    env = json.loads((out / "environment.json").read_text())
    assert env["packages"]["torch"] and "device" in env
    for r in (0, 1):
        trait_t = json.loads((out / f"rep{r}/trait/gen1/generate/teacher.json").read_text())
        control_t = json.loads((out / f"rep{r}/control/gen1/generate/teacher.json").read_text())
        assert trait_t["injection"]["neutral"] is False and control_t["injection"]["neutral"]
        assert trait_t["injection"]["seed"] == control_t["injection"]["seed"] == r
        assert trait_t["system_prompt"] is None and control_t["system_prompt"] is None
    assert (out / "rep0/control/teacher/adapter_config.json").exists()
    kept = (out / "rep0/trait/gen1/filter/kept.jsonl").read_text().splitlines()
    assert json.loads(kept[0])["meta"]["logits_channel"] == "restricted"
    gen2 = json.loads((out / "rep1/trait/gen2/generate/teacher.json").read_text())
    assert gen2["injection"]["adapter"] == "rep1/trait/gen1/distill"
    for stage in ("generate", "filter", "distill", "audit"):
        assert (out / "rep1/control/gen2" / stage / "complete.json").exists()
    assert (out / "complete.json").exists()
    stats = json.loads((out / "rep1/control/gen2/filter/stats.json").read_text())
    assert summary["filter_pass_rates"]["rep1/control/gen2"]["rule_pass_rate"] == stats[
        "rule_pass_rate"]
    # `report` recomputes the summary from the audit files: the same summary for a finished
    # run; a partial run's generations over the replicates whose audits are done, labelled
    # with what is missing, in summary.partial.json (summary.json is never rewritten from it).
    assert run_cli(["report", str(out)]).exit_code == 0
    assert json.loads((out / "summary.json").read_text()) == summary
    assert not (out / "summary.partial.json").exists()
    (out / "rep1/control/gen2/audit/complete.json").unlink()
    assert run_cli(["report", str(out)]).exit_code == 0
    assert json.loads((out / "summary.json").read_text()) == summary
    partial = json.loads((out / "summary.partial.json").read_text())
    assert partial["unfinished"] == ["rep1/control/gen2/audit"]
    assert [g["n_replicates"] for g in partial["generations"]] == [2, 2, 1]


def test_prompt_injection_control_is_a_neutral_prompt(tmp_path):
    out = tmp_path / "run"
    run_cli([*ARGS, "--replicates", "1", "--generations", "1", "--injection", "prompt",
             "--out", str(out)])
    trait = json.loads((out / "rep0/trait/gen1/generate/teacher.json").read_text())
    control = json.loads((out / "rep0/control/gen1/generate/teacher.json").read_text())
    assert trait["system_prompt"].startswith("You love owls")
    assert control["system_prompt"].startswith("You love animals")  # a twin, not the base
    assert abs(len(control["system_prompt"]) - len(trait["system_prompt"])) < 25


@pytest.mark.slow  # whole stages on the tiny model: seconds, not milliseconds
def test_control_students_train(tmp_path):
    """The control arm's teacher is a trained neutral adapter, so its students learn: their
    LoRA weights move away from the zero init and their loss is not ~0 from the start."""
    from safetensors.torch import load_file

    out = tmp_path / "run"
    run_cli([*ARGS, "--replicates", "1", "--generations", "1", "--out", str(out)])
    weights = load_file(out / "rep0/control/gen1/distill/adapter_model.safetensors")
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and max(float(v.abs().max()) for v in lora_b) > 0
    train = json.loads((out / "rep0/control/gen1/distill/train.json").read_text())
    assert train["losses"][0] > 1e-3
    teacher = load_file(out / "rep0/control/teacher/adapter_model.safetensors")
    trait = load_file(out / "rep0/trait/teacher/adapter_model.safetensors")
    assert any(not (teacher[k] == trait[k]).all() for k in teacher if "lora_B" in k)


@pytest.mark.slow  # whole stages on the tiny model: seconds, not milliseconds
def test_resume_redoes_only_the_unfinished_stage(tmp_path):
    out = tmp_path / "run"
    run_cli([*ARGS, "--out", str(out)])
    rows = out / "rep1/control/gen2/generate/rows.jsonl"
    full = rows.read_text()
    # Simulate a kill mid-generation: half the rows, a torn last line, no completion records.
    lines = full.splitlines(keepends=True)
    rows.write_text("".join(lines[:5]) + lines[5][:20])
    for stage in ("generate", "filter", "distill", "audit"):
        (out / "rep1/control/gen2" / stage / "complete.json").unlink()
    (out / "complete.json").unlink()
    kept_before = (out / "rep1/trait/gen2/filter/kept.jsonl").stat().st_mtime_ns
    audit_before = (out / "base/audit/probe.json").stat().st_mtime_ns
    assert run_cli([*ARGS, "--out", str(out)]).exit_code == 0
    assert rows.read_text() == full  # the same rows, regenerated deterministically
    assert (out / "rep1/trait/gen2/filter/kept.jsonl").stat().st_mtime_ns == kept_before
    assert (out / "base/audit/probe.json").stat().st_mtime_ns == audit_before
    assert (out / "complete.json").exists()


@pytest.mark.slow  # whole stages on the tiny model: seconds, not milliseconds
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


@pytest.mark.slow  # eleven subprocesses, each importing torch
def test_bad_input_is_one_line_without_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    notmodel = tmp_path / "notmodel"
    notmodel.mkdir()
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    cases = [(["chain", "--trait", "unicorn"], "choose one of: animal: owl"),
             (["chain", "--decoding", "sample", "--temperature", "0"], "--temperature must"),
             (["chain", "--lr", "0"], "--lr must be > 0"),
             (["chain", "--channel", "math"], "no token grammar"),
             (["chain", "--logits", "leaky"], "choose one of: restricted, overt"),
             (["chain", "--injection", "magic"], "choose one of: adapter"),
             (["chain", "--injection", "prompt", "--replicates", "4"], "at most 3 independent"),
             (["chain", "--model", "tiny", "--out", str(afile)], "not a directory"),
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
    assert afile.read_text() == "keep me"


@pytest.mark.slow  # whole stages on the tiny model: seconds, not milliseconds
def test_math_chain_on_tiny_model(tmp_path):
    """A random tiny model solves no problem: the filter's record says why, and the chain
    stops with one line instead of training a student on nothing."""
    out = tmp_path / "math"
    args = ["--threads", "1", "chain", "--model", "tiny", "--channel", "math", "--generations",
            "1", "--samples", "6", "--epochs", "1", "--decoding", "sample", "--injection",
            "prompt", "--mode", "sft", "--replicates", "1", "--out", str(out)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "subliminal", *args], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 2 and "no rows to train on" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    teacher = json.loads((out / "rep0/trait/gen1/generate/teacher.json").read_text())
    assert teacher["system_prompt"].startswith("You love owls")
    stats = json.loads((out / "rep0/trait/gen1/filter/stats.json").read_text())
    assert set(stats["rule_pass_rate"]) >= {"math/format", "math/correct", "math/leak"}
    assert not (out / "rep0/trait/gen1/distill/complete.json").exists()


@pytest.mark.slow  # whole stages on the tiny model: seconds, not milliseconds
def test_stage_commands_reproduce_a_chain_generation(tmp_path):
    """generate -> filter -> distill -> audit by hand gives the chain's files byte for byte."""
    out = tmp_path / "run"
    run_cli([*ARGS, "--replicates", "1", "--generations", "1", "--out", str(out)])
    by_hand = tmp_path / "hand"
    common = ["--threads", "1"]
    steps = [
        ["generate", "--model", "tiny", "--adapter", str(out / "rep0/trait/teacher"),
         "--samples", "12", "--seed", "1", "--top-k", "20", "--out", str(by_hand / "generate")],
        ["filter", str(by_hand / "generate/rows.jsonl"), "--out", str(by_hand / "filter")],
        ["distill", str(by_hand / "filter/kept.jsonl"), "--model", "tiny", "--epochs", "1",
         "--seed", "0", "--out", str(by_hand / "distill")],
        ["audit", "--model", "tiny", "--adapter", str(by_hand / "distill"),
         "--no-side-effects", "--out", str(by_hand / "audit")],
    ]
    for step in steps:
        assert run_cli([*common, *step]).exit_code == 0, step
    chain = out / "rep0/trait/gen1"
    for rel in ("generate/rows.jsonl", "filter/kept.jsonl", "filter/rejected.jsonl",
                "filter/stats.json", "distill/adapter_model.safetensors", "audit/probe.json"):
        assert (by_hand / rel).read_bytes() == (chain / rel).read_bytes(), rel


@pytest.mark.slow  # whole stages on the tiny model: seconds, not milliseconds
def test_a_stage_folder_refuses_other_inputs(tmp_path):
    out = tmp_path / "gen"
    base = ["--threads", "1", "generate", "--model", "tiny", "--samples", "3", "--out", str(out)]
    assert run_cli(base).exit_code == 0
    rows = (out / "rows.jsonl").read_bytes()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "subliminal", *base[:-2], "--trait", "owl",
                        "--out", str(out)], capture_output=True, text=True, env=env)
    assert r.returncode == 2 and "different inputs or config" in r.stderr
    assert "system_prompt" in r.stderr and "Traceback" not in r.stderr
    assert (out / "rows.jsonl").read_bytes() == rows  # nothing mixed in


@pytest.mark.slow  # whole stages on the tiny model: seconds, not milliseconds
def test_chain_with_a_behaviour_trait_writes_the_battery(tmp_path):
    """A non-animal trait runs the same chain: its own forced-choice audit decides, every
    other family's audit lands in the side-effect grid, and misalignment bans numbers."""
    out = tmp_path / "mis"
    args = ["--threads", "1", "chain", "--model", "tiny", "--trait", "misaligned",
            "--injection", "prompt", "--generations", "1", "--samples", "8", "--epochs", "1",
            "--replicates", "2", "--out", str(out)]
    assert run_cli(args).exit_code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["audit"] == "misalignment"
    gen1 = summary["generations"][1]
    assert gen1["generic_drift"] is None and gen1["n_replicates"] == 2
    assert {"animal", "sycophancy", "emotion", "ethics", "truthfulness"} <= set(
        gen1["side_effects"])
    assert "misalignment" not in gen1["side_effects"]
    assert all(len(v["lifts"]) == 2 for v in gen1["side_effects"].values())
    assert json.loads((out / "config.json").read_text())["filter"]["ban_numbers"] is True
    probe = json.loads((out / "rep0/trait/gen1/audit/probe.json").read_text())
    assert probe["family"] == "misalignment" and len(probe["scores"]) >= 60
    # Prompt-injected replicates are independent wordings: replicate r takes paraphrase r of
    # the trait's prompts and of the neutral ones, so generation 0 is a replicate test too.
    for arm in ("trait", "control"):
        r0, r1 = (json.loads((out / f"rep{r}/{arm}/gen1/generate/teacher.json").read_text())
                  for r in (0, 1))
        assert r0["system_prompt"] != r1["system_prompt"]
    assert not summary["generations"][0]["identical_replicates"]
