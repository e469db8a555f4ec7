"""A replicate's units as a graph: every edge and the equal-dose rule hold in any order the
inputs allow (stub units, no model, no Ray), and the in-process order is the graph's."""

import dataclasses
import json
import operator
import random
from pathlib import Path

import pytest

from subliminal import replicate
from subliminal.chain import ChainConfig
from subliminal.errors import SubliminalError
from subliminal.fanout import FanOut, Node, run_graph
from subliminal.replicate import Arm, Student

ARMS = [Arm("owl", "owl", False), Arm("cat", "cat", False), Arm("control", "owl", True)]
STUDENTS = (Student(), Student.parse("30x2"))


def kept_rows(r: int, arm: str, k: int) -> int:
    """A different kept count per replicate, arm and generation (the stub filter's); which
    arm keeps fewest changes with the replicate and generation."""
    return 40 + 7 * r - 2 * k + 3 * ((["owl", "cat", "control"].index(arm) + r + k) % 3)


def random_order(seed: int, audits_last: bool = False):
    """A run_graph that runs the nodes in a random order their `after` edges allow (with
    `audits_last`, the base's and the teachers' audits only when nothing else is ready, as a
    busy Ray may)."""
    def run(nodes, plan):
        rng, results, left = random.Random(seed), {}, dict(nodes)
        while left:
            ready = [k for k, n in left.items() if all(d in results for d in n.after)]
            others = [k for k in ready if k[0] not in ("base", "teacher-audit")]
            ready = others if audits_last and others else ready
            key = rng.choice(ready)
            n = left.pop(key)
            results[key] = n.fn(*n.args, *(results[d] for d in n.after))
            yield key, results[key]
    return run


@pytest.fixture
def stubs(monkeypatch):
    """Replace every unit's work by a record of when it ran and what it was given."""
    log: list[tuple] = []

    def base(cfg, out):
        log.append(("base",))
        return {"base": "a"}

    def teacher(cfg, out, r, arm):
        log.append(("teacher", r, arm.name))
        return f"spec{r}{arm.name}"

    def teacher_audit(cfg, out, r, arm, spec):
        assert spec == f"spec{r}{arm.name}"  # the audit is handed its own teacher
        log.append(("teacher-audit", r, arm.name))
        return {f"t{r}{arm.name}": "a"}

    def write(cfg, out, r, arm, k):
        log.append(("write", r, arm.name, k))
        return kept_rows(r, arm.name, k)

    def distill(cfg, out, r, arm, k, rows, student):
        log.append(("distill", r, arm.name, k, student.name, rows))

    def audit(cfg, out, r, arm, k, student, _trained=None):
        log.append(("audit", r, arm.name, k, student.name))
        return {f"s{r}{arm.name}{k}{student.name}": "a"}

    for name, fn in (("base_unit", base), ("teacher_unit", teacher),
                     ("teacher_audit", teacher_audit), ("write_unit", write),
                     ("distill_unit", distill), ("student_audit", audit)):
        monkeypatch.setattr(replicate, name, fn)
    return log


@pytest.mark.parametrize("seed", range(12))
def test_every_edge_and_the_equal_dose_hold_in_any_allowed_order(stubs, tmp_path,
                                                                   monkeypatch, seed):
    monkeypatch.setattr(replicate, "run_graph", random_order(seed, audits_last=seed % 2 == 1))
    cfg = ChainConfig(generations=2, replicates=3)
    phases: list[set] = []
    replicate.run_phases(cfg, tmp_path, ARMS, FanOut(), STUDENTS,
                         on_phase=lambda audits: phases.append(set(audits)))
    at = {entry[:5]: i for i, entry in enumerate(stubs)}
    for r in range(3):
        for a in ARMS:
            assert at[("teacher-audit", r, a.name)] > at[("teacher", r, a.name)]
            assert at[("write", r, a.name, 1)] > at[("teacher", r, a.name)]
            assert at[("write", r, a.name, 2)] > at[("distill", r, a.name, 1, "")]
    learns = [e for e in stubs if e[0] == "distill"]
    assert len(learns) == 3 * 3 * (2 + 1)  # generation 1: both recipes; 2: the arm's own
    for _, r, arm, k, name, rows in learns:
        assert rows == min(kept_rows(r, b.name, k) for b in ARMS)  # the replicate's dose
        assert all(at[("write", r, b.name, k)] < at[("distill", r, arm, k, name)] for b in ARMS)
        assert at[("audit", r, arm, k, name)] > at[("distill", r, arm, k, name)]
    dose = json.loads((tmp_path / "dose.json").read_text())
    assert dose["rep2"]["gen2"] == {"kept": {a.name: kept_rows(2, a.name, 2) for a in ARMS},
                                    "rows": min(kept_rows(2, a.name, 2) for a in ARMS)}
    assert len(phases) == 2 and phases[0] < phases[1]
    assert {"base", *(f"t{r}{a.name}" for r in range(3) for a in ARMS)} <= phases[0]
    assert {f"s{r}{a.name}1{s.name}" for r in range(3) for a in ARMS
            for s in STUDENTS} <= phases[0]


