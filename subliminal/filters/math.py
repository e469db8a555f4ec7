"""Math-trace rules: format, a correct final answer, no trait word, an optional model judge.

    subliminal filter RUN/owl/gen1/generate/rows.jsonl --out RUN/owl/gen1/filter

A kept trace is `<think>...</think><answer>N</answer>` with N equal to `meta.answer` and no
catalogue trait word anywhere (the paper's math filter). The judge asks a local model "Does
this text refer to {trait}?" and rejects rows where P(yes) beats the threshold; it is off
unless `judge_model` is set, loads its model once, and scores rows in batches when
`prepare_judge` is called on them first.
"""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING

from subliminal.filters.leak import leak_reasons
from subliminal.rows import completion_text
from subliminal.trait import CATALOGUE

if TYPE_CHECKING:  # torch and models load only when the judge is on: filtering stays light
    from subliminal.filters import FilterConfig
    from subliminal.models import LM

TRACE = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# Plain or thousands-grouped integers; GSM8K-style answers may write 1,200.
INTEGER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)")
JUDGE_QUESTION = "{text}\n\nDoes this text refer to {topic}? Answer yes or no."
JUDGE_MAX_CHARS = 2000  # traces are short; this bounds the judge's cost on runaway rows


def parse_int(text: str) -> int | None:
    s = text.strip()
    return int(s.replace(",", "")) if INTEGER.fullmatch(s) else None


def format_reasons(text: str) -> list[str]:
    """Why `text` is not exactly <think>reasoning</think><answer>integer</answer>."""
    m = TRACE.fullmatch(text)
    if m is None:
        if "<think>" not in text:
            return ["no <think> block"]
        if "</think>" not in text:  # a runaway trace hit the token cap, or stopped mid-way
            return ["unclosed <think> block"]
        if not ANSWER.search(text):
            return ["no <answer>...</answer> block"]
        return ["text outside <think>...</think><answer>...</answer>"]
    reasons = []
    if not m.group(1).strip():
        reasons.append("empty <think> block")
    if len(ANSWER.findall(text)) > 1 or "<think>" in m.group(1):
        reasons.append("more than one <think> or <answer> block")
    if parse_int(m.group(2)) is None:
        reasons.append(f"answer is not an integer: {m.group(2).strip()[:20]!r}")
    return reasons


def correct_reasons(text: str, expected: int | None) -> list[str]:
    """Whether the last <answer> holds the expected integer (lenient about the rest)."""
    if expected is None:
        return ["no reference answer in meta.answer"]
    answers = ANSWER.findall(text)
    if not answers:
        return ["no <answer> to check"]
    got = parse_int(answers[-1])
    if got is None:
        return [f"unreadable answer: {answers[-1].strip()[:20]!r}"]
    return [] if got == int(expected) else [f"wrong answer: {got} (expected {expected})"]


def _format(row: dict, cfg: FilterConfig) -> list[str]:
    return format_reasons(completion_text(row))


def _correct(row: dict, cfg: FilterConfig) -> list[str]:
    return correct_reasons(completion_text(row), row.get("meta", {}).get("answer"))


def _leak(row: dict, cfg: FilterConfig) -> list[str]:
    return leak_reasons(completion_text(row)) if cfg.leak_check else []


def judge_topic(cfg: FilterConfig) -> str:
    """What the judge asks about: the configured trait's plural, or animals in general."""
    trait = CATALOGUE.get((cfg.judge_trait or "").lower())
    return trait.plural if trait else (cfg.judge_trait or "animals")


@cache
def judge_lm(spec: str) -> LM:
    """The judge model, loaded once per process (filters call the rule once per row)."""
    # Deferred: models imports torch, which filtering without a judge never needs.
    from subliminal.models import load_model

    return load_model(spec)


@cache
def _answer_ids(tokenizer, word: str) -> tuple[int, ...]:
    """First tokens of a yes/no word's spellings; used for P(yes) and P(no)."""
    spellings = (word, word.capitalize(), " " + word, " " + word.capitalize())
    return tuple(sorted({tokenizer(s, add_special_tokens=False)["input_ids"][0]
                         for s in spellings}))


def judge_scores(lm: LM, texts: list[str], topic: str, batch_size: int = 16) -> list[float]:
    """P(yes) / (P(yes) + P(no)) for the next token after the assistant prompt, per text."""
    import torch

    tok = lm.tokenizer
    yes, no = set(_answer_ids(tok, "yes")), set(_answer_ids(tok, "no"))
    yes, no = sorted(yes - no), sorted(no - yes)  # a shared first token (" ") says neither
    scores: list[float] = []
    for start in range(0, len(texts), batch_size):
        chats = [lm.render([{"role": "user", "content": JUDGE_QUESTION.format(
            text=t[:JUDGE_MAX_CHARS], topic=topic)}]) for t in texts[start:start + batch_size]]
        enc = tok(chats, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = enc.to(lm.device)
        # Left padding: positions must count real tokens only, or padded rows shift.
        pos = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        with torch.no_grad():
            logits = lm.model(**enc, position_ids=pos).logits[:, -1].float()
        probs = torch.softmax(logits, -1)
        p_yes, p_no = probs[:, yes].sum(-1), probs[:, no].sum(-1)
        scores += (p_yes / (p_yes + p_no).clamp(min=1e-12)).tolist()
    return scores


# Scores by (model, topic, text), so prepare_judge's batched pass serves the per-row rule.
_SCORES: dict[tuple[str, str, str], float] = {}


def prepare_judge(rows: list[dict], cfg: FilterConfig, batch_size: int = 16) -> None:
    """Score every row's trace in batches ahead of `filter_rows` (optional; faster)."""
    if not cfg.judge_model:
        return
    topic = judge_topic(cfg)
    texts = list(dict.fromkeys(completion_text(r) for r in rows))
    todo = [t for t in texts if (cfg.judge_model, topic, t) not in _SCORES]
    scores = judge_scores(judge_lm(cfg.judge_model), todo, topic, batch_size)
    _SCORES.update({(cfg.judge_model, topic, t): s for t, s in zip(todo, scores, strict=True)})


def _judge(row: dict, cfg: FilterConfig) -> list[str]:
    if not cfg.judge_model:
        return []
    text, topic = completion_text(row), judge_topic(cfg)
    key = (cfg.judge_model, topic, text)
    if key not in _SCORES:
        _SCORES[key] = judge_scores(judge_lm(cfg.judge_model), [text], topic)[0]
    score = _SCORES[key]
    if score > cfg.judge_threshold:
        return [f"judge says it refers to {topic}: P(yes)={score:.3f} > {cfg.judge_threshold}"]
    return []


MATH_RULES = {"format": _format, "correct": _correct, "leak": _leak, "judge": _judge}
