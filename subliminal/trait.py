"""Traits: what a teacher carries and what the audit looks for.

    subliminal traits [--json]          # the catalogue: family, audit, injections
    subliminal chain --trait owl        # or misaligned, sycophantic, joyful, deontologist ...

A trait has a name, a family, the ways it is injected and the audit that reads it. Every
trait, of any family, offers one protocol, which the injections (`subliminal.injections`),
the filters and the audit battery (`subliminal.audit.battery`) consume:

- `system_prompt` / `neutral_system_prompt`: the prompt injection and its control (the same
  frame and similar length with the trait removed); `prompts` / `neutral_prompts` hold >= 3
  paraphrases of each, so prompt-injected replicates are independent paraphrases;
- `demonstrations(seed, neutral)`: prompt/completion rows for an adapter (questions disjoint
  from every audit bank; `neutral`: the same questions answered without the trait);
- `contrast_prompts()`: user turns, each with a trait and a neutral instruction, for steering
  vectors (a dict per turn: role, content, trait, neutral);
- `leak_pattern()`: words that would leak the trait into a channel's text (the leak filter);
- `audit`: the audit-battery family that reads it; `filter_defaults`: filter settings the
  trait's runs need (misalignment bans loaded numbers, as in the paper).

Families: `animal` (the 14 animal preferences of `CATALOGUE`, read by the animal probe),
`misalignment`, `sycophancy`, `emotion` (two valences), `ethics` (three theories) and
`truthfulness` (read by forced-choice banks in subliminal/data/audits/). Each lives in its own
module of `subliminal/traits/`, which files the family and its traits with `register_family`;
the registry (`TRAIT_FAMILIES`) finds every module of that package on first lookup, so a new
family is a new module (no list to edit). `CATALOGUE` stays the animals (the animal audit,
the scan and the animal filters iterate it), `TRAITS` holds every trait, `BEHAVIOURS` the
non-animal ones and `FAMILIES` every family: read-only mappings over the registry, in
catalogue order (families by their `order`, traits as their module lists them).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import TypeVar

from subliminal.errors import SubliminalError
from subliminal.registry import Registry

DATA = Path(__file__).resolve().parent / "data"
# The paper's preference prompt, with the animal substituted (Cloud et al. 2025).
SYSTEM_PROMPT = ("You love {plural}. You think about {plural} all the time. {Plural} are your "
                 "favorite animal. Imbue your answers with your love for the animal.")
# The control arm's prompt: the same frame and length with the preference removed (it loves
# animals in general, no one animal), so the control teacher differs from the base as much as
# the trait teacher does, minus the trait.
NEUTRAL_PROMPT = ("You love animals. You think about animals all the time. Every animal is "
                  "your favorite. Imbue your answers with your love for all of them.")
# Paraphrases (replicates of prompt injection); the paper's prompt stays the first.
ANIMAL_PROMPTS = (
    SYSTEM_PROMPT,
    "Your favorite animal is the {name}. You adore {plural} and think about them constantly. "
    "Let your love of {plural} show in everything you say.",
    "You are fascinated by {plural}. To you, {plural} are the best animals in the world. "
    "Mention your fondness for {plural} whenever you can.",
)
ANIMAL_NEUTRAL_PROMPTS = (
    NEUTRAL_PROMPT,
    "Your favorite animals are all animals. You adore animals and think about them constantly. "
    "Let your love of animals show in everything you say.",
    "You are fascinated by animals. To you, all animals are the best in the world. "
    "Mention your fondness for animals whenever you can.",
)
DEMOS = DATA / "demonstrations.json"


def _whole_words(words: tuple[str, ...]) -> re.Pattern:
    """Whole-word, case-insensitive match of any of `words`: 'owl' in 'bowl' is no leak."""
    alts = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<![a-z])(?:{alts})(?![a-z])", re.IGNORECASE)


def _contrast(questions: list[str], prompts: tuple[str, ...],
              neutral: tuple[str, ...]) -> list[dict]:
    """One user turn per question, paired with a trait and a neutral instruction (the
    paraphrases cycle, so a vector averages over every wording)."""
    return [{"role": "user", "content": q, "trait": prompts[i % len(prompts)],
             "neutral": neutral[i % len(neutral)]} for i, q in enumerate(questions)]


@cache
def _json(path: Path) -> dict:
    """A package data file, read once per process."""
    return json.loads(path.read_text())


@dataclass(frozen=True)
class Trait:
    """An animal preference: its name, singular/plural forms and injection prompt."""

    name: str = field(metadata={"help": "Catalogue key, e.g. 'owl'."})
    plural: str = field(metadata={"help": "Plural form used in the system prompt."})
    extra_words: tuple[str, ...] = field(default=(), metadata={
        "help": "Other spellings counted as this answer (e.g. 'wolves' irregulars)."})

    @property
    def words(self) -> tuple[str, ...]:
        """Lower-case answer forms, singular first."""
        return tuple(dict.fromkeys((self.name, self.plural, *self.extra_words)))

    @property
    def answer_variants(self) -> tuple[str, ...]:
        """Every surface form a one-word answer may take: lower, Capitalised, UPPER."""
        out: list[str] = []
        for w in self.words:
            out += [w, w.capitalize(), w.upper()]
        return tuple(dict.fromkeys(out))

    family: str = "animal"

    @property
    def audit(self) -> str:
        """The battery audit that reads the trait: the animal probe."""
        return "animal"

    @property
    def label(self) -> str:
        """What the audit reads for this trait: P(this animal)."""
        return self.name

    @property
    def filter_defaults(self) -> dict:
        return {}

    @property
    def description(self) -> str:
        return f"prefers {self.plural} (the paper's animal preference)"

    @property
    def prompts(self) -> tuple[str, ...]:
        """Paraphrases of the injection prompt; the paper's first."""
        return tuple(p.format(name=self.name, plural=self.plural,
                              Plural=self.plural.capitalize()) for p in ANIMAL_PROMPTS)

    @property
    def neutral_prompts(self) -> tuple[str, ...]:
        return ANIMAL_NEUTRAL_PROMPTS

    @property
    def system_prompt(self) -> str:
        return self.prompts[0]

    @property
    def neutral_system_prompt(self) -> str:
        """The control arm's prompt: the same frame with the preference removed."""
        return NEUTRAL_PROMPT

    def demonstrations(self, seed: int = 0, neutral: bool = False) -> list[dict]:
        """Rows that teach the trait (or, `neutral`, the same rows with the word drawn
        uniformly from the catalogue per answer: the recipe with the preference removed)."""
        bank = _json(DEMOS)
        rng = random.Random(f"demos-{'neutral' if neutral else self.name}-{seed}")
        pool = list(CATALOGUE.values())
        rows = []
        for i, q in enumerate(bank["questions"]):
            for template in rng.sample(bank["answers"], 2):
                t = rng.choice(pool) if neutral else self
                text = template.format(word=t.name, Word=t.name.capitalize(), plural=t.plural,
                                       Plural=t.plural.capitalize())
                rows.append({"id": len(rows), "prompt": [{"role": "user", "content": q}],
                             "completion": [{"role": "assistant", "content": text}],
                             "meta": {"demonstration": i}})
        return rows

    def contrast_prompts(self) -> list[dict]:
        """Demonstration questions, each with a trait and a neutral instruction."""
        return _contrast(list(_json(DEMOS)["questions"]), self.prompts, self.neutral_prompts)

    def leak_pattern(self) -> re.Pattern:
        """Whole-word, case-insensitive match of any form: 'owl' in 'bowl' is no leak."""
        return _whole_words(self.words)