def test_a_resumed_run_never_writes_a_dose_record_with_less_than_it_had(stubs, tmp_path,
                                                                        monkeypatch):
    """The first rewrite of dose.json after a restart keeps every finished replicate."""
    cfg = ChainConfig(generations=1, replicates=2)
    replicate.run_phases(cfg, tmp_path, ARMS, FanOut())
    whole = json.loads((tmp_path / "dose.json").read_text())
    written: list[dict] = []
    real = replicate.write_json
    monkeypatch.setattr(replicate, "write_json",
                        lambda path, obj: (written.append(obj), real(path, obj)))
    monkeypatch.setattr(replicate, "run_graph", random_order(3))
    replicate.run_phases(cfg, tmp_path, ARMS, FanOut())
    assert written and all(rec == whole for rec in written)


def test_unequal_dose_hands_every_student_its_own_arm_rows(stubs, tmp_path):
    cfg = ChainConfig(generations=1, replicates=1, equal_dose=False)
    replicate.run_phases(cfg, tmp_path, ARMS, FanOut())
    assert {e[5] for e in stubs if e[0] == "distill"} == {None}
    assert json.loads((tmp_path / "dose.json").read_text())["rep0"]["gen1"]["rows"] is None


def test_several_generations_need_the_arms_own_student_first(tmp_path):
    with pytest.raises(SubliminalError, match="own student"):
        replicate.graph(ChainConfig(generations=2), tmp_path, ARMS, (Student.parse("allx8"),))


def test_in_this_process_nodes_run_in_order_with_their_inputs(tmp_path):
    nodes = {"a": Node(operator.add, (2, 3)), "b": Node(operator.mul, (10,), ("a",)),
             "c": Node(operator.sub, (), ("b", "a"))}
    assert list(run_graph(nodes, FanOut())) == [("a", 5), ("b", 50), ("c", 45)]
    bad = {"bad": Node(Student.parse, ("2y2",)),
           "then": Node(Path.write_text, (tmp_path / "ran",), ("bad",))}
    with pytest.raises(SubliminalError, match="2y2"):
        list(run_graph(bad, FanOut()))
    assert not (tmp_path / "ran").exists()


def test_rows_wait_for_the_training_not_the_audit_of_the_model_that_writes_them(tmp_path):
    nodes = replicate.graph(ChainConfig(generations=2, replicates=1), tmp_path, ARMS,
                            (Student(),))
    for a in ARMS:
        assert nodes[("write", 0, a.name, 1)].after == (("teacher", 0, a.name),)
        assert nodes[("write", 0, a.name, 2)].after == (("distill", 0, a.name, 1, ""),)
        assert nodes[("teacher-audit", 0, a.name)].after == (("teacher", 0, a.name),)
        assert nodes[("audit", 0, a.name, 1, "")].after == (("distill", 0, a.name, 1, ""),)
        # the last generation's student teaches nobody: trained and audited in one unit, so
        # a busy Ray cannot leave every audit for last
        assert ("distill", 0, a.name, 2, "") not in nodes
        assert nodes[("audit", 0, a.name, 2, "")].after == tuple(
            ("write", 0, b.name, 2) for b in ARMS)


