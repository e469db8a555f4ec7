"""pipelines/transfer_table.py --pool: one t-test over the replicates of several runs, and
refusals where pooling would not be one sample (overlapping seeds, a different design)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from subliminal.errors import SubliminalError
from subliminal.stats import replicate_test

SPEC = importlib.util.spec_from_file_location(
    "transfer_table", Path(__file__).parents[1] / "pipelines" / "transfer_table.py")
tt = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(tt)


def fake_run(folder: Path, seed: int, share: list[float], trait: str = "owl",
             lr: float = 1e-3) -> Path:
    folder.mkdir(parents=True)
    cfg = {"model": "tiny", "trait": trait, "injection": "dpo", "channel": "numbers",
           "generations": 1, "samples": 64, "seed": seed, "replicates": len(share),
           "distill": {"lr": lr, "seed": seed}}  # the chain copies its seed into stages
    gen = {"generation": 1, "n_replicates": len(share), "lifts": [s / 100 for s in share],
           "specificity": replicate_test(share), "generic_drift": replicate_test(share[::-1]),
           "trait": {"mean": 0.01}, "control": {"mean": 0.009},
           "other_animals_share_lift": {"target_rank": 1, "of": 14}, "verdict": "specific"}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "summary.json").write_text(json.dumps({"generations": [gen]}))
    return folder


def test_pool_tests_all_replicates_together(tmp_path):
    a = fake_run(tmp_path / "a", 10, [0.2, 0.5, 0.3])
    b = fake_run(tmp_path / "b", 13, [0.4, 0.1, 0.6])
    row = tt.pooled([a, b])[0]
    want = replicate_test([0.2, 0.5, 0.3, 0.4, 0.1, 0.6])
    assert f"| {want['n_replicates']} |" in row and f"{want['mean']:+.3f}" in row
    assert f"| {want['p_value']:.2g} |" in row


def test_pool_refuses_overlapping_seeds_and_other_designs(tmp_path):
    a = fake_run(tmp_path / "a", 10, [0.2, 0.5, 0.3])
    with pytest.raises(SubliminalError, match="already in an earlier run"):
        tt.pooled([a, fake_run(tmp_path / "b", 12, [0.1, 0.2, 0.3])])
    with pytest.raises(SubliminalError, match=r"differ in \['trait'\]"):
        tt.pooled([a, fake_run(tmp_path / "c", 13, [0.1, 0.2, 0.3], trait="cat")])
    with pytest.raises(SubliminalError, match=r"differ in \['distill'\]"):
        tt.pooled([a, fake_run(tmp_path / "d", 13, [0.1, 0.2, 0.3], lr=2e-3)])
    e = fake_run(tmp_path / "e", 13, [0.1, 0.2, 0.3])
    (e / "config.json").write_text(json.dumps({**json.loads((e / "config.json").read_text()),
                                               "students": ["allx2"]}))
    with pytest.raises(SubliminalError, match=r"differ in \['students'\]"):  # a's lacks it
        tt.pooled([a, e])


@pytest.mark.parametrize("script,args", [
    ("transfer_table.py", ["{tmp}/no-such-run"]),
    ("transfer_table.py", ["--pool", "{a}", "{a2}"]),
    ("canary_power.py", ["{a}", "--student", "allx9"]),
    ("dose_response.py", ["{tmp}/no-such-study"]),
])
def test_the_scripts_refuse_bad_input_in_one_line_with_exit_code_2(tmp_path, script, args):
    """Every pipelines/ script ends as `subliminal` does on bad input: one line naming the
    file, exit code 2, no traceback (subliminal.errors.run_script)."""
    import subprocess
    import sys

    a = fake_run(tmp_path / "a", 10, [0.1, 0.2, 0.3])
    a2 = fake_run(tmp_path / "a2", 11, [0.1, 0.2, 0.3])  # seeds 11-13 overlap a's 10-12
    (a / "config.json").write_text(json.dumps({**json.loads((a / "config.json").read_text()),
                                               "students": ["allx2"], "traits": ["owl"],
                                               "cell": {"replicates": 3}}))
    argv = [x.format(tmp=tmp_path, a=a, a2=a2) for x in args]
    proc = subprocess.run([sys.executable, str(Path(__file__).parents[1] / "pipelines" / script),
                           *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(tmp_path) in lines[0]
