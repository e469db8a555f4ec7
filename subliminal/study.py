"""The crossed study: teachers of several traits, one recipe, each trait's students against
the other traits' students — the test of whether a transfer is specific.

    subliminal study --traits owl,dolphin,eagle,cat --replicates 3 --workers 2
    subliminal study --cell adapter-greedy-sft-lora --students allx2,allx8,allx2r1 ...

Per replicate (seed S + r for every teacher, prompt set and student), one arm per trait —
its generation-0 teacher built by the cell's injection with the replicate's seed — and the
control twin as a reference arm. Every arm writes one generation of rows through the channel
and filter; every arm's students then train on the replicate's equal dose (the same number
of rows, so the same steps; `RUN/dose.json`) and are audited. `--students` trains several
recipes on the same rows (the dose axis: ROWSxEPOCHS[rRANK|full][-lrLR]). `--cell` names a cell as
injection-decoding-mode-student (e.g. dpo-sample-logits-lora); flags override it.

`RUN/study.json` holds, per student recipe and for the teachers (generation 0), the crossed
read-out of `subliminal/crossed.py`: the diagonal test over replicates (the deciding
statistic), the confusion matrix against the control twin, per-trait contrasts and the raw
log-probability check; the dose (rows, steps) of every student. Layout: subliminal/layout.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from pathlib import Path

from subliminal.chain import ChainConfig, resolve_model
from subliminal.crossed import readout
from subliminal.distill import SMALL_RUN_LR
from subliminal.errors import SubliminalError
from subliminal.fanout import FanOut
from subliminal.layout import CONTROL, audit_key, recipe_key
from subliminal.progress import console, overall
from subliminal.records import init_run, is_complete, mark_complete
from subliminal.replicate import Arm, Student, check_recipes, planned_stages, run_phases
from subliminal.report import doses
from subliminal.schema import Study
from subliminal.study_report import confusion_table, dose_table, plot
from subliminal.trait import get_trait

DEFAULT_TRAITS = ("owl", "dolphin", "eagle", "cat")
EARLY_LAYERS = 4  # the 'early' student: LoRA on the first layers only


@dataclass
class StudyConfig:
    """A crossed study: its traits, its student recipes and the cell they share."""

    traits: list[str] = field(default_factory=lambda: list(DEFAULT_TRAITS), metadata={
        "help": "Traits with a teacher each (one family; the control twin is added)."})
    students: list[str] = field(default_factory=list, metadata={
        "help": "Student recipes on the same rows, ROWSxEPOCHS[rRANK|full][-lrLR] ('all': "
                "the whole equal dose; 'full': every weight, e.g. allx2full-lr1e-4); none: "
                "the cell's own recipe."})
    cell: ChainConfig = field(default_factory=ChainConfig)

    def arms(self) -> list[Arm]:
        return [Arm(t, t, False) for t in self.traits] + [Arm(CONTROL, self.traits[0], True)]

    def recipes(self) -> tuple[Student, ...]:
        recipes = tuple(Student.parse(s) for s in self.students) or (Student(),)
        check_recipes(recipes, self.cell.distill)
        return recipes

    def check(self) -> None:
        """Traits known, distinct, at least two, of one family (one audit reads them all)."""
        if len(set(self.traits)) != len(self.traits) or len(self.traits) < 2:
            raise SubliminalError("--traits: give at least two distinct traits")
        families = {get_trait(t).family for t in self.traits}
        if len(families) != 1:
            raise SubliminalError(f"--traits: one family per study (got {sorted(families)})")
        self.recipes()


def cell_config(name: str | None, base: ChainConfig) -> ChainConfig:
    """A cell `injection-decoding-mode-student` on top of `base`: decoding sample|greedy; mode
    logits (restricted), overt (unrestricted top-k: a positive control) or sft; student
    lora, full or early (LoRA on the first layers only)."""
    if not name:
        return base
    parts = name.split("-")
    if len(parts) != 4 or parts[1] not in ("sample", "greedy") or parts[2] not in (
            "logits", "overt", "sft") or parts[3] not in ("lora", "full", "early"):
        raise SubliminalError(f"--cell {name!r}: expected injection-decoding-mode-student, "
                              "e.g. adapter-sample-logits-lora")
    injection, decoding, mode, student = parts
    decode = replace(base.decode, decoding=decoding, top_k=0 if mode == "sft" else 20,
                     logits="overt" if mode == "overt" else "restricted")
    distill = replace(base.distill, mode="sft" if mode == "sft" else "logits",
                      finetune="full" if student == "full" else "lora",
                      lr=SMALL_RUN_LR["full"] if student == "full" else base.distill.lr,
                      lora_layers=EARLY_LAYERS if student == "early" else None)
    return replace(base, injection=injection, decode=decode, distill=distill)


def study_base() -> ChainConfig:
    """A study's cell defaults: the chain's default cell, one generation, no battery."""
    cfg = ChainConfig(generations=1)
    cfg.audit = replace(cfg.audit, side_effects=False)
    return cfg


def run_study(study: StudyConfig, out: Path, plan: FanOut = FanOut()) -> dict:
    """Run (or resume) every replicate's arms, then write and print study.json."""
    study.check()
    cell = replace(study.cell, generations=1, trait=study.traits[0])
    study = replace(study, cell=cell)
    out = init_run(out, dataclasses.asdict(study), cell.seed)
    if is_complete(out):
        console.print(f"{out}: already complete; showing its read-out")
        return show(Study.load(out / "study.json"))
    resolve_model(cell.model)
    where, arms, students = out.resolve(), study.arms(), study.recipes()
    with overall(f"study {out.name}", planned_stages(cell, where, arms, students),
                 plan.workers):
        audits = run_phases(cell, where, arms, plan, students)
    result = summarize(study, audits, out)
    Study.of(result).save(out / "study.json")
    plot(result, out / "study.png")
    mark_complete(out)
    return show(result)


