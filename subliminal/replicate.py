"""Replicates as a graph of units: every arm's teacher, its rows, students at an equal dose.

    subliminal chain --generations 3        # arms 'trait' and 'control'
    subliminal study --traits owl,cat ...   # one arm per trait, and 'control'

A replicate runs several arms that must differ *only* in their generation-0 teacher: the
chain's trait arm and its control twin, or a study's arms, one per trait (and the twin). They
share the replicate's seed, prompts and student recipe, and — the equal-dose rule — every
arm's student trains on the same number of rows, so on the same number of steps: after all
arms of a generation have written and filtered their rows, each replicate's students train on
a random subset of the smallest arm's kept count (`RUN/dose.json` records every arm's kept
count and the dose). That makes the work a graph of units (`graph`), fanned out by
`subliminal.fanout.run_graph` (in this process in phase order, or as Ray tasks, each started
as soon as its own inputs exist):

    phase 0      the base's audit; every arm's teacher, then the teacher's audit
    phase k.a    every arm writes generation k's rows (generate + filter), after its teacher
                 (k = 1) or its own generation-(k-1) student is trained (not audited)
    phase k.b    every arm's students of generation k train at the dose, after every arm
                 of their replicate has written generation k
    phase k.c    each student's audit, after its training

A study may train several students per arm on the same rows (its dose axis: `Student`); the
next generation is taught by the arm's own student ('').
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from subliminal.channels import get_channel
from subliminal.distill import SMALL_RUN_LR, DistillConfig
from subliminal.errors import SubliminalError
from subliminal.fanout import FanOut, Node, run_graph, session
from subliminal.injections import InjectionContext, TeacherSpec, build_teacher
from subliminal.layout import audit_key, stage_dirs, student_stages, teacher_dir
from subliminal.records import read_json, write_json
from subliminal.stages import AuditStage, DistillStage, FilterStage, GenerateStage
from subliminal.trait import get_trait


@dataclass(frozen=True)
class Arm:
    """One arm of a replicate: its folder name and how its generation-0 teacher is built."""

    name: str      # 'trait' / 'control' in a chain, a trait's name / 'control' in a study
    trait: str     # the trait whose injection builds the teacher
    neutral: bool  # the control twin: the same injection with the trait removed


_N = r"[1-9]\d*"                  # a positive whole number
_LR = r"\d+(?:\.\d+)?(?:e-?\d+)?"  # 3e-4, 0.0003, 2.5e-5: no sign, no trailing dot
STUDENT_SPEC = re.compile(rf"(all|{_N})x({_N})(?:r({_N})|(full))?(?:-lr({_LR}))?")
SPEC_FORM = "ROWSxEPOCHS[rRANK|full][-lrLR]"


@dataclass(frozen=True)
class Student:
    """One student recipe on an arm's rows: the distill fields it changes (None: the cell's).
    Spec `ROWSxEPOCHS[rRANK|full][-lrLR]`, ROWS a number or 'all' (the whole equal dose):
    '64x8r1', 'allx2full-lr3e-4'. A rank makes the student a LoRA, 'full' trains every weight;
    a recipe that trains what its cell does not takes that kind's own learning rate
    (distill.SMALL_RUN_LR) unless it names one."""

    name: str = ""           # '' is the arm's own student (folders distill/, audit/)
    rows: int | None = None  # at most this many of the dose's rows
    epochs: int | None = None
    lora_r: int | None = None
    finetune: str | None = None  # 'full': every weight; None: a LoRA if lora_r, else the cell's
    lr: float | None = None

    @classmethod
    def parse(cls, spec: str) -> Student:
        m = STUDENT_SPEC.fullmatch(spec.strip())
        lr = float(m[5]) if m and m[5] else None
        if not m or (lr is not None and not 0 < lr < 1):
            raise SubliminalError(f"--students {spec!r}: expected {SPEC_FORM} with positive "
                                  "whole numbers and a learning rate below 1, e.g. 64x2, "
                                  "allx8, 64x2r32, allx2full-lr3e-4")
        return cls(spec.strip(), None if m[1] == "all" else int(m[1]), int(m[2]),
                   int(m[3]) if m[3] else None, m[4], lr)

    def record(self) -> dict:
        """The recipe as study.json records it; `finetune` and `lr` only when the spec set
        them, so the records of studies run before they existed recompute unchanged."""
        return {k: v for k, v in asdict(self).items()
                if v is not None or k not in ("finetune", "lr")}

    def training(self, cell: DistillConfig, **fields: Any) -> DistillConfig:
        """The cell's distillation as this recipe changes it (and FIELDS: seed, max_rows)."""
        finetune = self.finetune or ("lora" if self.lora_r else cell.finetune)
        lr = self.lr or (cell.lr if finetune == cell.finetune else SMALL_RUN_LR[finetune])
        return replace(cell, epochs=self.epochs or cell.epochs,
                       lora_r=self.lora_r or cell.lora_r,
                       lora_alpha=self.lora_r or cell.lora_alpha,
                       finetune=finetune, lr=lr, **fields)


