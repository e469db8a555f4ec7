"""Stages: one object per pipeline step, used by the chain, the stage commands and the study.

    subliminal generate --trait owl --out gen/      # GenerateStage
    subliminal filter gen/rows.jsonl --out filt/    # FilterStage
    subliminal distill filt/kept.jsonl --out st/    # DistillStage
    subliminal audit --adapter st/ --out audit/     # AuditStage

A stage owns a folder. Its `stage.json` holds the resolved config and the content hashes of its
inputs; a folder that holds another config or other inputs is refused (never mixed, never
overwritten), exactly like a chain's run folder. Outputs are written first and `complete.json`
last, so a finished stage is read back instead of redone and an unfinished one resumes. Running
the four stage commands in sequence gives a chain generation's files byte for byte.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from subliminal.audit import bank_ref, run_audit
from subliminal.backends import get as get_backend
from subliminal.distill import train_student
from subliminal.errors import SubliminalError
from subliminal.filters import filter_rows
from subliminal.filters.math import prepare_judge
from subliminal.injections import TeacherSpec, _resolve, check_teacher, load_teacher
from subliminal.meter import metered
from subliminal.records import (
    append_jsonl,
    completed,
    locked,
    mark_complete,
    read_json,
    read_jsonl,
    recorded_decode,
    to_jsonable,
    write_json,
)
from subliminal.rows import training_rows
from subliminal.schema import Probe, StageKey
from subliminal.students import ADAPTER_CONFIG, canonical_config
from subliminal.teacher import generate_rows
from subliminal.trait import get_trait

STAGE = "stage.json"


WEIGHTS = (".safetensors", "adapter_config.json")


def file_sha256(path: Path, canonical: bool = True) -> str:
    """Content hash of a file, or of a model folder's weight files in name order (its records
    hold paths and times, which must not change the identity of the weights). An adapter's
    config is hashed in canonical form (students.canonical_config: PEFT writes its target
    modules in hash-seed order), so identical weights hash identically; other files as
    they are. `canonical=False` hashes the config's bytes as written, as stage keys did
    before 2026-12-06 22:38 UTC (Stage.earlier_keys)."""
    path = Path(path)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(WEIGHTS)
                   ) if path.is_dir() else [path]
    for f in files:
        h.update(f.name.encode())
        data = f.read_bytes()
        h.update(canonical_config(data) if canonical and f.name == ADAPTER_CONFIG else data)
    return h.hexdigest()


def open_stage(folder: Path, key: dict,
               earlier: Callable[[], Iterable[dict]] = tuple) -> bool:
    """Claim `folder` for a stage with this resolved `key`; True when it already finished.

    A folder made by another config or other inputs is refused with the keys that differ;
    the records' version is no input (a folder written before versions resumes), nor is how
    an input was hashed then (`earlier()`: the same inputs keyed the older way, computed only
    when the stored key differs), and an existing stage.json is never rewritten (complete.json
    seals its hash)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise SubliminalError(f"{folder}: exists and is not a directory")
    key = StageKey.of(to_jsonable(key))
    path = folder / STAGE
    if path.exists():
        old = StageKey.load(path)
        if not old.same(key) and not any(old.same(StageKey.of(to_jsonable(k)))
                                         for k in earlier()):
            raise SubliminalError(f"{folder}: holds a stage with different inputs or config "
                                  f"(differs in: {', '.join(old.differs(key))}); use another "
                                  "--out")
    elif folder.exists() and any(p.name != ".lock" for p in folder.iterdir()):
        raise SubliminalError(f"{folder}: not empty and has no {STAGE}; refusing to write there")
    else:
        key.save(path)
    return completed(folder)  # a finished stage whose stage.json was edited is refused


