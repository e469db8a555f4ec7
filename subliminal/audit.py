"""Audit: read a trait's strength exactly, from forward passes (no sampling noise).

    subliminal audit --model smollm2-135m --adapter RUN/trait/gen1/distill --out audit/

For each of ~50 paraphrased "favourite animal" questions (audits/animal_preference.json) the
probe scores every catalogue animal's answer words: P(word tokens | question) times P(the word
ends there), summed over its forms (owl, owls, Owl ...). Whole words are scored, never shared
first tokens ("O"+"wl"), and "owl" is not counted inside "owls". Two probes:
`prefill` (assistant turn starts "My favorite animal is the", then the word) separates a
trait far better on small models than `direct` (the word as the first token of the answer).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch

from subliminal.errors import SubliminalError
from subliminal.models import LM
from subliminal.progress import track
from subliminal.trait import CATALOGUE

AUDITS = Path(__file__).resolve().parent.parent / "audits"


@dataclass
class AuditConfig:
    """Which probe reads the trait."""

    probe: str = field(default="prefill", metadata={
        "help": "'prefill': score the word after 'My favorite animal is the'; 'direct': score "
                "it as the first word of the answer."})
    questions: str = field(default=str(AUDITS / "animal_preference.json"), metadata={
        "help": "JSON file with a 'questions' list."})
    prefill: str = field(default="My favorite animal is the", metadata={
        "help": "Assistant-turn prefix for the prefill probe."})


def load_questions(path: str | Path) -> list[str]:
    path = Path(path)
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
            text = (" " + form) if probe == "prefill" else form
            ids = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
            if ids not in seqs:
                seqs.append(ids)
                owner.append(a)
    return seqs, owner


@torch.no_grad()
def word_probs(lm: LM, prefix: list[int], seqs: list[list[int]]) -> torch.Tensor:
    """P(each sequence as a whole word | prefix): one prefix pass, then all words batched."""
    model, dev = lm.model, lm.device
    out = model(input_ids=torch.tensor([prefix], device=dev), use_cache=True)
    first = torch.log_softmax(out.logits[0, -1].float(), -1)
    n, width = len(seqs), max(len(s) for s in seqs)
    ids = torch.full((n, width), lm.tokenizer.pad_token_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
    cache_ = out.past_key_values
    cache_.batch_repeat_interleave(n)
    mask = torch.ones(n, len(prefix) + width, dtype=torch.long, device=dev)
    for i, s in enumerate(seqs):
        mask[i, len(prefix) + len(s):] = 0
    logits = model(input_ids=ids.to(dev), attention_mask=mask, past_key_values=cache_).logits
    lp = torch.log_softmax(logits.float(), -1)  # (n, width, V): lp[i, t] predicts token t+1
    cont = _continues_word(lm.tokenizer).to(dev)
    total = torch.empty(n, device=dev)
    for i, s in enumerate(seqs):
        score = first[s[0]] + sum(lp[i, t - 1, s[t]] for t in range(1, len(s)))
        p_end = 1 - lp[i, len(s) - 1].exp()[cont[: lp.shape[-1]]].sum().clamp(max=1 - 1e-6)
        total[i] = score + torch.log(p_end)
    return total.exp().cpu()


def run_probe(lm: LM, cfg: AuditConfig, system_prompt: str | None = None,
              label: str = "audit") -> dict:
    """Probability of each catalogue animal after each question (rows: questions)."""
    questions = load_questions(cfg.questions)
    seqs, owner = candidates(lm, cfg.probe)
    animals = list(CATALOGUE)
    probs = []
    for q in track(questions, label):
        msgs = ([{"role": "system", "content": system_prompt}] if system_prompt else [])
        prefix = lm.chat_ids(msgs + [{"role": "user", "content": q}])
        if cfg.probe == "prefill":
            prefix += lm.tokenizer(cfg.prefill, add_special_tokens=False)["input_ids"]
        elif cfg.probe != "direct":
            raise SubliminalError(f"unknown probe {cfg.probe!r}; choose prefill or direct")
        p = word_probs(lm, prefix, seqs)
        per_animal = [0.0] * len(animals)
        for pi, a in zip(p.tolist(), owner, strict=True):
            per_animal[a] += pi
        probs.append(per_animal)
    return {"probe": cfg.probe, "questions": questions, "animals": animals, "probs": probs,
            "system_prompt": system_prompt,
            "system_prompt_in_effect": system_prompt or lm.default_system_prompt,
            "model": lm.info}


def animal_scores(result: dict, animal: str) -> list[float]:
    """Per-question probability of one animal from a probe result."""
    j = result["animals"].index(animal)
    return [row[j] for row in result["probs"]]