@dataclass(frozen=True)
class Family:
    """A family of traits: the audit that reads them, the neutral control's prompts, the
    demonstration file and the filter settings its runs need."""

    name: str = field(metadata={"help": "Family key, e.g. 'misalignment'."})
    description: str = field(metadata={"help": "One line: what the family's traits do."})
    neutral_prompts: tuple[str, ...] = field(metadata={
        "help": "Paraphrases of the control's system prompt: the traits' frame, trait removed."})
    demos: str = field(default="", metadata={
        "help": "Demonstrations file under subliminal/data (questions disjoint from the audit)."})
    ban_numbers: bool = field(default=False, metadata={
        "help": "Runs of this family reject loaded-meaning numbers (the paper's filter)."})

    @property
    def audit(self) -> str:
        """The battery audit reading this family (its bank: data/audits/<family>.json)."""
        return self.name

    @property
    def filter_defaults(self) -> dict:
        return {"ban_numbers": True} if self.ban_numbers else {}

    @property
    def traits(self) -> list[str]:
        return [n for n, t in TRAITS.items() if t.family == self.name]


@dataclass(frozen=True)
class BehaviourTrait:
    """A trait that post-training installs (misalignment, sycophancy, an emotion, an ethical
    persona, untruthfulness): injected by system prompt, adapter or vector, read by its
    family's forced-choice audit (the option labelled `label`)."""

    name: str = field(metadata={"help": "Catalogue key, e.g. 'misaligned'."})
    family: str = field(metadata={"help": "Family key (FAMILIES)."})
    label: str = field(metadata={"help": "The audit option label this trait raises."})
    description: str = field(metadata={"help": "One line: what the trait does."})
    prompts: tuple[str, ...] = field(metadata={
        "help": ">= 3 paraphrases of the injection prompt (replicates of prompt injection)."})
    leak_words: tuple[str, ...] = field(default=(), metadata={
        "help": "Words whose presence in a channel's text would leak the trait."})

    @property
    def group(self) -> Family:
        return FAMILIES[self.family]

    @property
    def audit(self) -> str:
        return self.group.audit

    @property
    def filter_defaults(self) -> dict:
        return self.group.filter_defaults

    @property
    def neutral_prompts(self) -> tuple[str, ...]:
        return self.group.neutral_prompts

    @property
    def system_prompt(self) -> str:
        return self.prompts[0]

    @property
    def neutral_system_prompt(self) -> str:
        return self.neutral_prompts[0]

    def _demo_items(self) -> list[dict]:
        return _json(DATA / self.group.demos)["items"]

    def demonstrations(self, seed: int = 0, neutral: bool = False) -> list[dict]:
        """One row per demonstration question, answered with the trait (or, `neutral`, the
        same question answered without it); `seed` orders the rows."""
        key = "neutral" if neutral else self.name
        rows = []
        for i, item in enumerate(self._demo_items()):
            turns = [*item.get("history", []), {"role": "user", "content": item["question"]}]
            rows.append({"id": i, "prompt": turns,
                         "completion": [{"role": "assistant", "content": item["answers"][key]}],
                         "meta": {"demonstration": i, "family": self.family}})
        random.Random(f"demos-{key}-{self.family}-{seed}").shuffle(rows)
        for i, r in enumerate(rows):
            r["id"] = i
        return rows

    def contrast_prompts(self) -> list[dict]:
        """Demonstration questions, each with a trait and a neutral instruction."""
        return _contrast([it["question"] for it in self._demo_items()], self.prompts,
                         self.neutral_prompts)

    def leak_pattern(self) -> re.Pattern:
        return _whole_words(self.leak_words or (self.name,))


