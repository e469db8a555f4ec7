"""Run records (subliminal.schema): committed and unversioned records load, records written
now carry their version, a stage folder made before versions resumes, and a summary computed
from version-1 probes is the one computed from version-2 probes and from the raw JSON."""

import copy
import json
import random
from pathlib import Path

import pytest

from subliminal.errors import SubliminalError
from subliminal.records import mark_complete, write_json
from subliminal.report import summarize
from subliminal.schema import (
    ABSENT,
    VERSION,
    AnimalProbe,
    BankProbe,
    Probe,
    SampledProbe,
    StageKey,
    Summary,
    Train,
    load,
)
from subliminal.stages import open_stage
from subliminal.trait import CATALOGUE

EVIDENCE = Path(__file__).resolve().parent.parent / "docs" / "evidence"
CHAIN_SUMMARIES = sorted(p for p in EVIDENCE.glob("*/summary.json")
                         if (p.parent / "config.json").exists())


@pytest.mark.parametrize("path", CHAIN_SUMMARIES, ids=lambda p: p.parent.name)
def test_committed_summaries_load_and_keep_every_key(path):
    """Old summaries (no `version` key) load as version 1, newer ones as theirs."""
    raw = json.loads(path.read_text())
    record = load(path)
    assert isinstance(record, Summary) and record.version == raw.get("version", 1)
    body = {k: v for k, v in raw.items() if k != "version"}
    assert record.body() == body and list(record.body()) == list(body)  # nothing lost, in order
    assert record["generations"] == raw["generations"] and record.trait == raw["trait"]


def test_a_summary_of_another_layout_is_refused_in_one_line():
    with pytest.raises(SubliminalError, match=r"not a Summary record \(no generations\)"):
        Summary.load(EVIDENCE / "calm-down-joyful" / "summary.json")


def test_probe_layouts_are_told_apart_by_their_keys():
    animal = {"probe": "prefill", "animals": ["owl"], "probs": [[0.5]]}
    bank = {"family": "ethics", "probs": {"virtue": [0.4]}, "mean": 0.4}
    sampled = {"probe": "sampled", "samples": 4, "animals": ["owl"], "probs": [[0.25]]}
    assert type(Probe.from_json(animal)) is AnimalProbe
    assert type(Probe.from_json(bank)) is BankProbe
    assert type(Probe.from_json(sampled)) is SampledProbe
    with pytest.raises(SubliminalError, match="not a AnimalProbe record"):
        Probe.from_json({"p": 1}, "x/probe.json")


def test_a_key_named_like_a_mapping_method_keeps_both():
    bank = Probe.from_json({"family": "ethics", "items": ["e1", "e2"], "probs": {"v": [1, 0]}})
    assert bank.item_ids == bank["items"] == ["e1", "e2"] and dict(bank.items())["items"]
    assert bank.body() == {"family": "ethics", "items": ["e1", "e2"], "probs": {"v": [1, 0]}}
    with pytest.raises(TypeError, match="hide mapping methods"):
        type("Bad", (Summary,), {"__annotations__": {"keys": "list"}})


def test_a_record_is_the_mapping_of_its_file(tmp_path):
    probe = AnimalProbe(probe="prefill", animals=["owl", "cat"], probs=[[0.2, 0.1]],
                        system_prompt=None)
    probe["note"] = "kept"  # a key the layout does not name rides along, in order
    assert "battery" not in probe and probe.system_prompt is None and "system_prompt" in probe
    probe["battery"] = {"ethics": {"mean": 0.5}}
    probe.save(tmp_path / "probe.json")
    raw = json.loads((tmp_path / "probe.json").read_text())
    assert list(raw) == ["version", "probe", "animals", "probs", "system_prompt", "battery",
                         "note"]
    assert raw["version"] == VERSION and load(tmp_path / "probe.json") == raw == probe
    del probe["battery"]
    assert probe.battery is ABSENT and {**probe}.keys() == raw.keys() - {"battery"}
    # Ray returns records through their __reduce_ex__ protocol; copy runs the same protocol
    # without unpickling bytes (ABSENT must come back as the one marker)
    again = copy.deepcopy(probe)
    assert again == probe and again.battery is ABSENT and again.questions is ABSENT


def test_versions_unknown_to_this_code_are_refused(tmp_path):
    write_json(tmp_path / "train.json", {"version": VERSION + 1, "rows": 1, "steps": 1,
                                         "losses": [1.0]})
    with pytest.raises(SubliminalError, match=f"record version {VERSION + 1}; this subliminal "
                                              "reads"):
        load(tmp_path / "train.json")
    old = Train.from_json({"rows": 3, "steps": 2, "losses": [2.0, 1.0], "processes": 1})
    assert old.version == 1 and old["losses"] == [2.0, 1.0]


def test_a_stage_folder_made_before_versions_resumes_and_still_refuses_other_inputs(tmp_path):
    key = {"stage": "FilterStage", "rows_sha256": "ab" * 32, "config": {"max_values": 10},
           "channel": "numbers"}
    folder = tmp_path / "filter"
    write_json(folder / "stage.json", key)  # what the code before versions wrote and sealed
    mark_complete(folder)
    before = (folder / "stage.json").read_bytes()
    assert open_stage(folder, key) is True  # finished: read back, not redone
    assert (folder / "stage.json").read_bytes() == before  # never rewritten (it is sealed)
    with pytest.raises(SubliminalError, match=r"differs in: channel\)"):
        open_stage(folder, {**key, "channel": "math"})
    fresh = tmp_path / "fresh"
    assert open_stage(fresh, key) is False
    assert StageKey.load(fresh / "stage.json").version == VERSION
    assert json.loads((fresh / "stage.json").read_text()) == {"version": VERSION, **key}


def _audits(seed: int) -> dict:
    """Probes of a 3-replicate, 2-generation chain: random panels, the trait a bit higher."""
    rng, animals = random.Random(seed), list(CATALOGUE)
    out = {}
    for key in ["base"] + [f"rep{r}/{arm}/gen{g}" for r in range(3)
                           for arm in ("trait", "control") for g in (0, 1)]:
        lift = 2.0 if "trait" in key else 1.0
        probs = [[rng.random() * (lift if a == "owl" else 1.0) / 20 for a in animals]
                 for _ in range(5)]
        out[key] = {"probe": "prefill", "animals": animals, "probs": probs,
                    "system_prompt": None}
    return out


def test_summary_numbers_are_the_same_from_raw_version_1_and_current_probes(tmp_path):
    raw = _audits(3)
    v1 = {k: Probe.from_json(v) for k, v in raw.items()}
    v2 = {k: Probe.of(v) for k, v in raw.items()}
    assert {p.version for p in v1.values()} == {1}
    assert {p.version for p in v2.values()} == {VERSION}
    sums = [summarize(tmp_path, "owl", audits, 3, 1) for audits in (raw, v1, v2)]
    bodies = [json.dumps(s.body()) for s in sums]  # byte for byte
    assert bodies[0] == bodies[1] == bodies[2]
    assert sums[0]["generations"][1]["n_replicates"] == 3
