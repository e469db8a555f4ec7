"""Where a run keeps what: the folder layout shared by the chain, the study and the report.

    RUN/config.json, RUN/environment.json, RUN/base/audit/
    RUN/rep{r}/{arm}/teacher/                 generation 0: the injection (adapter, vector ...)
    RUN/rep{r}/{arm}/gen0/audit/              the teacher's own audit
    RUN/rep{r}/{arm}/gen{k}/{generate,filter}/
    RUN/rep{r}/{arm}/gen{k}/{distill,audit}/  the student (a study's extra students:
                                              distill-NAME/, audit-NAME/)
    RUN/dose.json                             rows each arm kept and the equal dose trained on
    RUN/summary.json (chain) or RUN/study.json (study), RUN/complete.json (written last)

An arm is `trait` or `control` in a chain, a trait's name (or `control`) in a study.
"""

from __future__ import annotations

from pathlib import Path

ARMS = ("trait", "control")  # a chain's two arms
CONTROL = "control"


def replicate_dir(out: Path, r: int, arm: str) -> Path:
    return Path(out) / f"rep{r}" / arm


def teacher_dir(out: Path, r: int, arm: str) -> Path:
    return replicate_dir(out, r, arm) / "teacher"


def stage_dirs(out: Path, r: int, arm: str, k: int) -> Path:
    """Generation k's folder of one arm (its stages are subfolders)."""
    return replicate_dir(out, r, arm) / f"gen{k}"


OWN = "own"  # a study record's key for the cell's own student recipe (folder name: '')


def recipe_key(student: str) -> str:
    """A study record's key for student recipe STUDENT ('' is the cell's own: OWN)."""
    return student or OWN


def recipe_student(key: str) -> str:
    """The student recipe a study record's key names (recipe_key's inverse)."""
    return "" if key == OWN else key


def student_stages(gen: Path, student: str = "") -> tuple[Path, Path]:
    """(distill, audit) folders of a generation's student; '' is the arm's own student."""
    suffix = f"-{student}" if student else ""
    return gen / f"distill{suffix}", gen / f"audit{suffix}"


def sampled_name(student: str = "") -> str:
    """The sampled read-out's name for a student recipe: each student's folder, and with
    '.json' the study's record (pipelines/sampled_readout.py)."""
    return "sampled" + (f"-{student}" if student else "")


def sampled_folder(out: Path, r: int, arm: str, student: str = "") -> Path:
    """A generation-1 student's sampled audit."""
    return stage_dirs(out, r, arm, 1) / sampled_name(student)


def audit_key(r: int, arm: str, k: int, student: str = "") -> str:
    """The key a probe is filed under in a run's audits: 'rep0/trait/gen1' ('...:NAME' for a
    study's extra student)."""
    return f"rep{r}/{arm}/gen{k}" + (f":{student}" if student else "")


def audit_folders(run: Path) -> dict[str, Path]:
    """Every finished audit folder of a run (chain or study) by its audit key, read from the
    folder names: 'base', 'rep0/trait/gen1', 'rep2/owl/gen1:allx8' ..."""
    run = Path(run)
    found = {"base": run / "base" / "audit"} if (run / "base" / "audit" / "complete.json"
                                                 ).exists() else {}
    for done in sorted(run.glob("rep*/*/gen*/audit*/complete.json")):
        folder = done.parent
        rep, arm, gen = folder.parts[-4:-1]
        student = folder.name.removeprefix("audit").removeprefix("-")
        found[audit_key(int(rep[3:]), arm, int(gen[3:]), student)] = folder
    return found