def check_recipes(recipes: tuple[Student, ...], cell: DistillConfig) -> None:
    """Two specs that train the same student on CELL (allx2-lr1e-4 and allx2-lr0.0001;
    allx2full and allx2full-lr1e-4) are refused: the study would train it twice."""
    seen: dict[tuple, str] = {}
    for s in recipes:
        key = (s.rows, *asdict(s.training(cell)).values())
        if key in seen:
            raise SubliminalError(f"--students: {seen[key]!r} and {s.name!r} are one recipe")
        seen[key] = s.name


def replicate_seed(cfg, r: int) -> int:
    """Replicate r's seed: its teacher, prompts and students all derive from it, so
    replicates are independent (teacher x student x data) and a replicate's arms share them."""
    return cfg.seed + r


CHANNEL_OPTIONS = ("difficulty", "problems", "math_share")  # config fields channels may take


def make_channel(cfg):
    """The configured channel, given the options it declares (subliminal.channels)."""
    return get_channel(cfg.channel, **{k: getattr(cfg, k) for k in CHANNEL_OPTIONS})


def audit_config(cfg, k: int):
    """Generation k's audit: the side-effect battery reads the teachers and the last
    generation (where it informs a claim), intermediate students only on request."""
    every = cfg.audit.side_effects_every or k in (0, cfg.generations)
    return cfg.audit if every else replace(cfg.audit, side_effects=False)


def audit(cfg, out: Path, folder: Path, spec: TeacherSpec | None, label: str,
          k: int = 0) -> dict:
    """Audit generation k's model with the run's trait audit (and the battery)."""
    return AuditStage(folder, model=cfg.model, teacher=spec, config=audit_config(cfg, k),
                      device=cfg.device, run_dir=out, label=label, trait=cfg.trait).run()


def teacher_spec(cfg, out: Path, r: int, arm: Arm) -> TeacherSpec:
    """The arm's generation-0 teacher (built once; a finished one is read back), with its
    paths relative to the run so the folder can move."""
    ctx = InjectionContext(model=cfg.model, trait=get_trait(arm.trait),
                           out=teacher_dir(out, r, arm.name), seed=replicate_seed(cfg, r),
                           neutral=arm.neutral, device=cfg.device)
    teacher = build_teacher(cfg.injection, ctx)
    for part in ("adapter", "steering"):
        path = getattr(teacher, part)
        if path and Path(path).is_absolute() == Path(out).is_absolute():
            rel = str(Path(path).relative_to(out))
            teacher = replace(teacher, **{part: rel}, record={**teacher.record, part: rel})
    return teacher


def tag(r: int, arm: Arm, k: int) -> str:
    """How progress lines name generation k of an arm of replicate r."""
    return f"rep{r} {arm.name} gen{k}"


