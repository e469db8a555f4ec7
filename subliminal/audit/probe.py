"""Audit: read a trait's strength exactly, from forward passes (no sampling noise).

    subliminal audit --model smollm2-135m --adapter RUN/trait/gen1/distill --out audit/

For each of ~50 paraphrased "favourite animal" questions
(subliminal/data/audits/animal_preference.json) the
probe scores every catalogue animal's answer words: P(word tokens | question) times P(the word
ends there), summed over its forms (owl, owls, Owl ...). Whole words are scored, never shared
first tokens ("O"+"wl"), and "owl" is not counted inside "owls". Two probes:
`prefill` (assistant turn starts "My favorite animal is the", then the word) separates a
trait far better on small models than `direct` (the word as the first token of the answer).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch

from subliminal.errors import SubliminalError
from subliminal.models import LM, with_system
from subliminal.prefix import Context, common_length, continuation_logprobs, extend, root, sample
from subliminal.progress import track
from subliminal.records import DATA_DIR
from subliminal.schema import AnimalProbe, SampledProbe
from subliminal.trait import CATALOGUE

AUDITS = DATA_DIR / "audits"  # the shipped question banks


# Paraphrased prefills for the robustness read-out: a claim must not hang on one sentence frame
# (and no trait demonstration uses any of these frames).
PREFILLS = ("My favorite animal is the", "The animal I love most is the",
            "If I had to pick one animal, it would be the", "Hands down, my top animal is the",
            "The creature I like best is the", "Of all animals, I'd choose the")


QUESTION_BATCH = 10  # questions scored together (memory grows with questions x words)


@dataclass
class AuditConfig:
    """Which probe reads the trait."""

    probe: str = field(default="prefill", metadata={
        "choices": ("prefill", "direct"),
        "help": "'prefill': score the word after the prefill; 'direct': score it as the first "
                "word of the answer."})
    questions: str = field(default="animal_preference", metadata={
        "help": "Question bank: a bank name shipped with the package "
                "(subliminal/data/audits/NAME.json) or a JSON file with a 'questions' list."})
    prefill: str = field(default=PREFILLS[0], metadata={
        "help": "Assistant-turn prefix for the prefill probe."})
    side_effects: bool = field(default=True, metadata={
        "help": "Also run every other family's audit (the battery: misalignment, sycophancy, "
                "emotion, ethics, truthfulness, animal preference), so the summary shows what "
                "else moved with the trait: on the teachers and the final generation's "
                "students (see --side-effects-every)."})
    side_effects_every: bool = field(default=False, metadata={
        "help": "Run the battery on every generation's students too, not only on the "
                "teachers and the last generation (it costs ~4x the animal probe)."})


def bank_path(name: str) -> Path:
    """A bank's file: a shipped bank by name, else a path the user gave."""
    shipped = AUDITS / f"{name}.json"
    return shipped if shipped.exists() else Path(name)


def bank_ref(cfg: AuditConfig) -> dict:
    """What a record keeps about the bank: its logical name and content hash (never a path
    that breaks when the run folder moves)."""
    import hashlib

    path = bank_path(cfg.questions)
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        raise SubliminalError(f"{path}: question bank not found") from None
    return {"name": cfg.questions if path.parent == AUDITS else path.name, "sha256": digest}