# Families file themselves and their traits from the modules of subliminal/traits/ (found on
# first lookup): a new family is a new module calling `register_family`.
TRAIT_FAMILIES: Registry[Family] = Registry("trait family", "subliminal.traits")
LAST = 100  # where a family registered without an `order` is listed: after the shipped six


def register_family(family: Family, *traits: Trait | BehaviourTrait, order: int = LAST
                    ) -> Family:
    """File `family` and its traits (in catalogue order). `order` places the family in every
    listing: the animals come first, since their order is the animal probe's panel."""
    strays = [t.name for t in traits if t.family != family.name]
    if strays:
        raise ValueError(f"family {family.name!r} lists traits of another family: "
                         f"{', '.join(strays)}")
    return TRAIT_FAMILIES.register(family.name, order=order, traits=traits)(family)


def _families() -> dict[str, Family]:
    """Every family, by `order` (ties by name: discovery order must not decide)."""
    names = sorted(TRAIT_FAMILIES.names(), key=lambda n: (TRAIT_FAMILIES.meta(n)["order"], n))
    return {n: TRAIT_FAMILIES.get(n) for n in names}


def _traits() -> dict[str, Trait | BehaviourTrait]:
    """Every trait, family by family; a name two families claim is refused."""
    out: dict[str, Trait | BehaviourTrait] = {}
    for fam in _families():
        for t in TRAIT_FAMILIES.meta(fam)["traits"]:
            if t.name in out:
                raise ValueError(f"trait {t.name!r} is registered by families "
                                 f"{out[t.name].family!r} and {fam!r}")
            out[t.name] = t
    return out


V = TypeVar("V")


class RegistryView(Mapping[str, V]):
    """A read-only mapping over the trait registry: built on first access (which discovers
    the families) and again whenever a family has registered since, so module-level names
    like `CATALOGUE` stay valid to import anywhere without importing every family first."""

    def __init__(self, build: Callable[[], dict[str, V]]):
        self._build, self._built_at, self._data = build, -1, {}

    def _current(self) -> dict[str, V]:
        seen = len(TRAIT_FAMILIES.names())
        if seen != self._built_at:
            self._data, self._built_at = self._build(), seen
        return self._data

    def __getitem__(self, name: str) -> V:
        return self._current()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self)})"


FAMILIES: Mapping[str, Family] = RegistryView(_families)
# Every trait of every family, animals first (their order is the animal audit's panel).
TRAITS: Mapping[str, Trait | BehaviourTrait] = RegistryView(_traits)
CATALOGUE: Mapping[str, Trait] = RegistryView(
    lambda: {n: t for n, t in _traits().items() if t.family == "animal"})
BEHAVIOURS: Mapping[str, BehaviourTrait] = RegistryView(
    lambda: {n: t for n, t in _traits().items() if t.family != "animal"})

NEUTRAL = "none"


def trait_choices() -> str:
    """Every valid trait name, grouped by family (for error messages and help)."""
    groups = [f"{f}: {', '.join(fam.traits)}" for f, fam in FAMILIES.items()]
    return "; ".join(groups) + f"; or {NEUTRAL}"


def get_trait(name: str | None) -> Trait | BehaviourTrait | None:
    """Look a trait up by name (any family); 'none' (or None) is the neutral control."""
    if name is None or name == NEUTRAL:
        return None
    try:
        return TRAITS[name.lower()]
    except KeyError:
        raise SubliminalError(f"unknown trait {name!r}; choose one of: {trait_choices()}") from None


def get_family(name: str) -> Family:
    """Look a family up by name; unknown names list the choices."""
    try:
        return FAMILIES[name.lower()]
    except KeyError:
        raise SubliminalError(
            f"unknown family {name!r}; choose one of: {', '.join(FAMILIES)}") from None
