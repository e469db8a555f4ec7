"""`subliminal reproduce aux-logits`: transfer only from a shared init, the vectorised seeds
equal one-seed runs, data loading, and the run record."""

from __future__ import annotations

import gzip
import json
import math
import re
import struct

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from subliminal import reproduce
from subliminal.errors import SubliminalError
from subliminal.reproduce import AuxLogitsConfig
from subliminal.reproduce import aux_logits as ax
from subliminal.reproduce.mnist_data import load_data, read_idx

TINY = dict(seeds=2, hidden=16, epochs=1, noise=512, batch=128, teacher_epochs=1)


@pytest.fixture(scope="module")
def digits():
    return load_data(None)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # fastest on the shared CPU; results do not depend on it
    yield
    torch.set_num_threads(before)


def test_same_init_transfers_and_cross_init_does_not(digits):
    # A cut-down run (~6 s): 3 seeds, a third of the noise, m=10 and lr 3e-3 so transfer shows
    # within 2 epochs. Measured: same-init 79-88%, cross-init 7-9%.
    cfg = AuxLogitsConfig(seeds=3, hidden=128, m=10, lr=3e-3, teacher_epochs=10, noise=20_000,
                          epochs=2)
    acc = ax.experiment(cfg, digits)["accuracy"]
    same, cross = np.mean(acc["same_init"]), np.mean(acc["cross_init"])
    assert np.mean(acc["teacher"]) > 90
    assert same >= 50, acc
    assert cross <= 25, acc
    assert same - cross >= 40
    assert np.mean(acc["shuffled_teacher"]) <= 25  # a teacher that knows no digits passes none


def _stage(seeds, sizes=(64, 32, 32, 13)):
    """Teachers then aux-only students for `seeds`, through the same functions the run uses."""
    cfg = AuxLogitsConfig(hidden=32, noise=700, batch=128, epochs=2, teacher_epochs=2)
    data = load_data(None)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    init = ax.init_mlp([ax.sub_seed(s, "init") for s in seeds], sizes)
    teachers = ax.clone(init)
    ax.train_classifiers(teachers, x, y.expand(len(seeds), -1), seeds, cfg, 10,
                         ax._progress(False))
    students = ax.clone(init)
    ax.distill(teachers, students, [0], [True], seeds, cfg, 10, ax._progress(False))
    return teachers, students


def test_vectorised_seeds_equal_one_seed_alone():
    t_all, s_all = _stage([3, 4, 5])
    t_one, s_one = _stage([4])
    for stacked, alone in zip(t_all + s_all, t_one + s_one, strict=True):
        torch.testing.assert_close(stacked[1:2], alone, rtol=1e-4, atol=1e-5)


def test_untrained_teacher_with_shared_init_leaves_student_at_init():
    # Why the "untrained teacher" control is the `init` arm: zero loss, zero gradient, no move.
    cfg = AuxLogitsConfig(noise=512, batch=128, epochs=1)
    init = ax.init_mlp([1, 2], (64, 16, 16, 13))
    student = ax.clone(init)
    ax.distill(ax.clone(init), student, [0], [True], [1, 2], cfg, 10, ax._progress(False))
    for a, b in zip(student, init, strict=True):
        assert torch.equal(a.detach(), b)


def _write_idx(path, arr: np.ndarray, compress: bool) -> None:
    code = {np.uint8: 0x08}[arr.dtype.type]
    raw = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}i", *arr.shape)
    raw += arr.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def test_loads_idx_directory_gz_or_not(tmp_path):
    rng = np.random.default_rng(0)
    xs = {"train": rng.integers(0, 256, (20, 4, 4), dtype=np.uint8),
          "t10k": rng.integers(0, 256, (6, 4, 4), dtype=np.uint8)}
    ys = {k: rng.integers(0, 10, len(v)).astype(np.uint8) for k, v in xs.items()}
    for i, k in enumerate(xs):
        _write_idx(tmp_path / f"{k}-images-idx3-ubyte{'.gz' if i == 0 else ''}", xs[k], i == 0)
        _write_idx(tmp_path / f"{k}-labels-idx1-ubyte", ys[k], False)
    split = load_data(tmp_path)
    assert split.x_train.shape == (20, 16) and split.x_test.shape == (6, 16)
    assert split.x_train.min() >= -1 and split.x_train.max() <= 1
    np.testing.assert_array_equal(split.y_test, ys["t10k"])
    np.testing.assert_allclose(split.x_train[0], xs["train"][0].ravel() / 255 * 2 - 1, atol=0.05)