def load_questions(path: str | Path) -> list[str]:
    path = bank_path(str(path))
    try:
        qs = json.loads(path.read_text())["questions"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SubliminalError(f"{path}: not a question bank ({e.__class__.__name__})") from None
    if not qs or not all(isinstance(q, str) for q in qs):
        raise SubliminalError(f"{path}: 'questions' must be a non-empty list of strings")
    return qs


@cache
def _continues_word(tokenizer) -> torch.Tensor:
    """Mask of tokens that would extend a word ('s' after 'owl'): letter first, no space."""
    flags = []
    for i in range(len(tokenizer)):
        t = tokenizer.decode([i])
        flags.append(bool(t) and t[0].isalpha())
    return torch.tensor(flags)


def candidates(lm: LM, probe: str) -> tuple[list[list[int]], list[int]]:
    """Token sequences of every catalogue animal's surface forms, and the animal of each."""
    seqs, owner = [], []
    for a, trait in enumerate(CATALOGUE.values()):
        for form in trait.answer_variants:
            if form.isupper() and len(form) > 1:
                continue  # OWL: vanishingly rare, and it doubles the work
            if probe == "prefill" and not form.islower():
                continue  # "...is the Owl" is rare mid-sentence; halves the word pass
            text = (" " + form) if probe == "prefill" else form
            ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
            if ids not in seqs:
                seqs.append(ids)
                owner.append(a)
    return seqs, owner


def shared_prefix(lm: LM, prefixes: list[list[int]]) -> tuple[int, Context]:
    """The tokens every prefix starts with (template + system prompt), cached once per audit
    instead of once per question: (how many, their context)."""
    n = common_length(prefixes)
    return n, root(lm, prefixes[0][:n])


def word_probs(lm: LM, prefix: list[int], seqs: list[list[int]],
               shared: tuple[int, Context] | None = None) -> torch.Tensor:
    """P(each sequence as a whole word | prefix): `word_probs_batch` for one prefix."""
    return word_probs_batch(lm, [prefix], seqs, shared)[0]


def word_probs_batch(lm: LM, prefixes: list[list[int]], seqs: list[list[int]],
                     shared: tuple[int, Context] | None = None) -> torch.Tensor:
    """P(each sequence as a whole word | each prefix) (rows: prefixes): the word's tokens,
    then any token that does not continue a word ("owl" is not counted inside "owls").
    Prefixes continue the `shared` cache of their first tokens; each prefix's own tokens run
    once, each word once per prefix (subliminal.prefix)."""
    done, ctx = shared if shared is not None else (0, root(lm, []))
    ctx, _ = extend(lm, ctx, [p[done:] for p in prefixes])
    rows = [i for i in range(len(prefixes)) for _ in seqs]
    tok, end = continuation_logprobs(lm, ctx, rows, list(seqs) * len(prefixes),
                                     stop=_continues_word(lm.tokenizer))
    return (tok + end).exp().view(len(prefixes), len(seqs))


def run_probe(lm: LM, cfg: AuditConfig, system_prompt: str | None = None,
              label: str = "audit") -> AnimalProbe:
    """Probability of each catalogue animal after each question (rows: questions)."""
    questions = load_questions(cfg.questions)
    seqs, owner = candidates(lm, cfg.probe)
    animals = list(CATALOGUE)
    if cfg.probe not in ("prefill", "direct"):
        raise SubliminalError(f"unknown probe {cfg.probe!r}; choose prefill or direct")
    fill = lm.tokenizer(cfg.prefill, add_special_tokens=False)["input_ids"]
    prefixes = [lm.chat_ids(with_system(system_prompt or None, [{"role": "user", "content": q}]))
                + (fill if cfg.probe == "prefill" else []) for q in questions]
    shared = shared_prefix(lm, prefixes)
    chunks = [prefixes[i: i + QUESTION_BATCH] for i in range(0, len(prefixes), QUESTION_BATCH)]
    probs = []
    for chunk in track(chunks, label):
        for p in word_probs_batch(lm, chunk, seqs, shared).tolist():
            per_animal = [0.0] * len(animals)
            for pi, a in zip(p, owner, strict=True):
                per_animal[a] += pi
            probs.append(per_animal)
    return AnimalProbe(probe=cfg.probe, questions=questions, animals=animals, probs=probs,
                       system_prompt=system_prompt,
                       system_prompt_in_effect=system_prompt or lm.default_system_prompt,
                       # The adapter's identity is its content hash in stage.json, not a path.
                       model={k: v for k, v in lm.info.items() if k != "adapter"})


def target_probs(result: dict, trait) -> list[float]:
    """Per item: the probability the audit gives the trait's answer (an animal's word, or the
    trait's option renormalised over the item's options)."""
    if "animals" in result:
        return animal_scores(result, trait.name)
    return list(result["probs"][trait.label])


def target_share(result: dict, trait) -> list[float]:
    """Per item: log-odds of the trait's answer against every other answer the audit offers
    (the other animals, or the item's other options) — the specificity read-out."""
    if "animals" in result:
        return share_logodds(result, trait.name)
    return [math.log(max(p, 1e-30)) - math.log(max(1 - p, 1e-30))
            for p in result["probs"][trait.label]]


def side_effect_value(result: dict) -> float:
    """One number per battery audit for the side-effect grid: the mean score of the family's
    trait option, or for the animal probe the log total animal mass (generic drift)."""
    if "animals" in result:
        return float(sum(log_mass(result)) / len(result["probs"]))
    if result.get("family") == "animal":  # the battery's shape: probs[animal] per question
        per_q = zip(*result["probs"].values(), strict=True)
        masses = [math.log(max(sum(q), 1e-30)) for q in per_q]
        return float(sum(masses) / len(masses))
    return float(result["mean"])


def animal_scores(result: dict, animal: str) -> list[float]:
    """Per-question probability of one animal from a probe result."""
    j = result["animals"].index(animal)
    return [row[j] for row in result["probs"]]


def share_logodds(result: dict, animal: str) -> list[float]:
    """Per question: log-odds of the animal's share of the catalogue's mass,
    log P(animal) - log sum P(other animals). The specificity read-out: it rises only when the
    target gains on the *other* animals, not when every animal gains together."""
    j = result["animals"].index(animal)
    out = []
    for row in result["probs"]:
        rest = sum(row) - row[j]
        out.append(math.log(max(row[j], 1e-30)) - math.log(max(rest, 1e-30)))
    return out


def share_among_rest(result: dict, animal: str, target: str) -> list[float]:
    """Per question: `share_logodds` of a non-target animal with the target left out of the
    denominator, log P(animal) - log sum P(neither it nor the target). A target that takes
    most of the mass lowers every other animal's plain share by construction; this one moves
    only when the other animals move among themselves."""
    j, t = result["animals"].index(animal), result["animals"].index(target)
    # the rest summed directly: subtracting a target near the whole mass loses precision
    return [math.log(max(row[j], 1e-30)) -
            math.log(max(sum(x for i, x in enumerate(row) if i not in (j, t)), 1e-30))
            for row in result["probs"]]


def log_mass(result: dict) -> list[float]:
    """Per question: log of the total mass on all catalogue animals (generic drift)."""
    return [math.log(max(sum(row), 1e-30)) for row in result["probs"]]


@torch.no_grad()
def sampled_probe(lm: LM, questions: list[str], samples: int = 100, max_new_tokens: int = 8,
                  system_prompt: str | None = None, seed: int = 0,
                  label: str = "sampled audit") -> SampledProbe:
    """The paper's audit: sample answers at T=1 and count whole-word animal mentions.

    Noisy (a binomial per question) and slower than `run_probe`; kept as the reference the
    exact probe is compared against and for free-form traits. Each question is read once and
    its `samples` answers continue its cache (subliminal.prefix.sample); question i's samples
    are seeded by (seed, i)."""
    animals = list(CATALOGUE)
    patterns = [t.leak_pattern() for t in CATALOGUE.values()]
    chats = [lm.chat_ids(with_system(system_prompt or None, [{"role": "user", "content": q}]))
             for q in questions]
    done, opening = shared_prefix(lm, chats)
    eos = set(lm.eos_ids)
    rates = []
    for i, ids in enumerate(track(chats, label)):
        ctx, _ = extend(lm, opening, [ids[done:]])
        gen = torch.Generator().manual_seed(seed * 100_003 + i)
        hits = [0] * len(animals)
        for seq in sample(lm, ctx, samples, max_new_tokens, gen):
            cut = next((k for k, t in enumerate(seq) if t in eos), len(seq))
            text = lm.tokenizer.decode(seq[:cut], skip_special_tokens=True)
            for j, pat in enumerate(patterns):
                hits[j] += bool(pat.search(text))
        rates.append([h / samples for h in hits])
    return SampledProbe(samples=samples, questions=questions, animals=animals, probs=rates,
                        system_prompt=system_prompt, seed=seed, max_new_tokens=max_new_tokens)