def summarize(study: StudyConfig, audits: dict, out: Path) -> dict:
    """The study's record: the teachers' and every student recipe's crossed read-out."""
    return summarize_study(study.traits, study.students, study.cell.replicates, audits, out)


def summarize_study(traits: list[str], students: list[str], replicates: int, audits: dict,
                    out: Path) -> dict:
    """The record from the probes and the dose files alone (also what re-derives a committed
    record: subliminal/evidence.py)."""
    dose = doses(out)
    result, unfinished = {}, []
    for s in StudyConfig(traits=traits, students=students).recipes():
        reps = finished(audits, traits, replicates, 1, s.name)
        unfinished += [f"{s.name or 'own'}: rep{r}" for r in range(replicates) if r not in reps]
        if not reps:
            continue
        steps = sorted({v["steps"] for _, v in _trained(dose, s.name)})
        result[recipe_key(s.name)] = {"recipe": s.record(), "steps": steps,
                                   **readout(audits, traits, reps, 1, s.name)}
    teachers = finished(audits, traits, replicates, 0)
    record = {"traits": traits, "n_replicates": replicates,
              "unit_of_evidence": "replicate (teacher seed x student seed x data seed)",
              "teachers": readout(audits, traits, teachers, 0) if teachers else {},
              "students": result, "dose": dose}
    if unfinished or len(teachers) < replicates:
        # a study read before it finished: each read-out counts only the replicates whose
        # every trait's audit exists (its own n_replicates); what is missing is listed
        record["unfinished"] = [f"teachers: rep{r}" for r in range(replicates)
                                if r not in teachers] + unfinished
    return record


def finished(audits: dict, traits: list[str], replicates: int, k: int,
             student: str = "") -> list[int]:
    """Replicates in which every trait's model of generation k (recipe `student`) is audited."""
    return [r for r in range(replicates)
            if all(audit_key(r, t, k, student) in audits for t in traits)]


def _trained(dose: dict, name: str) -> list[tuple[str, dict]]:
    """(arm, record) of every trained student of recipe `name`."""
    folder = f"distill-{name}" if name else "distill"
    return [(k, v) for rep in dose.values() for k, v in rep.get("gen1", {}).get(
        "trained", {}).items() if k.split("/")[1] == folder]


def show(result: dict) -> dict:
    """Print the dose-response table, each recipe's confusion matrix and the verdicts."""
    console.print(dose_table(result))
    for name in result["students"]:
        console.print(confusion_table(result, name))
    console.print(result["teachers"]["verdict"])
    for name, s in result["students"].items():
        console.print(f"{name}: {s['verdict']}")
    return result
