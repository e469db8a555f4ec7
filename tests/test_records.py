"""Portable records: data files by logical name and content hash, never absolute paths."""

from __future__ import annotations

import json

import pytest

from subliminal.errors import SubliminalError
from subliminal.records import DATA_DIR, content_hash, data_ref, init_run, resolve_data, unlock


def test_packaged_data_is_named_logically_and_hashed():
    path = DATA_DIR / "audits" / "animal_preference.json"
    ref = data_ref(path)
    assert ref == {"name": "audits/animal_preference.json",
                   "sha256": content_hash(path.read_bytes())}
    assert data_ref("audits/animal_preference.json") == ref  # by name, from anywhere
    assert resolve_data(ref["name"]) == path.resolve()


def test_user_files_keep_the_name_given_never_a_machine_path(tmp_path, monkeypatch):
    (tmp_path / "bank.json").write_text("[1]")
    assert data_ref(tmp_path / "bank.json")["name"] == "bank.json"
    monkeypatch.chdir(tmp_path)
    assert data_ref("bank.json") == {"name": "bank.json", "sha256": content_hash("[1]")}


@pytest.mark.parametrize("name", ["nope.json", "../records.py", "/etc/hostname"])
def test_unknown_or_escaping_names_are_refused(name):
    with pytest.raises(SubliminalError, match="unknown data file"):
        resolve_data(name)


def test_init_run_refuses_another_config_and_releases_its_lock(tmp_path):
    run = tmp_path / "run"
    init_run(run, {"a": 1})
    with pytest.raises(SubliminalError, match="differs in: a"):
        init_run(run, {"a": 2})
    unlock(run)
    assert json.loads((run / ".lock").read_text() or "{}") == {}  # released: no holder
    assert json.loads((run / "config.json").read_text()) == {"a": 1}


def test_a_run_written_before_backends_resumes_and_another_backend_is_refused(tmp_path):
    """Configs from before generation backends have no decode.backend; `hf` wrote them, so
    they resume under today's config (which names hf), and only a different engine differs."""
    run = tmp_path / "run"
    old = {"cell": {"decode": {"temperature": 1.0}, "seed": 0}, "students": ["allx2"]}
    init_run(run, old)
    unlock(run)
    init_run(run, {"cell": {"decode": {"temperature": 1.0, "backend": "hf"}, "seed": 0},
                   "students": ["allx2"]})
    unlock(run)
    with pytest.raises(SubliminalError, match="differs in: cell"):
        init_run(run, {"cell": {"decode": {"temperature": 1.0, "backend": "vllm"}, "seed": 0},
                       "students": ["allx2"]})
    unlock(run)
    assert json.loads((run / "config.json").read_text()) == old  # the stored config kept