def base_unit(cfg, out: Path) -> dict:
    """The untouched base model's audit (the reference the tables print first)."""
    return {"base": audit(cfg, out, Path(out) / "base" / "audit", None, "base audit")}


def teacher_unit(cfg, out: Path, r: int, arm: Arm) -> TeacherSpec:
    """Phase 0 of one arm: its teacher, built (or read back)."""
    return teacher_spec(cfg, out, r, arm)


def teacher_audit(cfg, out: Path, r: int, arm: Arm, spec: TeacherSpec) -> dict:
    """Phase 0 of one arm: the teacher's own audit (nothing waits for it but the tables)."""
    folder = stage_dirs(out, r, arm.name, 0) / "audit"
    return {audit_key(r, arm.name, 0): audit(cfg, out, folder, spec, f"{tag(r, arm, 0)} audit")}


def write_unit(cfg, out: Path, r: int, arm: Arm, k: int) -> int:
    """Phase k.a of one arm: its generation-k teacher writes, the filter keeps; returns the
    number of kept rows."""
    gdir = stage_dirs(out, r, arm.name, k)
    if k == 1:
        teacher = teacher_spec(cfg, out, r, arm)
    else:  # base + the previous generation's own student, no prompt
        rel = str(student_stages(stage_dirs(out, r, arm.name, k - 1))[0].relative_to(out))
        teacher = TeacherSpec(adapter=rel, record={"injection": "student", "adapter": rel})
    GenerateStage(gdir / "generate", model=cfg.model, teacher=teacher,
                  channel=make_channel(cfg), decode=cfg.decode, samples=cfg.samples,
                  seed=replicate_seed(cfg, r) * 1000 + k, device=cfg.device, run_dir=out,
                  label=f"{tag(r, arm, k)} generate").run()
    kept = FilterStage(gdir / "filter", rows_path=gdir / "generate" / "rows.jsonl",
                       config=cfg.filter, channel=cfg.channel).run()
    return len(kept)


def distill_unit(cfg, out: Path, r: int, arm: Arm, k: int, rows: int | None,
                 student: Student) -> None:
    """Phase k.b of one arm: one student trains on at most `rows` of the arm's kept rows (the
    replicate's equal dose)."""
    gdir = stage_dirs(out, r, arm.name, k)
    limit = min(x for x in (rows, student.rows, cfg.distill.max_rows) if x is not None) \
        if any(x is not None for x in (rows, student.rows, cfg.distill.max_rows)) else None
    recipe = student.training(cfg.distill, seed=replicate_seed(cfg, r), max_rows=limit)
    label = f"{tag(r, arm, k)} distill{' ' + student.name if student.name else ''}"
    DistillStage(student_stages(gdir, student.name)[0],
                 rows_path=gdir / "filter" / "kept.jsonl", model=cfg.model,
                 config=recipe, device=cfg.device, label=label).run()


def student_audit(cfg, out: Path, r: int, arm: Arm, k: int, student: Student,
                  _trained: Any = None) -> dict:
    """Phase k.c of one arm: the trained student audited as it will teach, with no prompt."""
    gdir = stage_dirs(out, r, arm.name, k)
    distill_dir, audit_dir = student_stages(gdir, student.name)
    spec = TeacherSpec(adapter=str(distill_dir.relative_to(out)))
    return {audit_key(r, arm.name, k, student.name): audit(
        cfg, out, audit_dir, spec, f"{tag(r, arm, k)} audit", k)}


def run_phases(cfg, out: Path, arms: list[Arm], plan: FanOut,
               students: tuple[Student, ...] = (Student(),), on_phase=None) -> dict:
    """Every phase of every replicate (see the module's doc); returns the audits by key.
    `on_phase(audits)` is called after each generation's students are audited. The phases
    share one Ray (`fanout.session`): its workers are started once, not once per phase."""
    with session(plan):
        return _phases(cfg, out, arms, plan, students, on_phase)


