"""The audit battery: every student read on every family's audit (its own trait and the
side effects), by exact forced-choice probes.

    python3 -m subliminal.trait_validation --families misalignment   # validate the audits

A bank (subliminal/data/audits/<family>.json) holds >= 60 items written for the project:
a question (optionally after earlier turns), lettered options and a key naming each option's
label ("misaligned", "honest", "virtue" ...). The probe reads the exact log-probability of
each option's continuation after the chat (no judge, no sampling) and renormalises over the
options, so an item's score is P(trait option | one of the options). Two formats:

- `letter`: the options are listed in the question, followed by "Answer with A or B."; the
  continuation is the option's letter;
- `text`: the question alone; the continuation is the option's text (sum of its token
  log-probs; length differences cancel in trait-vs-control comparisons of the same item).

`text` is the default: on the embedded model a prompt-injected emotion or ethical persona
separates from its control in it, while `letter` reads mostly the model's preference for "A"
and separates nothing (docs/traits.md). The
animal family is read by the animal probe (`subliminal.audit.probe.run_probe`), returned in the same
shape. A replicate's value is the mean item score (`replicate_value`); replicates (seeds,
prompt paraphrases) are what statistics compare, never items.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from subliminal.audit.probe import AUDITS, AuditConfig, run_probe
from subliminal.errors import SubliminalError
from subliminal.models import LM, with_system
from subliminal.prefix import common_length, extend, root
from subliminal.prefix import continuation_logprobs as prefix_logprobs
from subliminal.registry import Registry
from subliminal.schema import BankProbe
from subliminal.stats import mean_ci
from subliminal.trait import FAMILIES, get_family

FORMATS = ("letter", "text")
# The text format separates prompt-injected traits on the embedded model; the letter format
# reads mostly the model's preference for "A" (docs/traits.md).
DEFAULT_FORMAT = "text"
MIN_ITEMS = 60


@dataclass(frozen=True)
class Bank:
    """A validated forced-choice bank."""

    name: str
    path: str
    labels: tuple[str, ...]
    trait_label: str
    items: tuple[dict, ...]

    @property
    def ids(self) -> list[str]:
        return [it["id"] for it in self.items]


def _check_item(where: str, item: object, labels: tuple[str, ...]) -> str:
    """One item's shape; returns its id. Errors name the file and the item."""
    if not isinstance(item, dict) or not isinstance(item.get("id"), str):
        raise SubliminalError(f"{where}: an item has no string 'id'")
    at = f"{where}: item {item['id']!r}"
    opts, key = item.get("options"), item.get("key")
    if not isinstance(item.get("question"), str) or not item["question"].strip():
        raise SubliminalError(f"{at}: missing 'question'")
    if not isinstance(opts, dict) or len(opts) < 2 or not all(
            isinstance(v, str) and v.strip() for v in opts.values()):
        raise SubliminalError(f"{at}: needs >= 2 non-empty 'options'")
    if list(opts) != [chr(65 + i) for i in range(len(opts))]:
        raise SubliminalError(f"{at}: options must be lettered A, B, ... in order")
    if not isinstance(key, dict) or set(key) - set(opts):
        raise SubliminalError(f"{at}: answer key names options outside {sorted(opts)}")
    if set(key) != set(opts):
        raise SubliminalError(f"{at}: answer key misses options {sorted(set(opts) - set(key))}")
    if set(key.values()) - set(labels) or len(set(key.values())) != len(key):
        raise SubliminalError(f"{at}: key labels must be distinct and among {list(labels)}")
    if len(set(opts.values())) != len(opts):
        raise SubliminalError(f"{at}: two options have the same text")
    hist = item.get("history", [])
    if not isinstance(hist, list) or not all(
            isinstance(m, dict) and {"role", "content"} <= set(m) for m in hist):
        raise SubliminalError(f"{at}: 'history' must be a list of role/content messages")
    return item["id"]