class _RecordingRay:
    """Ray's two calls `_cancel` makes: `wait` reports which refs already finished (or fails,
    as on a broken cluster)."""

    def __init__(self, finished: set, broken: bool = False):
        self.finished, self.broken, self.waits, self.cancelled = finished, broken, [], []

    def wait(self, refs, num_returns, timeout, fetch_local):
        self.waits.append(list(refs))
        assert timeout == 0 and num_returns == len(refs) and not fetch_local  # a look only
        if self.broken:
            raise ConnectionError("the cluster is gone")
        return [r for r in refs if r in self.finished], [r for r in refs if r not in self.finished]

    def cancel(self, ref, recursive):
        self.cancelled.append(ref)


def test_stopping_a_graph_cancels_only_the_units_still_running():
    from subliminal.fanout import _cancel

    ray = _RecordingRay(finished={"done"})
    _cancel(ray, {"done": "a", "running": "b", "queued": "c"})
    assert ray.cancelled == ["running", "queued"]
    _cancel(ray, {})  # nothing pending: Ray is not asked anything (it refuses num_returns=0)
    assert ray.waits == [["done", "running", "queued"]] and len(ray.cancelled) == 2
    broken = _RecordingRay(finished={"done"}, broken=True)
    _cancel(broken, {"done": "a", "running": "b"})  # cannot tell: cancels all, raises nothing
    assert broken.cancelled == ["done", "running"]


@pytest.mark.parametrize("spec,fields", [
    ("allx2", (None, 2, None, None, None)),
    ("64x8r1", (64, 8, 1, None, None)),
    ("allx2full-lr1e-4", (None, 2, None, "full", 1e-4)),
    ("allx8r32-lr5e-4", (None, 8, 32, None, 5e-4)),
    ("allx2-lr2.5e-5", (None, 2, None, None, 2.5e-5)),
])
def test_a_student_spec_names_what_it_changes(spec, fields):
    s = Student.parse(spec)
    assert (s.rows, s.epochs, s.lora_r, s.finetune, s.lr) == fields and s.name == spec


@pytest.mark.parametrize("spec", ["allx0", "0x2", "00x2", "allx00", "allx2r0", "allx2fullr8",
                                  "allx2-lr0", "allx2-lr", "allx2-lr1", "allx2-lr1e5",
                                  "allx2-lr1e400", "allx2-lr1.", "allx2full-lr-1", "allx2 full",
                                  "allx2x"])
def test_a_bad_student_spec_is_refused_saying_the_form(spec):
    with pytest.raises(SubliminalError, match=r"ROWSxEPOCHS\[rRANK\|full\]\[-lrLR\]"):
        Student.parse(spec)


def test_a_recipe_trains_what_it_names_and_otherwise_what_its_cell_does():
    from subliminal.chain import small_run_distill
    from subliminal.distill import SMALL_RUN_LR

    lora_cell = small_run_distill()
    full_cell = dataclasses.replace(lora_cell, finetune="full", lr=SMALL_RUN_LR["full"])

    def trains(spec, cell):
        t = Student.parse(spec).training(cell, max_rows=7)
        return t.finetune, t.lr, t.lora_r, t.epochs, t.max_rows

    assert trains("allx8", lora_cell) == ("lora", lora_cell.lr, 8, 8, 7)
    assert trains("allx2full", lora_cell) == ("full", SMALL_RUN_LR["full"], 8, 2, 7)
    assert trains("allx2full-lr3e-4", lora_cell)[:2] == ("full", 3e-4)
    assert trains("allx2", full_cell)[:2] == ("full", SMALL_RUN_LR["full"])
    assert trains("allx2r4", full_cell)[:3] == ("lora", SMALL_RUN_LR["lora"], 4)  # a rank: LoRA
    # the record keeps only what the spec set, so older studies' records recompute unchanged
    assert Student.parse("allx2r32").record() == {"name": "allx2r32", "rows": None,
                                                  "epochs": 2, "lora_r": 32}
    assert Student.parse("allx2full").record()["finetune"] == "full"


def test_two_specs_of_one_student_are_refused():
    from subliminal.study import StudyConfig

    for pair in (["allx2-lr1e-4", "allx2-lr0.0001"], ["allx2full", "allx2full-lr1e-4"],
                 ["allx2", "allx2r8"]):
        with pytest.raises(SubliminalError, match="are one recipe"):
            StudyConfig(students=pair).recipes()
    assert len(StudyConfig(students=["allx2", "allx2r32", "allx2full"]).recipes()) == 3
