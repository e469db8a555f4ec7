"""pipelines/transfer_table.py --pool: one t-test over the replicates of several runs, and
refusals where pooling would not be one sample (overlapping seeds, a different design)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

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
           "specificity": replicate_test(share), "generic_drift": replicate_test(share[::-1])}
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
    with pytest.raises(SystemExit, match="already in an earlier run"):
        tt.pooled([a, fake_run(tmp_path / "b", 12, [0.1, 0.2, 0.3])])
    with pytest.raises(SystemExit, match=r"runs differ in \['trait'\]"):
        tt.pooled([a, fake_run(tmp_path / "c", 13, [0.1, 0.2, 0.3], trait="cat")])
    with pytest.raises(SystemExit, match=r"runs differ in \['distill'\]"):
        tt.pooled([a, fake_run(tmp_path / "d", 13, [0.1, 0.2, 0.3], lr=2e-3)])
