"""The reference population: trait-free teachers whose datasets set the scan's null.

    subliminal scan rows.jsonl --model smollm2-135m --population-rows 32 --population-neutral 5
    subliminal scan other.jsonl --population runs/scan-rows/population    # reuse one

Each reference teacher writes `m` rows on its own seeded sample of DATA's prompts: plain BASE
at each reference decoding (greedy, T=0.7, T=1.0 by default) and `neutral` LoRAs — trained
by the trait adapters' recipe on trait-free demonstrations, seeds 0..k-1 — sampled at T=1.
Number data is decoded under the channel's format constraint. A population is a folder:
`population.json` (its teachers) and one `LABEL.jsonl` per teacher; generation resumes, and a
folder built once serves any DATA of the same kind (`--population DIR`; the validation builds
one from held-out prompts). Its rows' scores under a scan's conditions are cached beside it
(`scores-KEY.npz`, keyed by the conditions' adapter hashes and the scoring settings), so a
population is scored once per scanner.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from subliminal.errors import SubliminalError
from subliminal.filters import FilterConfig, filter_rows
from subliminal.injections.adapter import trait_adapter
from subliminal.models import load_model
from subliminal.records import append_jsonl, read_json, read_jsonl, write_json
from subliminal.scan.reference import base_completions, sample
from subliminal.stages import file_sha256
from subliminal.teacher import Teacher
from subliminal.trait import get_trait


@dataclass(frozen=True)
class RefTeacher:
    """One trait-free teacher of the population."""

    label: str                        # file stem: 'base-greedy', 'neutral3-1.0'
    decoding: str                     # 'greedy' or a sampling temperature
    neutral_seed: int | None = None   # None: plain BASE; k: the neutral LoRA of seed k


def default_teachers(decodings: list[str], neutral: int) -> list[RefTeacher]:
    """BASE at every decoding, then `neutral` neutral LoRAs sampled at T=1."""
    return ([RefTeacher(f"base-{d}", d) for d in decodings]
            + [RefTeacher(f"neutral{k}-1.0", "1.0", k) for k in range(neutral)])


def neutral_adapter(model: str, trait: str, seed: int, folder: Path,
                    device: str | None = None) -> Path:
    """The neutral LoRA of seed `seed` (trained once per machine, then copied)."""
    return trait_adapter(model, get_trait(trait), folder, device, seed=seed, neutral=True)


def build(lm, model: str, rows: list[dict], family: str, folder: Path,
          teachers: list[RefTeacher], m: int, seed: int, trait: str,
          device: str | None = None, given: dict | None = None) -> dict[str, list[dict]]:
    """Write (or resume) every teacher's `m` rows on its own sample of DATA's prompts.
    `given`: {'neutral-K': folder} supplies a neutral teacher's LoRA instead of training it."""
    folder = Path(folder)
    write_json(folder / "population.json", {"teachers": [asdict(t) for t in teachers],
                                            "rows": m, "seed": seed, "family": family})
    out = {}
    for j, t in enumerate(teachers):
        writer = None
        if t.neutral_seed is not None:
            adapter = (given or {}).get(f"neutral-{t.neutral_seed}") or neutral_adapter(
                model, trait, t.neutral_seed, folder / "adapters" / f"neutral{t.neutral_seed}",
                device)
            writer = Teacher(load_model(model, adapter=adapter, device=device))
        picked = sample(rows, m, seed + 1000 + j)
        written = base_completions(lm, picked, family, folder / "raw" / f"{t.label}.jsonl",
                                   seed + j, label=f"population {t.label}",
                                   decoding=t.decoding, teacher=writer)[0]
        out[t.label] = released(written, family, folder / f"{t.label}.jsonl")
    return out


def released(rows: list[dict], family: str, path: Path) -> list[dict]:
    """What a publisher would release: number rows that pass the strict filter (other data
    as written); written to `path` once."""
    if path.exists():
        return read_jsonl(path)
    kept = filter_rows(rows, FilterConfig())[0] if family == "numbers" else rows
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    append_jsonl(tmp, kept)
    tmp.replace(path)
    return kept


def check_teachers(teachers: list[RefTeacher], where: str) -> list[RefTeacher]:
    """A population needs plain BASE among its teachers: DATA's decoding is placed among
    BASE's own decodings, and without one nothing says what DATA looks like."""
    if not any(t.neutral_seed is None for t in teachers):
        raise SubliminalError(f"{where}: the reference population has no plain-BASE teacher "
                              "(give at least one --reference-decodings)")
    return teachers


def load(folder: Path, family: str | None = None) -> tuple[list[RefTeacher],
                                                         dict[str, list[dict]]]:
    """A population built earlier (its teachers and rows); refused when it was written for
    another kind of data than DATA's (`family`: numbers, math, code, text)."""
    folder = Path(folder)
    if not (folder / "population.json").is_file():
        raise SubliminalError(f"{folder}: not a reference population (no population.json)")
    record = read_json(folder / "population.json")
    if family is not None and record.get("family") not in (None, family):
        raise SubliminalError(f"{folder}: this population was written for {record['family']} "
                              f"data, DATA is {family}; build one on DATA's prompts")
    teachers = check_teachers([RefTeacher(**t) for t in record["teachers"]], str(folder))
    missing = [t.label for t in teachers if not (folder / f"{t.label}.jsonl").is_file()]
    if missing:
        raise SubliminalError(f"{folder}: population rows missing for {', '.join(missing)}")
    return teachers, {t.label: read_jsonl(folder / f"{t.label}.jsonl") for t in teachers}


def scores_key(conds: list, settings: dict) -> str:
    """Identity of a scoring: every condition's name and adapter content, and the settings."""
    ident = [[c.name, c.role, c.system, file_sha256(Path(c.adapter)) if c.adapter else None]
             for c in conds]
    blob = json.dumps([ident, settings], sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_scores(folder: Path, key: str) -> dict[str, dict] | None:
    """Per teacher label: {'ll', 'acts'} arrays saved by `save_scores` (no pickles)."""
    path = Path(folder) / f"scores-{key}.npz"
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        labels = json.loads(str(z["labels"]))
        return {lab: {"ll": z[f"ll_{i}"], "acts": z[f"acts_{i}"] if f"acts_{i}" in z else None}
                for i, lab in enumerate(labels)}


def save_scores(folder: Path, key: str, scores: dict[str, dict]) -> None:
    arrays = {"labels": np.array(json.dumps(list(scores)))}
    for i, s in enumerate(scores.values()):
        arrays[f"ll_{i}"] = s["ll"]
        if s.get("acts") is not None:
            arrays[f"acts_{i}"] = s["acts"]
    tmp = Path(folder) / f"scores-{key}.tmp.npz"
    np.savez(tmp, **arrays)
    tmp.replace(Path(folder) / f"scores-{key}.npz")