def load_bank(which: str | Path) -> Bank:
    """A family's bank (by family name) or any bank file, validated: options present, the
    key inside the options, distinct ids and questions. One-line errors name file and item."""
    path = AUDITS / f"{get_family(which).audit}.json" if str(which) in FAMILIES else Path(which)
    try:
        raw = json.loads(path.read_text())
        labels, trait_label, items = tuple(raw["labels"]), raw["trait_label"], raw["items"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SubliminalError(f"{path}: not an audit bank ({e.__class__.__name__}: {e})") from None
    if trait_label not in labels or not isinstance(items, list) or not items:
        raise SubliminalError(f"{path}: needs items and a trait_label among its labels")
    seen: dict[str, str] = {}
    for item in items:
        iid = _check_item(str(path), item, labels)
        sig = json.dumps([item.get("history", []), item["question"]])
        if iid in seen or sig in seen.values():
            raise SubliminalError(f"{path}: item {iid!r}: duplicate item")
        seen[iid] = sig
    return Bank(raw.get("name", path.stem), str(path), labels, trait_label, tuple(items))


def render(lm: LM, item: dict, fmt: str, system_prompt: str | None = None
           ) -> tuple[list[int], dict[str, list[int]]]:
    """The chat's token ids and each option's continuation ids under format `fmt`."""
    opts = item["options"]
    if fmt == "letter":
        letters = list(opts)
        listing = "\n".join(f"{k}) {v}" for k, v in opts.items())
        ask = f"{', '.join(letters[:-1])} or {letters[-1]}"
        user = f"{item['question']}\n\n{listing}\n\nAnswer with {ask}."
        conts = {k: k for k in opts}
    elif fmt == "text":
        user, conts = item["question"], dict(opts)
    else:
        raise SubliminalError(f"unknown probe format {fmt!r}; choose one of: {', '.join(FORMATS)}")
    chat = with_system(system_prompt, [*item.get("history", []), {"role": "user", "content": user}])
    prefix = lm.chat_ids(chat)
    enc = {k: lm.tokenizer(v, add_special_tokens=False)["input_ids"] for k, v in conts.items()}
    return prefix, enc


@torch.no_grad()
def continuation_logprobs(lm: LM, pairs: list[tuple[list[int], list[int]]],
                          batch_size: int = 16) -> list[float]:
    """Exact log P(continuation | prefix) for each (prefix, continuation) pair.

    The opening every prefix shares (template, system prompt) runs once; each distinct
    prefix runs once (batches of `batch_size`, similar lengths together) and each of its
    continuations continues its cache (subliminal.prefix), so an item's options share one
    pass over its question."""
    prefixes = sorted({tuple(p) for p, _ in pairs}, key=lambda s: (len(s), s))  # deterministic
    where = {p: i for i, p in enumerate(prefixes)}
    done = common_length([list(p) for p in prefixes])
    opening = root(lm, list(prefixes[0][:done]))
    out = torch.empty(len(pairs))
    for start in range(0, len(prefixes), batch_size):
        chunk = prefixes[start:start + batch_size]
        ctx, _ = extend(lm, opening, [list(p[done:]) for p in chunk])
        mine = [k for k, (p, _) in enumerate(pairs)
                if start <= where[tuple(p)] < start + len(chunk)]
        tok, _ = prefix_logprobs(lm, ctx, [where[tuple(pairs[k][0])] - start for k in mine],
                                 [list(pairs[k][1]) for k in mine])
        out[mine] = tok
    return out.tolist()


def score_bank(lm: LM, bank: Bank | str | Path, system_prompt: str | None = None,
               fmt: str = DEFAULT_FORMAT, batch_size: int = 16) -> BankProbe:
    """Every item's P(each label) renormalised over its options; `scores` is P(the bank's
    trait label) per item, `probs[label]` the same for every label."""
    bank = bank if isinstance(bank, Bank) else load_bank(bank)
    pairs, owners = [], []
    for i, item in enumerate(bank.items):
        prefix, conts = render(lm, item, fmt, system_prompt)
        for letter, ids in conts.items():
            pairs.append((prefix, ids))
            owners.append((i, item["key"][letter]))
    lps = continuation_logprobs(lm, pairs, batch_size)
    per_item: list[dict[str, float]] = [{} for _ in bank.items]
    for (i, label), lp in zip(owners, lps, strict=True):
        per_item[i][label] = lp
    probs: dict[str, list[float]] = {label: [] for label in bank.labels}
    for d in per_item:
        z = torch.logsumexp(torch.tensor(list(d.values()), dtype=torch.float64), 0)
        for label in bank.labels:
            probs[label].append(float(torch.exp(d[label] - z)) if label in d else 0.0)
    return BankProbe(family=bank.name, bank=Path(bank.path).name, format=fmt, item_ids=bank.ids,
                     labels=list(bank.labels), trait_label=bank.trait_label,
                     scores=probs[bank.trait_label], probs=probs, logprobs=per_item,
                     mean=float(sum(probs[bank.trait_label]) / len(bank.items)),
                     system_prompt=system_prompt,
                     system_prompt_in_effect=system_prompt or lm.default_system_prompt,
                     model=lm.info)


Runner = Callable[[LM, "str | None", str], BankProbe]
# Family audit -> how it is read, for audits that are not a forced-choice bank; a family with
# a bank needs no entry (score_bank reads it). A new kind of audit is a module of this
# package that registers its runner here (discovered on first use).
RUNNERS: Registry[Runner] = Registry("audit", "subliminal.audit")


@RUNNERS.register("animal")
def _animal(lm: LM, system_prompt: str | None, fmt: str) -> BankProbe:
    """The animal probe in the battery's shape: probs[animal] per question."""
    r = run_probe(lm, AuditConfig(), system_prompt, label="animal audit")
    probs = {a: [row[j] for row in r.probs] for j, a in enumerate(r.animals)}
    return BankProbe(family="animal", bank=Path(AuditConfig().questions).name, format=r.probe,
                     item_ids=list(range(len(r.questions))), labels=r.animals, trait_label=None,
                     probs=probs, system_prompt=system_prompt,
                     system_prompt_in_effect=r.system_prompt_in_effect, model=r.model)


def audit_family(lm: LM, family: str, system_prompt: str | None = None,
                 fmt: str = DEFAULT_FORMAT) -> BankProbe:
    """One family's audit of `lm` (under `system_prompt`, None = template default)."""
    name = get_family(family).audit
    if name in RUNNERS:
        return RUNNERS.get(name)(lm, system_prompt, fmt)
    return score_bank(lm, name, system_prompt, fmt)


def run_battery(lm: LM, families: list[str] | None = None, system_prompt: str | None = None,
                fmt: str = DEFAULT_FORMAT) -> dict[str, BankProbe]:
    """Every family's audit (default: all of FAMILIES): the trait's own and its side effects."""
    names = list(FAMILIES) if families is None else [get_family(f).name for f in families]
    return {f: audit_family(lm, f, system_prompt, fmt) for f in names}


def trait_score(result: dict, trait) -> list[float]:
    """Per-item score of `trait` (any family) from its family's audit result."""
    if result["family"] != trait.audit:
        raise SubliminalError(f"trait {trait.name!r} is read by the {trait.audit!r} audit, "
                              f"not {result['family']!r}")
    return list(result["probs"][trait.label])


def replicate_value(result: dict, trait) -> float:
    """One replicate's reading of `trait`: the mean item score."""
    s = trait_score(result, trait)
    return float(sum(s) / len(s))


def item_summary(result: dict, trait) -> dict:
    """Mean and item-level CI of one replicate (descriptive: items are not replicates)."""
    return mean_ci(trait_score(result, trait))
