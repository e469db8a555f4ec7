"""Safety: nothing a user hands the lab is unpickled, one process per run folder, bad model
specs and bad inputs are one line (exit 2) and leave what was written untouched."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from subliminal.distill import DistillConfig, train_student
from subliminal.errors import SubliminalError
from subliminal.records import init_run, locked, read_jsonl, unlock

ROOT = Path(__file__).resolve().parent.parent


class Payload:
    """Unpickling this creates `marker`: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps({"trainable": Payload(marker)}))


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert msg and "\n" not in msg, msg
    return msg


ROWS = [{"id": i, "prompt": [{"role": "user", "content": f"q{i}"}],
         "completion": [{"role": "assistant", "content": "1, 2"}], "meta": {}}
        for i in range(4)]


def test_planted_checkpoint_pickle_is_refused_never_loaded(tmp_path):
    marker = tmp_path / "pwned"
    plant(tmp_path / "student" / "checkpoint.pt", marker)
    with pytest.raises(SubliminalError) as err:
        train_student("tiny", ROWS, DistillConfig(epochs=1, batch_size=4, grad_accum=1),
                      tmp_path / "student")
    assert "checkpoint.pt" in one_line(err) and "never loaded" in str(err.value)
    assert not marker.exists()
    assert not (tmp_path / "student" / "complete.json").exists()


def test_pickle_posing_as_a_safetensors_checkpoint_is_an_error(tmp_path):
    from subliminal.records import content_hash, write_json

    marker, ckpt = tmp_path / "pwned", tmp_path / "student" / "checkpoint"
    for name in ("w.safetensors", "o.safetensors"):
        plant(ckpt / name, marker)
    sha = {k: content_hash((ckpt / f).read_bytes())
           for k, f in (("weights", "w.safetensors"), ("optimizer", "o.safetensors"))}
    write_json(ckpt / "checkpoint.json", {"epoch": 1, "losses": [1.0], "sha256": sha,
                                          "files": {"weights": "w.safetensors",
                                                    "optimizer": "o.safetensors"}})
    with pytest.raises(SubliminalError) as err:
        train_student("tiny", ROWS, DistillConfig(epochs=2, batch_size=4, grad_accum=1),
                      tmp_path / "student")
    assert "unreadable checkpoint" in one_line(err)
    assert not marker.exists()


def test_adapter_and_model_pickles_are_never_loaded(tmp_path):
    from subliminal.models import load_model, tiny_model

    marker = tmp_path / "pwned"
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    plant(adapter / "adapter_model.bin", marker)
    with pytest.raises(SubliminalError) as err:
        load_model("tiny", adapter=adapter)
    assert "not safetensors" in one_line(err)
    model, tok = tiny_model()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    plant(folder / "pytorch_model.bin", marker)
    with pytest.raises(SubliminalError) as err:
        load_model(str(folder))
    assert str(folder) in one_line(err)
    assert not marker.exists()


def test_unknown_architecture_and_unreachable_hub_are_one_line(tmp_path, monkeypatch):
    from subliminal.models import load_model

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-arch"}))
    with pytest.raises(SubliminalError) as err:
        load_model(str(tmp_path))
    assert "unknown model architecture 'no-such-arch'" in one_line(err)
    # Online mode, hub endpoint refusing connections: refused at once, not after retries.
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(SubliminalError) as err:
        load_model("someorg/no-such-model")
    assert "not in the local Hugging Face cache" in one_line(err)


HOLD = """
import sys
from subliminal.records import init_run, lock
init_run(sys.argv[1], {"a": 1})
lock(sys.argv[2])
print("held", flush=True)
sys.stdin.read()  # hold until the test closes our stdin
"""


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    run, stage = tmp_path / "run", tmp_path / "stage"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLD), str(run), str(stage)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert child.stdout.readline().strip() == "held"
        for attempt in (lambda: init_run(run, {"a": 1}), lambda: locked(stage).__enter__()):
            with pytest.raises(SubliminalError) as err:
                attempt()
            assert f"pid {child.pid} on " in one_line(err) and "since 20" in str(err.value)
        assert json.loads((run / "config.json").read_text()) == {"a": 1}
    finally:
        child.stdin.close()
        child.wait(timeout=30)
    init_run(run, {"a": 1})  # the holder is gone (however it ended): the lock is free
    with locked(stage):
        with locked(stage):  # re-entrant within one process
            pass
    unlock(run)


