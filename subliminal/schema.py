"""Run records: the typed, versioned files every claim is computed from, read and written here.

    python -c "from subliminal.schema import load; print(load('RUN/summary.json').version)"

One class per record: a model's audit (`probe.json`: `AnimalProbe`, `BankProbe` or
`SampledProbe`, told apart by their keys), a student's training (`train.json`: `Train`), a
stage's identity (`stage.json`: `StageKey`), a chain's summary (`summary.json`: `Summary`) and
a crossed study's record (`study.json`: `Study`). A record is a dataclass whose fields are the
file's top-level keys in the order they are written, after `version`: the layout's number,
written into the file. Files written before records had versions are version 1 (the same
layout without the key) and load as they are; a layout newer than this code is refused in
one line, and so is a file that lacks a key its record needs. Keys a layout does not name are
kept in `extra`, in order, so reading and writing a record never drops one. A change of layout
raises `VERSION` and teaches `Record.from_json` to read the older one.

Records are also mappings of their keys (`probe["probs"]`, `"animals" in probe`,
`{**summary}`), so the code that computes claims indexes them as it indexed the JSON, and a
record compares equal to the dict of its file. A field set to `ABSENT` is a key the record
does not have (an exported probe has no `questions`). `body()` is the content without the
version: what two records of one claim share across layouts.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from subliminal.errors import SubliminalError
from subliminal.records import read_json, to_jsonable, write_json

# The layout this code writes. 2: the first with a `version` key. 3: a summary generation's
# `other_animals_share_lift` adds `among_rest` (each other animal's share with the target left
# out), which its verdict reads; an older summary is recomputed by its own rule.
VERSION = 3
UNVERSIONED = 1   # a file without a `version` key: written before records were versioned


class _Absent:
    """The one marker of a key a record does not have (None is JSON's null, a real value)."""

    _one: _Absent | None = None

    def __new__(cls) -> _Absent:
        if cls._one is None:
            cls._one = super().__new__(cls)
        return cls._one

    def __repr__(self) -> str:
        return "ABSENT"

    def __reduce__(self) -> str:
        return "ABSENT"  # pickled by name (Ray tasks return records): still the one marker


ABSENT: Any = _Absent()


@cache
def _keys(cls: type) -> dict[str, str]:
    """A record class's named keys, in file order (`version` first), to their attributes
    (the same name, unless it would hide a mapping method: a probe's `items`)."""
    return {f.metadata.get("key", f.name): f.name for f in fields(cls) if f.name != "extra"}


@cache
def _required(cls: type) -> tuple[str, ...]:
    """Keys without which a file is not this record."""
    return tuple(f.metadata.get("key", f.name) for f in fields(cls) if f.metadata.get("required"))


def need() -> Any:
    """A field every record of its class has (a file without it is refused)."""
    return field(default=ABSENT, metadata={"required": True})


def stored_as(name: str) -> Any:
    """A field stored under another key (`name` is a mapping method's name)."""
    return field(default=ABSENT, metadata={"key": name})


@dataclass(kw_only=True, eq=False)
class Record(MutableMapping[str, Any]):
    """Base of every record: its version, its named keys (subclasses) and the others."""

    FILE: ClassVar[str] = ""
    version: int = VERSION
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __init_subclass__(cls, **kw: Any) -> None:
        """A field named like a mapping method would hide it: name it otherwise and store
        it under its key with `stored_as`."""
        super().__init_subclass__(**kw)
        hidden = [n for n in vars(cls).get("__annotations__", {}) if hasattr(MutableMapping, n)]
        if hidden:
            raise TypeError(f"{cls.__name__}: fields {hidden} hide mapping methods")

    # -- reading and writing ------------------------------------------------------------
    @classmethod
    def shape(cls, data: Mapping) -> type[Record]:
        """The class whose layout `data` has (one per record, several for probes)."""
        return cls

    @classmethod
    def from_json(cls, data: Any, where: str = "record") -> Record:
        """The record a file holds; no `version` key is version 1."""
        if not isinstance(data, Mapping):
            raise SubliminalError(f"{where}: not a {cls.__name__} record (not a JSON object)")
        rest = dict(data)
        version = rest.pop("version", UNVERSIONED)
        if not isinstance(version, int) or not UNVERSIONED <= version <= VERSION:
            raise SubliminalError(f"{where}: record version {version!r}; this subliminal reads "
                                  f"versions {UNVERSIONED} to {VERSION} (upgrade it)")
        kind = cls.shape(rest)
        missing = [k for k in _required(kind) if k not in rest]
        if missing:
            raise SubliminalError(f"{where}: not a {kind.__name__} record (no "
                                  f"{', '.join(missing)})")
        named = {attr: rest.pop(k) for k, attr in _keys(kind).items() if k in rest}
        return kind(version=version, extra=rest, **named)

    @classmethod
    def of(cls, data: Mapping) -> Record:
        """The record of content made in memory: its own version if it carries one (a
        record, or a dict made from one), else this code's."""
        if isinstance(data, cls):
            return data
        return cls.from_json({"version": VERSION, **data}, cls.__name__)

    @classmethod
    def load(cls, path: Path | str) -> Record:
        return cls.from_json(read_json(path), str(path))

    def save(self, path: Path | str) -> None:
        write_json(path, self)

    def body(self) -> dict[str, Any]:
        """The content as JSON values, without the version."""
        return {k: v for k, v in to_jsonable(self).items() if k != "version"}

    # -- the mapping of its keys ----------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        attr = _keys(type(self)).get(key)
        if attr is None:
            return self.extra[key]
        value = getattr(self, attr)
        if value is ABSENT:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        attr = _keys(type(self)).get(key)
        if attr is None:
            self.extra[key] = value
        else:
            setattr(self, attr, value)

    def __delitem__(self, key: str) -> None:
        if key not in self:
            raise KeyError(key)
        attr = _keys(type(self)).get(key)
        if attr is None:
            del self.extra[key]
        else:
            setattr(self, attr, ABSENT)

    def __iter__(self) -> Iterator[str]:
        yield from (k for k, attr in _keys(type(self)).items()
                    if getattr(self, attr) is not ABSENT)
        yield from self.extra

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    __hash__ = None  # mutable, like the dict it stands for


@dataclass(kw_only=True, eq=False)
class Probe(Record):
    """A model's audit (probe.json); its keys say which of the three layouts it has."""

    FILE: ClassVar[str] = "probe.json"

    @classmethod
    def shape(cls, data: Mapping) -> type[Record]:
        if cls is not Probe:
            return cls
        if "family" in data:
            return BankProbe
        return SampledProbe if data.get("probe") == "sampled" else AnimalProbe


@dataclass(kw_only=True, eq=False)
class AnimalProbe(Probe):
    """The exact animal probe (subliminal.audit.probe.run_probe): P(each animal) per question;
    with `battery`, every other family's audit of the same model."""

    probe: str = ABSENT                        # 'prefill' or 'direct'
    questions: list[str] = ABSENT              # dropped from exported evidence (the bank has them)
    animals: list[str] = need()                # the panel, in catalogue order
    probs: list[list[float]] = need()          # rows: questions; columns: animals
    system_prompt: str | None = ABSENT
    system_prompt_in_effect: str | None = ABSENT
    model: dict = ABSENT                       # the model's record, adapter path left out
    battery: dict[str, dict] = ABSENT


@dataclass(kw_only=True, eq=False)
class SampledProbe(Probe):
    """The paper's sampled audit (subliminal.audit.probe.sampled_probe): mention rates."""

    probe: str = "sampled"
    samples: int = need()
    questions: list[str] = ABSENT
    animals: list[str] = need()
    probs: list[list[float]] = need()          # rows: questions; a rate per animal
    system_prompt: str | None = ABSENT
    seed: int = ABSENT
    max_new_tokens: int = ABSENT


@dataclass(kw_only=True, eq=False)
class BankProbe(Probe):
    """A family's forced-choice audit (subliminal.audit.battery), or the animal probe in the
    battery's shape (`probs[animal]`, no scores)."""

    family: str = need()
    bank: str = ABSENT
    format: str = ABSENT
    item_ids: list = stored_as("items")       # the bank's item ids, in its order
    labels: list[str] = ABSENT
    trait_label: str | None = ABSENT
    scores: list[float] = ABSENT               # P(trait label) per item
    probs: dict[str, list[float]] = need()     # per label, per item
    logprobs: list[dict[str, float]] = ABSENT
    mean: float = ABSENT
    system_prompt: str | None = ABSENT
    system_prompt_in_effect: str | None = ABSENT
    model: dict = ABSENT
    battery: dict[str, dict] = ABSENT


@dataclass(kw_only=True, eq=False)
class Train(Record):
    """A student's training (train.json, subliminal.distill.train_student)."""

    FILE: ClassVar[str] = "train.json"
    rows: int = need()
    examples: int = ABSENT
    steps: int = need()
    losses: list[float] = need()
    config: Any = ABSENT                       # the DistillConfig (a dict once read back)
    base: str = ABSENT
    student: str = ABSENT
    processes: int = ABSENT


@dataclass(kw_only=True, eq=False)
class StageKey(Record):
    """What a stage folder was made from (stage.json): the stage's class name, then its key —
    resolved config and inputs' content hashes, as the stage names them (subliminal.stages)
    — kept flat in `extra`. Two keys match when their bodies do: the version is a layout,
    not an input, so a folder written before versions resumes."""

    FILE: ClassVar[str] = "stage.json"
    stage: str = need()

    def same(self, other: StageKey) -> bool:
        return self.body() == other.body()

    def differs(self, other: StageKey) -> list[str]:
        mine, theirs = self.body(), other.body()
        return sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))


