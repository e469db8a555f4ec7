"""Committed evidence recomputes: every study or summary record under docs/evidence that
holds its probes is what those probes give, and the copy of a fresh run is enough."""

import json
import math
from pathlib import Path

import pytest

from subliminal.evidence import audits, export, recompute, sampled_readout
from subliminal.schema import VERSION, load

EVIDENCE = Path(__file__).resolve().parent.parent / "docs" / "evidence"


def same(a, b, path="") -> None:
    """Equal JSON trees, floats to 1e-9 relative (NaN equals NaN)."""
    if isinstance(a, dict):
        assert set(a) == set(b), path
        for k in a:
            same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and isinstance(b, float):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-9,
                                                                  abs_tol=1e-12), path
    else:
        assert a == b, path


def committed() -> list[Path]:
    return sorted(p.parent for p in EVIDENCE.rglob("config.json")
                  if any(p.parent.glob("rep*/*/gen*/audit*/probe.json")))


@pytest.mark.parametrize("folder", committed(), ids=lambda p: str(p.relative_to(EVIDENCE)))
def test_committed_records_recompute_from_their_probes(folder):
    name, fresh = recompute(folder)  # the bodies: a record of any version holds the same
    same(fresh.body(), load(folder / name).body())


def sampled_records() -> list[Path]:
    return sorted(EVIDENCE.glob("*/sampled*.json"))


@pytest.mark.parametrize("record", sampled_records(),
                         ids=lambda p: str(p.relative_to(EVIDENCE)))
def test_committed_sampled_readouts_recompute_from_their_probes(record):
    student = record.stem.removeprefix("sampled").removeprefix("-")
    stored = json.loads(record.read_text())
    same(sampled_readout(record.parent, student), {k: v for k, v in stored.items()
                                                   if k != "samples"})


def test_sampled_readout_finds_a_planted_diagonal(tmp_path):
    """Mention rates where each teacher's students name its own animal more: D > 0, every
    replicate; no raw-log-P test on rates (a rate of 0 has no log)."""
    from subliminal.layout import sampled_folder
    from subliminal.trait import CATALOGUE

    traits, animals = ["owl", "cat"], list(CATALOGUE)
    (tmp_path / "config.json").write_text(json.dumps(
        {"traits": traits, "students": ["allx2"], "cell": {"replicates": 3}}))
    for r in range(3):
        for arm in [*traits, "control"]:
            rate = [0.02 * (1 + r) + (0.05 if a == arm else 0.0) for a in animals]
            folder = sampled_folder(tmp_path, r, arm, "allx2")
            folder.mkdir(parents=True)
            (folder / "probe.json").write_text(json.dumps(
                {"probe": "sampled", "samples": 100, "animals": animals,
                 "probs": [rate, [0.0] * len(animals)]}))
    out = sampled_readout(tmp_path, "allx2")
    assert out["diagonal_test"]["lifts"] == pytest.approx([0.025] * 3)
    assert out["raw_logp_diagonal_test"] is None and out["n_replicates"] == 3


@pytest.mark.slow  # whole stages on the tiny model: seconds, not milliseconds
def test_a_study_copy_recomputes_and_a_changed_probe_changes_it(tmp_path):
    from typer.testing import CliRunner

    from subliminal.cli import app

    run = tmp_path / "run"
    args = ["--threads", "1", "study", "--model", "tiny", "--traits", "owl,cat",
            "--replicates", "2", "--samples", "6", "--epochs", "1", "--out", str(run)]
    assert CliRunner().invoke(app, args).exit_code == 0
    copy = tmp_path / "copy"
    export(run, copy)
    assert not list(copy.rglob("*.safetensors")) and not list(copy.rglob("*.jsonl"))
    name, fresh = recompute(copy)
    same(fresh.body(), load(run / "study.json").body())
    assert json.loads((run / "study.json").read_text())["version"] == fresh.version == VERSION
    probe = copy / "rep1/owl/gen1/audit/probe.json"
    data = json.loads(probe.read_text())
    j = data["animals"].index("owl")
    data["probs"] = [[p * (5.0 if i == j else 1.0) for i, p in enumerate(row)]
                     for row in data["probs"]]
    probe.write_text(json.dumps(data))
    changed = recompute(copy)[1]["students"]["own"]["diagonal_test"]["lifts"]
    assert changed[1] > fresh["students"]["own"]["diagonal_test"]["lifts"][1] + 0.5
    # An unfinished study reads out what is finished, labelled: a missing audit takes its
    # replicate out of that recipe's read-out (the teachers keep theirs) and is listed.
    import shutil

    shutil.rmtree(copy / "rep1/cat/gen1/audit")
    name, part = recompute(copy)
    assert name == "study.partial.json" and part["unfinished"] == ["own: rep1"]
    assert part["students"]["own"]["n_replicates"] == 1
    assert part["teachers"]["n_replicates"] == 2


@pytest.mark.parametrize("record", sorted((EVIDENCE / "canary-power").glob("*.json")),
                         ids=lambda p: p.stem)
def test_committed_canary_power_records_recompute(record):
    """Each canary-power record is what its study's committed probes give."""
    from subliminal.scan.canary_power import canary_power

    stored = json.loads(record.read_text())
    folder = EVIDENCE / stored.pop("study")
    cfg = json.loads((folder / "config.json").read_text())
    seeds = tuple(int(n) for n in next(iter(stored["traits"].values()))["power"])
    same(canary_power(audits(folder), cfg["traits"], list(range(cfg["cell"]["replicates"])),
                      stored["student"], seeds), stored)