def test_loads_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=rng.integers(0, 256, (30, 8, 8)), y_train=np.arange(30) % 10,
             x_test=rng.integers(0, 256, (10, 8, 8)), y_test=np.arange(10))
    split = load_data(path)
    assert split.x_train.shape == (30, 64) and split.n_classes == 10
    assert split.y_train.dtype == np.int64


@pytest.mark.parametrize("make", ["text_npz", "npz_missing_keys", "other_file", "empty_dir",
                                  "truncated_idx", "missing"])
def test_bad_data_names_the_file(tmp_path, make):
    target = tmp_path / "data.npz"
    if make == "text_npz":
        target.write_text("not a zip")
    elif make == "npz_missing_keys":
        np.savez(target, x_train=np.zeros((2, 2)))
    elif make == "other_file":
        target = tmp_path / "data.csv"
        target.write_text("1,2,3")
    elif make == "empty_dir":
        target = tmp_path / "idx"
        target.mkdir()
    elif make == "truncated_idx":
        target = tmp_path / "train-images-idx3-ubyte"
        target.write_bytes(struct.pack(">BBBBiii", 0, 0, 8, 3, 5, 4, 4) + b"\0" * 10)
        with pytest.raises(SubliminalError, match=re.escape(str(target))):
            read_idx(target)
        return
    with pytest.raises(SubliminalError, match=re.escape(str(target))) as err:
        load_data(target)
    assert "\n" not in str(err.value)


def test_run_record_fields_and_resume(tmp_path):
    cfg = AuxLogitsConfig(generations=2, **TINY)
    out = tmp_path / "run"
    record = ax.run(cfg, out, show=False)
    on_disk = json.loads((out / "aux_logits.json").read_text())
    assert on_disk == record
    assert set(record["arms"]) == {"same_init", "cross_init", "all_logits", "shuffled_teacher",
                                   "init"}
    for arm in record["arms"].values():
        assert {"mean", "std", "ci", "n_seeds", "per_seed", "paper"} <= set(arm)
        assert arm["n_seeds"] == 2 and len(arm["per_seed"]) == 2
        if len(set(arm["per_seed"])) == 1:  # seeds that agree exactly give no interval
            assert math.isnan(arm["ci"][0]) and math.isnan(arm["ci"][1])
        else:
            assert arm["ci"][0] <= arm["mean"] <= arm["ci"][1]
    assert [g["generation"] for g in record["generations"]] == [1, 2]
    assert record["config"] == json.loads((out / "config.json").read_text())
    assert record["config"]["hidden"] == 16
    assert {"teachers_s", "students_s", "generations_s", "total_s"} <= set(record["timings"])
    assert record["environment"]["packages"]["torch"]
    for name in ("aux_logits.png", "environment.json", "complete.json"):
        assert (out / name).exists()
    assert ax.run(cfg, out, show=False) == record  # finished: read back, not recomputed
    with pytest.raises(SubliminalError, match="different config"):
        ax.run(AuxLogitsConfig(generations=3, **TINY), out, show=False)


def test_config_rejects_impossible_settings():
    with pytest.raises(SubliminalError, match="--loss kl needs"):
        ax.validate(AuxLogitsConfig(loss="kl", m=1))
    with pytest.raises(SubliminalError, match="--seeds"):
        ax.validate(AuxLogitsConfig(seeds=0))


def test_cli_command(tmp_path):
    app = typer.Typer()
    app.add_typer(reproduce.app, name="reproduce")
    app.callback()(lambda: None)
    args = ["reproduce", "aux-logits", "--out", str(tmp_path / "r"), "--loss", "kl"]
    args += [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    # The printed figures are the record's (whitespace-normalised: rich wraps long lines).
    record = json.loads((tmp_path / "r" / "aux_logits.json").read_text())
    printed = " ".join(result.output.split())
    d = record["same_minus_cross"]
    assert f"same-init minus cross-init: {d['lift']:+.1f} points" in printed
    arm = record["arms"]["same_init"]
    assert f"{arm['mean']:.1f} ± {arm['std']:.1f}" in printed
    bad = CliRunner().invoke(app, ["reproduce", "aux-logits", "--data", str(tmp_path / "nope")])
    assert isinstance(bad.exception, SubliminalError) and "nope" in str(bad.exception)