@dataclass(kw_only=True, eq=False)
class Summary(Record):
    """A chain's replicate-level statistics (summary.json, subliminal.report.summarize)."""

    FILE: ClassVar[str] = "summary.json"
    trait: str = need()
    audit: str = ABSENT
    probe: str | None = ABSENT
    unit_of_evidence: str = ABSENT
    base: dict | None = ABSENT
    generations: list[dict] = need()           # one row of statistics per generation
    filter_pass_rates: dict = ABSENT
    dose: dict = ABSENT
    unfinished: list[str] = ABSENT             # a partial summary: the audits still missing


@dataclass(kw_only=True, eq=False)
class Study(Record):
    """A crossed study's read-out (study.json, subliminal.study.summarize_study)."""

    FILE: ClassVar[str] = "study.json"
    traits: list[str] = need()
    n_replicates: int = ABSENT
    unit_of_evidence: str = ABSENT
    teachers: dict = need()                    # generation 0's crossed read-out
    students: dict = need()                    # per student recipe
    dose: dict = ABSENT
    unfinished: list[str] = ABSENT             # a partial study: the replicates still missing


RECORDS: dict[str, type[Record]] = {c.FILE: c for c in (Probe, Train, StageKey, Summary, Study)}


def load(path: Path | str) -> Record:
    """Any record by its file's name (summary.partial.json is a summary)."""
    name = Path(path).name.replace(".partial", "")
    if name not in RECORDS:
        raise SubliminalError(f"{path}: not a run record (one of: {', '.join(RECORDS)})")
    return RECORDS[name].load(path)
