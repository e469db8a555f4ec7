"""Hostile inputs (issue 25), through the CLI's entry point on the tiny model: each is one line
naming the path, exit 2 and nothing written; a finished run checks its own config; an adapter
is checked against the base before any work; records are portable and adapter hashes
canonical; the scan's verdict leads with an overt leak; `report` never passes a partial run
off as a finished one."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from subliminal.cli import app
from subliminal.cli import run as cli_run

CHAIN = ["chain", "--model", "tiny", "--generations", "1", "--samples", "6", "--epochs", "1",
         "--replicates", "1", "--no-side-effects"]
AUDIT = ["audit", "--model", "tiny", "--no-side-effects"]
STUDENT = "rep0/trait/gen1/distill"


def main(args: list, capsys) -> tuple[int, str]:
    """`subliminal --threads 1 ARGS` through `cli.run` in this process (so monkeypatches
    apply): its exit code and stderr."""
    argv = sys.argv
    sys.argv = ["subliminal", "--threads", "1", *map(str, args)]
    try:
        cli_run()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    finally:
        sys.argv = argv
    return code, capsys.readouterr().err


def refused(args: list, capsys, *needles: str) -> str:
    """Exit 2 with exactly one `error:` line, the last, holding every needle; no traceback."""
    code, err = main(args, capsys)
    errors = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    assert "Traceback" not in err and all(n in errors[0] for n in needles), (needles, err)
    return errors[0]


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*"))


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished tiny chain (about 15 s): the students, rows and records the cases use."""
    out = tmp_path_factory.mktemp("hostile") / "run"
    result = CliRunner().invoke(app, ["--threads", "1", *CHAIN, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


# --- 1. a read-only or full destination -------------------------------------------------------

@pytest.fixture
def read_only(tmp_path, monkeypatch) -> Path:
    """A folder nothing can be written under: by its mode for a normal user; as root (who
    writes through modes) by refusing mkdir and open-for-writing below it with EROFS, as a
    read-only mount would."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    real_mkdir, real_open = os.mkdir, os.open

    def guard(path) -> None:
        if Path(os.path.abspath(path)).is_relative_to(folder):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    def mkdir(path, *args, **kwargs):
        guard(path)
        return real_mkdir(path, *args, **kwargs)

    def open_(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            guard(path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "open", open_)
    yield folder


def command(name: str, run: Path, out: Path) -> list:
    """Each writing command, aimed at OUT."""
    gen = run / "rep0/trait/gen1"
    return {"chain": [*CHAIN, "--out", out],
            "distill": ["distill", gen / "filter/kept.jsonl", "--model", "tiny", "--epochs", "1",
                        "--out", out],
            "audit": [*AUDIT, "--out", out],
            "scan": ["scan", gen / "filter/kept.jsonl", "--static-only", "--out", out],
            "filter": ["filter", gen / "generate/rows.jsonl", "--out", out],
            "generate": ["generate", "--model", "tiny", "--samples", "3", "--out", out]}[name]


@pytest.mark.parametrize("name", ["chain", "distill", "audit", "scan", "filter", "generate"])
def test_read_only_out_is_one_line_naming_it(finished, read_only, capsys, name):
    out = read_only / "x"
    refused(command(name, finished, out), capsys, str(out))
    assert files(read_only) == []


def test_full_disk_is_one_line_leaves_no_temp_file_and_resumes(finished, tmp_path, capsys,
                                                                monkeypatch):
    """The disk fills while stats.json is written: half its temp file is on disk when ENOSPC
    comes. One line names stats.json; no temp file stays; freeing space and running again
    finishes the stage."""
    real = Path.write_text

    def fill(self, text, *args, **kwargs):
        if self.name.startswith("stats.json."):
            real(self, text[: len(text) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))
        return real(self, text, *args, **kwargs)

    out = tmp_path / "filt"
    args = command("filter", finished, out)
    monkeypatch.setattr(Path, "write_text", fill)
    refused(args, capsys, str(out / "stats.json"), "disk is full")
    assert not [f for f in files(out) if f.endswith(".tmp")] and "complete.json" not in files(out)
    monkeypatch.setattr(Path, "write_text", real)  # space freed
    assert main(args, capsys)[0] == 0 and (out / "complete.json").exists()


def test_a_failed_tensor_write_is_an_os_error_naming_the_file(tmp_path):
    """safetensors reports a full disk as its own error type: `writing` makes it the OSError
    the CLI words as one line, and removes the half-written file."""
    from safetensors import SafetensorError

    from subliminal.records import write_failure, writing

    path = tmp_path / "adapter_model.safetensors"
    with pytest.raises(OSError) as err, writing(path):
        path.write_bytes(b"half")
        raise SafetensorError("Error while serializing: I/O error: No space left on device "
                              "(os error 28)")
    assert err.value.errno == errno.ENOSPC and not path.exists()
    assert write_failure(err.value).startswith(f"{path}: the disk is full")


# --- 2-6. adapters checked against the base before any work -----------------------------------

def test_missing_adapter(tmp_path, capsys):
    out, nope = tmp_path / "audit", tmp_path / "nope"
    refused([*AUDIT, "--adapter", nope, "--out", out], capsys, f"{nope}: no such student folder")
    assert not out.exists()


def test_truncated_adapter(finished, tmp_path, capsys):
    cut, out = tmp_path / "cut", tmp_path / "audit"
    shutil.copytree(finished / STUDENT, cut)
    weights = cut / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:20000])
    refused([*AUDIT, "--adapter", cut, "--out", out], capsys, str(weights),
            "not a readable safetensors file")
    assert not out.exists()  # no stage.json to block a retry


def test_adapter_of_another_base_and_declared_base(finished, tmp_path, capsys):
    """A tiny adapter on a wider base is refused by shape; one that declares another base
    but fits loads, with a one-line warning naming both."""
    from subliminal.models import tiny_model

    model, tok = tiny_model(hidden=32)
    wide = tmp_path / "base32"
    model.save_pretrained(wide)
    tok.save_pretrained(wide)
    out = tmp_path / "audit"
    refused(["audit", "--model", wide, "--no-side-effects", "--adapter", finished / STUDENT,
             "--out", out], capsys, str(finished / STUDENT), "has 64 inputs",
            "trained on another base (it declares 'tiny')")
    assert not out.exists()
    other = tmp_path / "other"
    shutil.copytree(finished / STUDENT, other)
    config = json.loads((other / "adapter_config.json").read_text())
    (other / "adapter_config.json").write_text(json.dumps(
        {**config, "base_model_name_or_path": "Qwen/Qwen2.5-7B-Instruct"}))
    code, err = main([*AUDIT, "--adapter", other, "--out", tmp_path / "a2"], capsys)
    warned = [line for line in err.splitlines() if line.startswith("warning:")]
    assert code == 0 and len(warned) == 1, err
    assert str(other / "adapter_config.json") in warned[0] and "'Qwen/Qwen2.5-7B-Instruct'" in \
        warned[0] and "loaded on 'tiny'" in warned[0]


def test_full_fine_tune_keys_must_all_match(tmp_path, capsys):
    """Unrelated keys (rc 0 and the base's probe before) and half the keys are refused; a
    genuine full fine-tune loads its weights."""
    import torch
    from safetensors.torch import save_file, save_model

    from subliminal.models import load_model, tiny_model

    bad, half, good = (tmp_path / n for n in ("bad", "half", "good"))
    for d in (bad, half, good):
        d.mkdir()
    save_file({"foo.weight": torch.zeros(3, 3)}, bad / "full_model.safetensors")
    trained = tiny_model(seed=1)[0]
    state = {k: v.contiguous() for k, v in trained.state_dict().items()}
    save_file(dict(list(state.items())[:5]), half / "full_model.safetensors")
    save_model(trained, str(good / "full_model.safetensors"))
    for folder, needle in ((bad, "none of its 1 tensors is a weight of base tiny"),
                           (half, "lacks ")):
        out = tmp_path / f"audit-{folder.name}"
        refused([*AUDIT, "--adapter", folder, "--out", out], capsys,
                str(folder / "full_model.safetensors"), needle)
        assert not out.exists()
    lm = load_model("tiny", adapter=good)
    weights = lm.model.state_dict()
    assert all(torch.equal(weights[k], v) for k, v in state.items())


@pytest.mark.parametrize("kind", ["random", "empty", "run"])
def test_not_a_student_writes_nothing_and_a_retry_works(finished, tmp_path, capsys, kind):
    folder = {"random": tmp_path / "random", "empty": tmp_path / "empty", "run": finished}[kind]
    folder.mkdir(exist_ok=True)
    if kind == "random":
        (folder / "notes.txt").write_text("hello")
    out = tmp_path / "audit"
    message = refused([*AUDIT, "--adapter", folder, "--out", out], capsys, str(folder),
                      "not a student")
    assert not out.exists()
    assert kind != "run" or str(finished / "rep0") in message  # names one of its students
    assert main([*AUDIT, "--adapter", finished / STUDENT, "--out", out], capsys)[0] == 0


# --- 7. a finished run checks its own config --------------------------------------------------

def test_edited_config_of_a_finished_run_is_refused(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "samples": 7}))
    before = files(run)
    args = [*CHAIN, "--out", run]
    args[args.index("--samples") + 1] = "7"
    refused(args, capsys, str(run / "config.json"), "changed after")
    refused(["report", run], capsys, str(run / "config.json"), "changed after")
    assert files(run) == before  # not even an environment record of the attempt
    (run / "config.json").write_text(json.dumps(config))  # restored: shown as it is
    assert main([*CHAIN, "--out", run], capsys)[0] == 0


def test_edited_key_of_a_finished_stage_is_refused(finished, tmp_path, capsys):
    out = tmp_path / "filt"
    args = command("filter", finished, out)
    assert main(args, capsys)[0] == 0
    key = json.loads((out / "stage.json").read_text())
    key["config"]["max_values"] = 11
    (out / "stage.json").write_text(json.dumps(key))
    refused([*args, "--max-values", "11"], capsys, str(out / "stage.json"), "changed after")


# --- 8. an overt leak leads the scan's verdict ------------------------------------------------

def test_overt_leak_leads_the_scan_verdict(tmp_path, capsys):
    from subliminal.scan import scan_verdict

    data = tmp_path / "owls.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Continue: {i}, 2, 3", "completion":
                                        "I love owls!" if i < 3 else "4, 5, 6"}) + "\n"
                            for i in range(6)))
    assert main(["scan", data, "--static-only", "--out", tmp_path / "scan"], capsys)[0] == 0
    text = json.loads((tmp_path / "scan" / "scan.json").read_text())["verdict"]
    assert text.startswith("overt leak: completions name owl in 3 rows"), text
    rank = {"named": {"top": "owl", "rankers": ["likelihood"]}, "can_accuse": True,
            "top": "owl", "excess": {"owl": 0.001}, "z": {"owl": 0.4}, "threshold_z": 3.1,
            "p_bonferroni": {"owl": 1.0}, "teachers": 6, "tau": {"owl": 0.002}, "rows": 6,
            "flagged": False, "decoding": {"text": "consistent with BASE sampled at T≈1"}}
    leaks = {"traits": {"owl": {"completion_rows": 3}, "cat": {"completion_rows": 0}}}
    verdict = scan_verdict({"likelihood": rank, "static": {"leaks": leaks}}, final=True)
    assert verdict.startswith("overt leak: completions name owl in 3 rows")
    assert "no evidence that DATA carries" not in verdict and "cat in" not in verdict
    clean = scan_verdict({"likelihood": rank, "static": {"leaks": {"traits": {}}}}, True)
    assert clean.startswith("no evidence that DATA carries a catalogue trait")


# --- 9. report on an unfinished run -----------------------------------------------------------

def test_report_on_an_unfinished_run_names_what_is_missing(finished, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    summary = (run / "summary.json").read_bytes()
    for done in ("complete.json", "rep0/control/gen1/audit/complete.json"):
        (run / done).unlink()
    code, err = main(["report", run], capsys)
    assert code == 0 and "unfinished run: 1 of 5 audits missing: rep0/control/gen1/audit" in \
        err and "PARTIAL" in err, err
    assert (run / "summary.json").read_bytes() == summary  # never rewritten from a partial run
    partial = json.loads((run / "summary.partial.json").read_text())
    assert partial["unfinished"] == ["rep0/control/gen1/audit"]
    assert [g["generation"] for g in partial["generations"]] == [0]


# --- 10. portable records, canonical adapter hashes -------------------------------------------

def test_records_are_run_relative_and_adapter_hashes_canonical(finished, tmp_path):
    from subliminal.injections import TeacherSpec, load_teacher
    from subliminal.stages import file_sha256

    for arm in ("trait", "control"):
        teacher = json.loads((finished / f"rep0/{arm}/gen1/generate/teacher.json").read_text())
        assert teacher["adapter"] == f"rep0/{arm}/teacher"
    config = json.loads((finished / STUDENT / "adapter_config.json").read_text())
    assert config["target_modules"] == sorted(config["target_modules"])
    assert config["base_model_name_or_path"] == "tiny"
    home = tmp_path / "audit"
    lm = load_teacher("tiny", TeacherSpec(adapter=str((finished / STUDENT).resolve())),
                      home=home)
    assert lm.info["adapter"] == os.path.relpath(finished / STUDENT, home)
    # PEFT writes target_modules in hash-seed order: the same weights, another order.
    shuffled = tmp_path / "shuffled"
    shutil.copytree(finished / STUDENT, shuffled)
    (shuffled / "adapter_config.json").write_text(json.dumps(
        {**config, "target_modules": config["target_modules"][::-1]}, indent=4))
    assert file_sha256(shuffled) == file_sha256(finished / STUDENT)
    (shuffled / "adapter_config.json").write_text(json.dumps({**config, "r": 4}))
    assert file_sha256(shuffled) != file_sha256(finished / STUDENT)  # content still counts


def test_a_stage_keyed_before_canonical_hashes_resumes(finished, tmp_path):
    """Folders written before adapter configs were hashed canonically hold the raw bytes'
    hash; the same adapter resumes them (read back, not redone), another adapter does not."""
    from subliminal.audit import AuditConfig
    from subliminal.errors import SubliminalError
    from subliminal.injections import TeacherSpec
    from subliminal.records import mark_complete, to_jsonable, write_json
    from subliminal.stages import AuditStage, file_sha256, open_stage

    config = json.loads((finished / STUDENT / "adapter_config.json").read_text())
    student = tmp_path / "student"
    shutil.copytree(finished / STUDENT, student)
    (student / "adapter_config.json").write_text(json.dumps(
        {**config, "target_modules": config["target_modules"][::-1]}))  # as PEFT may write it
    stage = AuditStage(folder=tmp_path / "audit", model="tiny",
                       teacher=TeacherSpec(adapter=str(student)), config=AuditConfig())
    name = {"stage": "AuditStage"}
    new, (old,) = {**name, **stage.key()}, [{**name, **k} for k in stage.earlier_keys()]
    assert old["adapter_sha256"] == file_sha256(student, canonical=False)
    assert old["adapter_sha256"] != new["adapter_sha256"]
    write_json(stage.folder / "stage.json", to_jsonable(old))
    mark_complete(stage.folder)  # what the older code wrote and sealed
    with pytest.raises(SubliminalError, match="differs in: adapter_sha256"):
        open_stage(stage.folder, new)
    assert open_stage(stage.folder, new, lambda: [old]) is True
    other = {**old, "adapter_sha256": "0" * 64}  # another adapter keyed the older way
    with pytest.raises(SubliminalError, match="differs in: adapter_sha256"):
        open_stage(stage.folder, new, lambda: [other])