def test_readers_keep_the_first_of_repeated_ids(tmp_path):
    from subliminal.records import append_jsonl, recover_jsonl

    path = tmp_path / "rows.jsonl"
    append_jsonl(path, [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}])
    append_jsonl(path, [{"id": 1, "v": "again"}, {"id": 3, "v": "c"}])  # a second writer
    assert [(r["id"], r["v"]) for r in read_jsonl(path)] == [(1, "a"), (2, "b"), (3, "c")]
    assert [r["id"] for r in recover_jsonl(path)] == [1, 2, 3]


# --- bad inputs: one line naming file and row, nothing written ------------------------------

def bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (path, fragment the message must hold). Built fresh in `tmp`."""
    def jl(name, rows):
        (tmp / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        return tmp / name

    good = {"prompt": "p", "completion": "1, 2"}
    (tmp / "folder").mkdir()
    (tmp / "empty.jsonl").write_text("")
    (tmp / "broken.jsonl").write_text(json.dumps(good) + "\n{broken\n")
    (tmp / "latin1.jsonl").write_bytes(json.dumps(good).encode() + b'\n{"prompt": "caf\xe9"}\n')
    return {
        "directory": (tmp / "folder", "not a saved datasets folder"),
        "missing": (tmp / "nope.jsonl", "no such file or folder"),
        "empty": (tmp / "empty.jsonl", "no usable rows"),
        "number completion": (jl("num.jsonl", [good, {"prompt": "p", "completion": 42}]),
                              "row 2: completion must be a string"),
        "no prompt/completion": (jl("cols.jsonl", [{"question": "q", "answer": "a"}]),
                                 "row 1: no prompt/completion or messages column"),
        "text only": (jl("text.jsonl", [{"text": "1, 2"}]), "row 1: no prompt/completion"),
        "broken JSON": (tmp / "broken.jsonl", "row 2: broken JSON"),
        "not UTF-8": (tmp / "latin1.jsonl", "row 2: not UTF-8"),
        "no assistant": (jl("msg.jsonl", [{"messages": [{"role": "user", "content": "u"}]}]),
                         "row 1: messages hold no assistant message"),
    }


@pytest.mark.parametrize("name", ["directory", "missing", "empty", "number completion",
                                  "no prompt/completion", "text only", "broken JSON",
                                  "not UTF-8", "no assistant"])
def test_each_bad_input_is_one_line_naming_the_file(tmp_path, name):
    from subliminal.rows import training_rows

    path, fragment = bad_inputs(tmp_path)[name]
    with pytest.raises(SubliminalError) as err:
        training_rows(path)
    assert fragment in one_line(err) and str(path) in str(err.value)


def test_oversized_row_names_the_limit(tmp_path):
    from subliminal.rows import RowsConfig, training_rows

    path = tmp_path / "big.jsonl"
    path.write_text(json.dumps({"prompt": "p", "completion": "1" * 5000}) + "\n")
    with pytest.raises(SubliminalError) as err:
        training_rows(path, RowsConfig(max_row_bytes=1000))
    assert "row 1: row is 5,0" in one_line(err) and "1,000-byte limit" in str(err.value)


def test_cli_exit_2_one_line_and_earlier_output_untouched(tmp_path):
    """Through the installed entry point: the scan reads via the row layer."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier result")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "subliminal", "scan", str(tmp_path / "x.jsonl"),
                           "--out", str(out)], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "x.jsonl" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "earlier result"


@pytest.mark.parametrize("command", ["filter", "distill"])
def test_filter_and_distill_commands_use_the_row_layer(tmp_path, command):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from subliminal.cli import app

    pq.write_table(pa.Table.from_pylist([{"prompt": "p", "completion": 7}]), tmp_path / "d.pq")
    result = CliRunner().invoke(app, [command, str(tmp_path / "d.pq"), "--out",
                                      str(tmp_path / "o"), "--model", "tiny"][
        : 4 if command == "filter" else 6])
    assert isinstance(result.exception, SubliminalError), result.output
    msg = str(result.exception)
    assert "broken JSON" not in msg and "row 1: completion must be a string" in msg
    assert not (tmp_path / "o").exists()