def _phases(cfg, out: Path, arms: list[Arm], plan: FanOut, students: tuple[Student, ...],
            on_phase) -> dict:
    nodes = graph(cfg, out, arms, students)
    need = Counter(key[3] if key[0] == "audit" else 0 for key in nodes if key[0] in AUDITS)
    by_gen: dict[int, dict] = defaultdict(dict)  # audits by generation (0: base, teachers)
    kept = recorded_kept(out)  # (replicate, arm, generation) -> rows the filter kept
    reported = 0
    for key, result in run_graph(nodes, plan):
        if key[0] == "write":
            kept[key[1:]] = result
            write_json(Path(out) / "dose.json", dose_record(cfg, arms, kept))
            continue
        if key[0] in AUDITS:
            by_gen[key[3] if key[0] == "audit" else 0].update(result)
        while (len(by_gen[0]) == need[0] and reported < cfg.generations  # the tables open
               and len(by_gen[reported + 1]) == need[reported + 1]):  # with base, teachers
            reported += 1  # every student of this generation is audited
            if on_phase is not None:
                on_phase(_upto(by_gen, reported))
    return _upto(by_gen, cfg.generations)


def recorded_kept(out: Path) -> dict[tuple, int]:
    """The kept counts an earlier attempt recorded in RUN/dose.json: a resumed run starts
    from them, so its first rewrite of the record never drops a finished replicate."""
    path = Path(out) / "dose.json"
    record = read_json(path) if path.exists() else {}
    return {(int(rep.removeprefix("rep")), arm, int(gen.removeprefix("gen"))): n
            for rep, gens in record.items() for gen, entry in gens.items()
            for arm, n in entry["kept"].items()}


def _upto(by_gen: dict[int, dict], k: int) -> dict:
    return {key: a for g in range(k + 1) for key, a in by_gen[g].items()}


AUDITS = ("base", "teacher-audit", "audit")  # the nodes whose results are audits


def graph(cfg, out: Path, arms: list[Arm], students: tuple[Student, ...]) -> dict:
    """The units of every replicate, in phase order (the in-process order): the base's
    audit; each arm's teacher, then its audit; per generation each arm's rows (after its
    teacher, or its own previous student), then each student (after every arm of the
    replicate has its rows: the equal dose is the smallest kept count), then its audit. The
    audit of a student that teaches the next generation is its own unit, so that the next
    rows start as soon as the model that writes them is trained; a student nothing learns
    from is trained and audited in one unit (`learn_and_audit`)."""
    if cfg.generations > 1 and students[0].name:
        raise SubliminalError("a chain of several generations is taught by each arm's own "
                              "student: the first student recipe must be the default ('')")
    reps = range(cfg.replicates)
    nodes = {("base",): Node(base_unit, (cfg, out))}
    for r in reps:
        for a in arms:
            nodes[("teacher", r, a.name)] = Node(teacher_unit, (cfg, out, r, a))
            nodes[("teacher-audit", r, a.name)] = Node(teacher_audit, (cfg, out, r, a),
                                                       (("teacher", r, a.name),))
    for k in range(1, cfg.generations + 1):
        for r in reps:
            for a in arms:
                prior = ("teacher", r, a.name) if k == 1 else ("distill", r, a.name, k - 1, "")
                nodes[("write", r, a.name, k)] = Node(write_after, (cfg, out, r, a, k), (prior,))
        for r in reps:
            rows = tuple(("write", r, b.name, k) for b in arms)
            for a in arms:
                for s in (students if k == 1 else students[:1]):
                    key = (r, a.name, k, s.name)
                    if k < cfg.generations and s is students[0]:  # it teaches generation k+1
                        nodes[("distill", *key)] = Node(distill_at_dose, (cfg, out, r, a, k, s),
                                                        rows)
                        nodes[("audit", *key)] = Node(student_audit, (cfg, out, r, a, k, s),
                                                      (("distill", *key),))
                    else:  # nothing waits for this model: trained and audited in one unit
                        nodes[("audit", *key)] = Node(learn_and_audit, (cfg, out, r, a, k, s),
                                                      rows)
    return nodes