@dataclass
class Stage:
    """Base: a folder plus the key that identifies its work. Subclasses define key/work."""

    folder: Path

    def key(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def work(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def result(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def earlier_keys(self) -> list[dict]:
        """The same inputs keyed as folders written by older versions key them (resumable)."""
        return []

    def check(self) -> None:
        """Validate inputs before anything is written (bad input leaves no folder behind)."""

    def run(self) -> Any:
        """Do the work once; a finished stage is read back."""
        self.folder = Path(self.folder)
        self.check()
        with locked(self.folder), metered(self.folder):
            name = {"stage": type(self).__name__}
            if not open_stage(self.folder, {**name, **self.key()},
                              lambda: [{**name, **k} for k in self.earlier_keys()]):
                self.work()
        return self.result()


class WeightsKeyed:
    """A stage keyed by a teacher's weights (`_key(canonical)`): folders keyed before adapter
    configs were hashed canonically hold the raw bytes' hash, and resume."""

    def _key(self, canonical: bool) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def key(self) -> dict:
        return self._key(canonical=True)

    def earlier_keys(self) -> list[dict]:
        return [self._key(canonical=False)]


@dataclass
class GenerateStage(WeightsKeyed, Stage):
    """A teacher writes completions for a channel's prompts (rows.jsonl, teacher.json)."""

    model: str = ""
    teacher: Any = None       # subliminal.injections.TeacherSpec
    channel: Any = None       # a channel object (numbers, math ...)
    decode: Any = None        # subliminal.teacher.DecodeConfig
    samples: int = 0
    seed: int = 0
    device: str | None = None
    run_dir: Path | None = None  # where the teacher's relative paths live
    label: str = "generate"

    def check(self) -> None:
        """The backend can serve this teacher (vllm: no steering, LoRA adapters only)."""
        get_backend(self.decode.backend).check_teacher(self.model, self.teacher, self.run_dir)

    def _key(self, canonical: bool) -> dict:
        spec = self.teacher
        return {"model": self.model, "system_prompt": spec.system_prompt,
                **_weights_hashes(spec, self.run_dir, canonical),
                "channel": _channel_key(self.channel), "decode": self._decode(),
                "samples": self.samples, "seed": self.seed}

    def _decode(self) -> dict:
        """The decode config as recorded (records.recorded_decode: keys from before backends
        stay what they were)."""
        return recorded_decode(to_jsonable(self.decode))

    def work(self) -> None:
        teacher = get_backend(self.decode.backend).load(self.model, self.teacher,
                                                        self.run_dir, self.device)
        try:
            write_json(self.folder / "teacher.json", {**teacher.record, "decode": self._decode(),
                                                      "injection": self.teacher.record})
            prompts = self.channel.prompts(self.samples, self.seed)
            rows = generate_rows(teacher, prompts, self.decode, self.channel,
                                 self.folder / "rows.jsonl", self.seed, label=self.label)
        finally:
            teacher.close()  # an engine's memory goes back before the next stage trains
        mark_complete(self.folder, {"rows": len(rows)})

    def result(self) -> list[dict]:
        return read_jsonl(self.folder / "rows.jsonl")


@dataclass
class FilterStage(Stage):
    """Split rows into kept and rejected (with reasons); per-rule pass rates in stats.json."""

    rows_path: Path = Path()
    config: Any = None        # subliminal.filters.FilterConfig
    channel: str = "numbers"
    rows_config: Any = None   # subliminal.rows.RowsConfig (bad rows, size limit)

    def check(self) -> None:
        self._rows = training_rows(self.rows_path, self.rows_config)

    def key(self) -> dict:
        return {"rows_sha256": file_sha256(self.rows_path), "config": self.config,
                "channel": self.channel}

    def work(self) -> None:
        rows = self._rows
        prepare_judge(rows, self.config)  # batched judge scores, when a judge is configured
        kept, rejected, stats = filter_rows(rows, self.config, self.channel)
        for name, part in (("kept", kept), ("rejected", rejected)):
            path = self.folder / f"{name}.jsonl"
            path.unlink(missing_ok=True)  # the filter is pure: redo it whole, never append twice
            append_jsonl(path, part)
        write_json(self.folder / "stats.json", stats)
        mark_complete(self.folder, {"kept": len(kept), "pass_rate": stats["pass_rate"]})

    def result(self) -> list[dict]:
        return read_jsonl(self.folder / "kept.jsonl")


@dataclass
class DistillStage(Stage):
    """Train a student from the base on kept rows (a PEFT adapter or full fine-tune)."""

    rows_path: Path = Path()
    model: str = ""
    config: Any = None        # subliminal.distill.DistillConfig
    device: str | None = None
    label: str = "distill"
    rows_config: Any = None   # subliminal.rows.RowsConfig

    def check(self) -> None:
        if self.rows_path.is_file() and self.rows_path.stat().st_size == 0:
            raise SubliminalError(f"{self.rows_path}: no rows to train on (every row was "
                                  "filtered out?); a student trained on nothing is no student")
        self._rows = training_rows(self.rows_path, self.rows_config)

    def key(self) -> dict:
        return {"rows_sha256": file_sha256(self.rows_path), "model": self.model,
                "config": self.config}

    def work(self) -> None:
        train_student(self.model, self._rows, self.config, self.folder, self.device,
                      label=self.label)

    def result(self) -> dict:
        return read_json(self.folder / "complete.json")


@dataclass
class AuditStage(WeightsKeyed, Stage):
    """Probe one model (base + optional adapter/steering, under a system prompt)."""

    model: str = ""
    teacher: Any = None       # TeacherSpec of the audited model (None: the plain base)
    config: Any = None        # subliminal.audit.AuditConfig
    device: str | None = None
    run_dir: Path | None = None
    label: str = "audit"
    trait: str | None = None  # whose audit family reads the model (None: the animal probe)

    def check(self) -> None:
        """The adapter is a student that fits the base (exists, readable, shapes, keys),
        before the folder is claimed: a wrong one leaves no stage.json to block a retry."""
        check_teacher(self.model, self.teacher, self.run_dir)

    def _key(self, canonical: bool) -> dict:
        spec = self.teacher or TeacherSpec()
        return {"model": self.model, "system_prompt": spec.system_prompt,
                **_weights_hashes(spec, self.run_dir, canonical),
                "config": self.config, "bank": bank_ref(self.config), "trait": self.trait}

    def work(self) -> None:
        spec = self.teacher or TeacherSpec()
        cached = self._reused()
        if cached is not None:  # copied: say from where, in the completion record
            Probe.from_json(cached["probe"], str(self._cache_path())).save(
                self.folder / "probe.json")
            mark_complete(self.folder, {"reused_from": cached["folder"]})
            return
        # Records name the adapter relative to the run, or to this folder when it is its own.
        lm = load_teacher(self.model, spec, self.run_dir, self.device,
                          home=self.run_dir or self.folder)
        probe = run_audit(lm, self.config, spec.system_prompt, label=self.label,
                          trait=get_trait(self.trait) if self.trait else None)
        Probe.of(probe).save(self.folder / "probe.json")
        if self.run_dir is not None:  # only a computed probe enters the cache
            where = self.folder.relative_to(self.run_dir) \
                if self.folder.is_relative_to(self.run_dir) else self.folder
            write_json(self._cache_path(), {"folder": str(where), "probe": probe})
        mark_complete(self.folder)

    def _cache_path(self) -> Path:
        """Where the run keeps this exact audit (same weights, prompt, audit, bank and device:
        another device or dtype may round differently, so it never stands in)."""
        ident = {**to_jsonable(self.key()), "device": self.device}
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]
        return Path(self.run_dir) / "audit_cache" / f"{digest}.json"

    def _reused(self) -> dict | None:
        """An identical model audited earlier in the run (e.g. a deterministic teacher seen
        again): the probe is exact and deterministic, so it is copied instead of recomputed,
        and complete.json names the folder it came from."""
        if self.run_dir is None or not self._cache_path().exists():
            return None
        return read_json(self._cache_path())

    def result(self) -> Probe:
        return Probe.load(self.folder / "probe.json")


def _weights_hashes(spec: TeacherSpec, run_dir: Path | None, canonical: bool) -> dict:
    """A teacher's adapter and steering vector by content (None where it has none)."""
    def digest(path: Path | None) -> str | None:
        return file_sha256(path, canonical) if path is not None else None
    return {"adapter_sha256": digest(_resolve(spec.adapter, run_dir)),
            "steering_sha256": digest(_resolve(spec.steering, run_dir))}


def _channel_key(channel) -> dict:
    """A channel's identity: its name and options (channels are dataclasses)."""
    return {"name": getattr(channel, "name", type(channel).__name__), **to_jsonable(channel)}
