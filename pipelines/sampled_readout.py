"""The paper's sampled read-out on a crossed study's students: 100 answers at T=1 to each of
the 50 questions, whole-word animal mentions counted; crossed like the exact probe.

    python pipelines/sampled_readout.py runs/study-X [--student NAME] [--samples 100] \
        [--workers 2]

Per replicate and arm, the student of recipe NAME ('' = the cell's own) answers every audit
question `--samples` times (subliminal.audit.sampled_probe: the question read once, its answers
continuing the cache; seeded per question). Its mention rates go to
RUN/rep{r}/{arm}/gen1/sampled[-NAME]/probe.json; RUN/sampled[-NAME].json holds the crossed
read-out on the rates (subliminal.crossed, metric 'rate': the diagonal contrast in mention
probability, tested over replicates) — a description beside the exact probe's decision, with
the sampling noise the exact probe avoids.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from subliminal.audit import AuditConfig, load_questions, sampled_probe
from subliminal.errors import run_script
from subliminal.evidence import sampled_readout
from subliminal.fanout import FanOut, run_units
from subliminal.layout import CONTROL, sampled_folder, sampled_name, stage_dirs, student_stages
from subliminal.meter import metered
from subliminal.models import load_model
from subliminal.records import is_complete, locked, mark_complete, read_json, write_json


def one(run: str, r: int, arm: str, student: str, samples: int, model: str) -> None:
    """One student's sampled audit (nothing to do when already done)."""
    out = sampled_folder(Path(run), r, arm, student)
    with locked(out), metered(out):
        if not is_complete(out):
            adapter = student_stages(stage_dirs(Path(run), r, arm, 1), student)[0]
            lm = load_model(model, adapter=adapter)
            res = sampled_probe(lm, load_questions(AuditConfig().questions), samples=samples,
                                seed=r, label=f"sampled rep{r} {arm}")
            write_json(out / "probe.json", {k: v for k, v in res.items() if k != "questions"})
            mark_complete(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--student", default="")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--workers", type=int, default=1)
    a = ap.parse_args()
    cfg = read_json(a.run / "config.json")
    traits, reps, model = cfg["traits"], cfg["cell"]["replicates"], cfg["cell"]["model"]
    if a.student not in ["", *cfg.get("students", [])]:  # one line, exit 2, nothing written
        ap.error(f"--student {a.student!r}: {a.run}/config.json's student recipes are "
                 f"{', '.join(cfg.get('students', [])) or 'none'}")
    units = [(one, (str(a.run.resolve()), r, arm, a.student, a.samples, model))
             for r in range(reps) for arm in [*traits, CONTROL]]
    for _ in run_units(units, FanOut(workers=a.workers, threads=1)):
        pass
    result = {**sampled_readout(a.run, a.student), "samples": a.samples}
    write_json(a.run / f"{sampled_name(a.student)}.json", result)
    print(json.dumps({k: result["diagonal_test"][k] for k in ("lift", "ci", "p_value")}))
    print(result["verdict"])


if __name__ == "__main__":
    run_script(main)
