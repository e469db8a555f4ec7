"""Evidence: a run's small records, kept where a claim can be recomputed from them.

    subliminal evidence RUN docs/evidence/NAME      # copy the records
    python -m pytest tests/test_evidence_records.py # recompute every committed claim

Run folders hold adapters and row files (megabytes each) and are lost when a machine goes;
claims must survive them. `export` copies what every printed figure is computed from: the
resolved config and environment, each stage's `stage.json` (inputs by content hash) and
`complete.json` (costs), the teacher records, filter statistics, every student's
`train.json` (row count, steps, losses), the equal-dose record, every model's `probe.json`
(without the question texts, which the bank holds) and the run's summary or study record.
`recompute` rebuilds a summary or study record from those files alone, and `sampled_readout`
a study's sampled read-out (RUN/sampled[-NAME].json) from its sampled probes: a test checks
that each committed one is what its probes say.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from subliminal.crossed import readout
from subliminal.errors import SubliminalError
from subliminal.layout import CONTROL, audit_folders, audit_key, sampled_folder
from subliminal.records import read_json
from subliminal.report import summarize
from subliminal.schema import VERSION, Probe, Record, Study, load
from subliminal.study import summarize_study

KEEP = ("config.json", "environment.json", "dose.json", "summary.json", "study.json",
        "complete.json", "stage.json", "teacher.json", "train.json", "stats.json")


def export(run: Path, dest: Path) -> list[Path]:
    """Copy RUN's small records into DEST (same relative paths); returns what was written."""
    run, dest = Path(run), Path(dest)
    if not (run / "config.json").exists():
        raise SubliminalError(f"{run}: not a run folder (no config.json)")
    written = []
    for path in sorted(run.rglob("*")):
        rel = path.relative_to(run)
        if not path.is_file() or "audit_cache" in rel.parts or "checkpoint" in rel.parts:
            continue
        if path.name == "probe.json":
            probe = Probe.load(path)
            probe.pop("questions", None)
            probe.save(dest / rel)
        elif path.name in KEEP or len(rel.parts) == 1 and (
                path.suffix == ".png" or path.name.startswith("sampled")):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest / rel)
        else:
            continue
        written.append(dest / rel)
    return written


def audits(folder: Path) -> dict:
    """Every probe of a run or evidence folder, by audit key."""
    return {key: Probe.load(f / "probe.json") for key, f in audit_folders(folder).items()}


def recompute(folder: Path) -> tuple[str, Record]:
    """The study or chain record FOLDER's probes give: (its file name, it).
    Compare its `body()` with the stored record's: a record of any version holds the same."""
    folder = Path(folder)
    cfg = read_json(folder / "config.json")
    if "traits" in cfg:  # a crossed study (study.partial.json while replicates are missing)
        study = Study.of(summarize_study(cfg["traits"], cfg["students"],
                                         cfg["cell"]["replicates"], audits(folder), folder))
        return ("study.partial.json" if "unfinished" in study else "study.json"), study
    stored = folder / "summary.json"  # an older summary is recomputed by its own rule
    version = load(stored).version if stored.exists() else VERSION
    return "summary.json", summarize(folder, cfg["trait"], audits(folder), cfg["replicates"],
                                     cfg["generations"], version)


def sampled_readout(folder: Path, student: str = "") -> dict:
    """The crossed read-out on mention rates of a study's sampled audits (every replicate's
    trait arms and control twin, generation 1, student recipe `student`)."""
    folder = Path(folder)
    cfg = read_json(folder / "config.json")
    traits, reps = cfg["traits"], list(range(cfg["cell"]["replicates"]))
    probes = {audit_key(r, arm, 1, student):
              Probe.load(sampled_folder(folder, r, arm, student) / "probe.json")
              for r in reps for arm in [*traits, CONTROL]}
    return readout(probes, traits, reps, 1, student, metric="rate")