def learn_and_audit(cfg, out: Path, r: int, arm: Arm, k: int, student: Student,
                    *kept: int) -> dict:
    """A student no later unit learns from, trained and then audited in one unit. Apart, Ray
    would queue every audit behind every student still waiting to train (a task is queued when
    its inputs exist, and a student's audit is ready last), so a study stopped before its end
    would hold trained students and no audited replicate; together, each replicate's read-out
    exists as soon as its students do."""
    distill_at_dose(cfg, out, r, arm, k, student, *kept)
    return student_audit(cfg, out, r, arm, k, student)


def dose_record(cfg, arms: list[Arm], kept: dict[tuple, int]) -> dict:
    """RUN/dose.json: per replicate and generation whose arms have all written, every arm's
    kept count and the dose (their minimum under the equal-dose rule), in a fixed order."""
    out: dict = {}
    for r in range(cfg.replicates):
        for k in range(1, cfg.generations + 1):
            if all((r, a.name, k) in kept for a in arms):
                counts = {a.name: kept[(r, a.name, k)] for a in arms}
                out.setdefault(f"rep{r}", {})[f"gen{k}"] = {
                    "kept": counts, "rows": min(counts.values()) if cfg.equal_dose else None}
    return out


def write_after(cfg, out: Path, r: int, arm: Arm, k: int, _prior: Any) -> int:
    """`write_unit`, as a graph node that waits for the model that teaches it."""
    return write_unit(cfg, out, r, arm, k)


def distill_at_dose(cfg, out: Path, r: int, arm: Arm, k: int, student: Student,
                    *kept: int) -> None:
    """`distill_unit` at the replicate's dose, from every arm's kept count."""
    distill_unit(cfg, out, r, arm, k, min(kept) if cfg.equal_dose else None, student)


def planned_stages(cfg, out: Path, arms: list[Arm], students: tuple[Student, ...] = (
        Student(),)) -> list[tuple[Path, str, float]]:
    """Every stage folder the phases will finish, with its kind and its cost relative to that
    kind's usual one (for the overall progress's ETA)."""
    def kind(k: int) -> str:
        return "battery" if audit_config(cfg, k).side_effects else "audit"

    stages = [(Path(out) / "base" / "audit", kind(0), 1.0)]
    for r in range(cfg.replicates):
        for a in arms:
            if cfg.injection != "prompt":  # every other injection trains or writes a teacher
                stages.append((teacher_dir(out, r, a.name), "teacher", 1.0))
            stages.append((stage_dirs(out, r, a.name, 0) / "audit", kind(0), 1.0))
            for k in range(1, cfg.generations + 1):
                gdir = stage_dirs(out, r, a.name, k)
                stages += [(gdir / "generate", "generate", 1.0), (gdir / "filter", "filter", 1.0)]
                for s in (students if k == 1 else students[:1]):
                    d, au = student_stages(gdir, s.name)
                    stages += [(d, "distill", student_cost(cfg, s)), (au, kind(k), 1.0)]
    return stages


# CPU per update of a full fine-tune over a LoRA one on the embedded model: the backward
# pass also forms every weight's gradient and AdamW updates all 135M (measured 2026-12-07,
# one thread, 8 x 110 tokens: 10.7 vs 6.8 CPU-s per step).
FULL_COST = 1.6


def student_cost(cfg, s: Student) -> float:
    """A student's training cost relative to a LoRA's 2 epochs over the whole dose (what the
    progress weights were measured at): proportional to epochs x rows, so an `allx8` student
    counts four times an `allx2` one (measured 2026-12-07: 375 vs 95 CPU-s), and a full
    fine-tune FULL_COST times its LoRA twin."""
    rows = 1.0 if s.rows is None else min(1.0, s.rows / cfg.samples)
    trained = s.training(cfg.distill)
    return trained.epochs / 2 * rows * (FULL_COST if trained.finetune == "full" else 1.0)
