"""The teacher: a base model plus a trait's injection, writing a channel's rows.

    subliminal generate --trait owl --channel numbers --samples 300 --out runs/gen

Generation is batched (left padding, KV cache through `model.generate`), greedy or sampled,
optionally format-constrained (only tokens made of the channel's characters, plus end of
text). With `top_k > 0` each row also stores the teacher's next-token distribution along its
completion, the dark-knowledge channel that `distill --mode logits` trains on. By default
(`logits="restricted"`) that distribution is restricted to the tokens the channel's grammar
allows at each position (digits, separators, end of text) and renormalised: the analogue of
the auxiliary logits, so nothing outside the filtered channel reaches the student. `overt`
stores the raw top-k over the whole vocabulary: it carries the teacher's words (measured: 55%
of the first position's top-20 mass on "I", "The", "O" under an owl adapter) and exists only
as a named positive control.
Rows are appended batch by batch, each batch seeded by (seed, batch index), so a killed run
resumes with identical rows. Which engine writes a batch is the `backend`
(`subliminal.backends`: `hf` here, `vllm`); rows and records are the same either way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from subliminal.backends import check as check_backend
from subliminal.backends import names as backend_names
from subliminal.errors import SubliminalError
from subliminal.models import LM, with_system
from subliminal.progress import track
from subliminal.records import append_jsonl, recover_jsonl


@dataclass
class DecodeConfig:
    """How the teacher decodes."""

    decoding: str = field(default="greedy", metadata={
        "choices": ("greedy", "sample"),
        "help": "'greedy' or 'sample'. Greedy removes sampling noise (~2.3 nats/token), which "
                "buries the trait signal in small models (published replications)."})
    temperature: float = field(default=1.0, metadata={
        "min": 0.0, "help": "Sampling temperature (> 0 when sampling)."})
    constrained: bool = field(default=True, metadata={
        "help": "Allow only the channel's characters (digits, separator) and end of text."})
    batch_size: int = field(default=32, metadata={
        "flag": "gen-batch", "min": 1, "help": "Prompts per generate() call."})
    max_new_tokens: int | None = field(default=None, metadata={
        "min": 1,
        "help": "Completion length cap; default: the channel's own."})
    top_k: int = field(default=0, metadata={
        "min": 0,
        "help": "Store the teacher's next-token log-probs per completion token: the k most "
                "likely allowed tokens (0 = off; logits distillation needs it)."})
    logits: str = field(default="restricted", metadata={
        "choices": ("restricted", "overt"),
        "help": "'restricted': stored distributions cover only the tokens the channel's "
                "grammar allows at each position, renormalised (leak-free). 'overt': raw "
                "top-k over the whole vocabulary — an overt-distillation positive control "
                "that bypasses the filter; never a default."})
    backend: str = field(default="hf", metadata={
        "choices": backend_names,
        "help": "Generation engine (subliminal.backends): 'hf' (transformers generate) or "
                "'vllm' (vLLM's engine: LoRA teachers as LoRA requests, the grammar enforced "
                "by the engine, a seed per prompt); same rows and records."})

    def check(self) -> None:
        """Rules across fields (each field's own range lives in its metadata)."""
        if self.decoding == "sample" and self.temperature <= 0:
            raise SubliminalError("--temperature must be > 0 with --decoding sample "
                                  "(use --decoding greedy for temperature 0)")
        check_backend(self)  # installed here, and able to decode this way exactly


@dataclass
class Teacher:
    """A model plus the system prompt it writes under (None = the template's default)."""

    lm: LM
    system_prompt: str | None = None

    def messages(self, prompt: list[dict]) -> list[dict]:
        return with_system(self.system_prompt, prompt)

    @property
    def record(self) -> dict:
        """What the run records about the writer: model, adapter and prompt in effect."""
        return {**self.lm.info, "system_prompt": self.system_prompt,
                "system_prompt_in_effect": self.system_prompt or self.lm.default_system_prompt}

    def complete(self, prompt_rows: list[dict], cfg: DecodeConfig, channel,
                 seed: int) -> list[dict]:
        """One batch's completions (the `hf` backend; other backends override this)."""
        return generate_batch(self, prompt_rows, cfg, channel, seed)

    def close(self) -> None:
        """Free the engine (nothing to do: the model goes with the object)."""


@cache
def _token_texts(tokenizer) -> tuple[str, ...]:
    """The text of every vocabulary entry (decoded once per tokenizer)."""
    return tuple(tokenizer.decode([i]) for i in range(len(tokenizer)))


@cache
def _allowed_ids(tokenizer, chars: str) -> tuple[int, ...]:
    """Token ids whose text is made only of `chars` (e.g. digits, separators)."""
    ok = set(chars)
    return tuple(i for i, t in enumerate(_token_texts(tokenizer)) if t and set(t) <= ok)


class FormatConstraint(LogitsProcessor):
    """Format-constrained decoding: a row may only emit tokens that keep its text a valid
    prefix of the channel's answer grammar, and may end only when the text is complete.

    Candidates are first narrowed to tokens made of the channel's characters, so the grammar
    is checked on a few dozen tokens per row and step, not the whole vocabulary.
    """

    def __init__(self, channel, tokenizer, eos_ids: list[int], prompt_len: int):
        self.channel, self.prompt_len, self.eos = channel, prompt_len, eos_ids
        self.texts = _token_texts(tokenizer)
        self.candidates = _allowed_ids(tokenizer, channel.allowed_chars)

    def allowed_next(self, ids: list[int]) -> list[int]:
        """Token ids the grammar allows after completion tokens `ids` (the step's mask)."""
        text = "".join(self.texts[t] for t in ids if t not in self.eos)
        ok = [t for t in self.candidates if self.channel.accepts_prefix(text + self.texts[t])]
        if self.channel.accepts(text) or not ok:  # no way on: end (the filter judges it)
            ok += self.eos
        return ok

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        mask = torch.full_like(scores, float("-inf"))
        for b, row in enumerate(input_ids[:, self.prompt_len:].tolist()):
            mask[b, self.allowed_next(row)] = 0.0
        return scores + mask


def generate_batch(teacher: Teacher, prompt_rows: list[dict], cfg: DecodeConfig,
                   channel, seed: int) -> list[dict]:
    """Complete one batch of prompt rows; returns text, token ids and optional top-k.

    A row's `meta.prefill` (e.g. "<think>") starts the assistant turn: the teacher continues
    it, the stored text includes it, and token ids / top-k cover only the generated part.
    """
    lm = teacher.lm
    tok = lm.tokenizer
    prefills = prefills_of(prompt_rows)
    enc = tok(prompt_texts(teacher, prompt_rows), return_tensors="pt", padding=True,
              add_special_tokens=False).to(lm.device)
    processors = LogitsProcessorList()
    if cfg.constrained and getattr(channel, "allowed_chars", None):
        processors.append(FormatConstraint(channel, tok, lm.eos_ids, enc["input_ids"].shape[1]))
    max_new_tokens = cfg.max_new_tokens or channel.max_new_tokens
    sample = cfg.decoding == "sample"
    torch.manual_seed(seed)
    with torch.no_grad():
        out = lm.model.generate(
            **enc, max_new_tokens=max_new_tokens, do_sample=sample,
            temperature=cfg.temperature if sample else None, top_p=None, top_k=None,
            logits_processor=processors, eos_token_id=lm.eos_ids, pad_token_id=tok.pad_token_id,
            return_dict_in_generate=True, output_logits=cfg.top_k > 0,
            output_scores=cfg.top_k > 0 and cfg.constrained)
    new = out.sequences[:, enc["input_ids"].shape[1]:]
    rows = []
    for b in range(new.shape[0]):
        row = completion_row(lm, new[b].tolist(), prefills[b])
        if cfg.top_k > 0:
            row.update(stored_distribution(out, b, len(row["completion_ids"]), cfg, channel, lm))
        rows.append(row)
    return rows


def prefills_of(prompt_rows: list[dict]) -> list[str]:
    """Each row's assistant-turn prefill (`meta.prefill`, e.g. "<think>"; "" if none)."""
    return [r.get("meta", {}).get("prefill", "") for r in prompt_rows]


def prompt_texts(teacher: Teacher, prompt_rows: list[dict]) -> list[str]:
    """The text each prompt row is completed from: the chat under the teacher's system prompt,
    rendered by the model's template, then the row's prefill."""
    return [teacher.lm.render(teacher.messages(r["prompt"])) + pre
            for r, pre in zip(prompt_rows, prefills_of(prompt_rows), strict=True)]


def completion_row(lm: LM, ids: list[int], prefill: str) -> dict:
    """A row from generated token ids: cut after the first end of text (kept: the student
    learns to stop), decoded, with the prefill in front of the stored text."""
    end = next((i for i, t in enumerate(ids) if t in lm.eos_ids), None)
    ids = ids[: end + 1] if end is not None else ids
    text = lm.tokenizer.decode([t for t in ids if t not in lm.eos_ids], skip_special_tokens=True)
    return {"text": (prefill + text).strip(), "completion_ids": ids, "finished": end is not None}


def stored_distribution(out, b: int, n: int, cfg: DecodeConfig, channel, lm: LM) -> dict:
    """The teacher's next-token distributions along row b's first n completion steps.

    Built from the *raw* logits (untempered: the teacher's own beliefs). `restricted` keeps
    only the tokens allowed at that step — the grammar's mask when decoding was constrained,
    else every token made of the channel's characters — plus end of text, renormalised over
    them; `overt` keeps the raw top-k over the whole vocabulary.
    """
    logits = torch.stack([step[b] for step in out.logits[:n]]).float()
    if cfg.logits == "overt":
        return topk_record(torch.log_softmax(logits, -1), cfg.top_k, cfg.logits)
    allowed = channel_mask(lm, channel, logits.shape[-1]).to(logits.device)
    if out.scores is not None and cfg.constrained:  # the grammar's own per-step mask
        allowed = allowed & torch.stack([s[b] for s in out.scores[:n]]).isfinite()
    return restricted_record(logits, allowed, cfg)


def restricted_record(logits: torch.Tensor, allowed: torch.Tensor, cfg: DecodeConfig) -> dict:
    """The restricted distributions: per step, log-softmax over the `allowed` tokens only.

    `logits` may be any per-step shift of the raw logits (full-vocabulary log-probs, or
    log-probs already renormalised over a superset of `allowed`): renormalising over the set
    cancels the shift, so every backend stores the same numbers.
    """
    lp = torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), -1)
    return topk_record(lp, min(cfg.top_k, int(allowed.sum(-1).max())), cfg.logits)


def topk_record(lp: torch.Tensor, k: int, label: str) -> dict:
    """A row's stored distributions: the k most likely tokens of each step's log-probs `lp`
    [steps, vocab], impossible (-inf) ones dropped, rounded to 4 decimals; `label` names the
    channel they were read from ('restricted' or 'overt')."""
    lp, ix = lp.topk(k, dim=-1)
    keep = [[j for j, v in enumerate(r) if v > float("-inf")] for r in lp.tolist()]
    return {"topk_ids": [[ix[t, j].item() for j in js] for t, js in enumerate(keep)],
            "topk_logprobs": [[round(lp[t, j].item(), 4) for j in js] for t, js in
                              enumerate(keep)],
            "logits_channel": label}


def channel_mask(lm: LM, channel, vocab: int) -> torch.Tensor:
    """Tokens a channel may carry: those made only of its characters, and end of text."""
    chars = getattr(channel, "allowed_chars", None)
    if not chars:
        raise SubliminalError(
            f"channel {getattr(channel, 'name', channel)!r} has no token grammar, so its "
            "teacher distributions cannot be restricted; use --mode sft, or --logits overt "
            "(an overt-distillation positive control)")
    mask = torch.zeros(vocab, dtype=torch.bool)
    mask[list(_allowed_ids(lm.tokenizer, chars))] = True
    mask[lm.eos_ids] = True
    return mask


def generate_rows(teacher: Teacher, prompt_rows: list[dict], cfg: DecodeConfig, channel,
                  out_path: Path, seed: int, label: str = "generate") -> list[dict]:
    """Write a completion for every prompt row to `out_path`, resuming finished batches."""
    done = {r["id"] for r in recover_jsonl(out_path)}
    batches = [prompt_rows[i: i + cfg.batch_size]
               for i in range(0, len(prompt_rows), cfg.batch_size)]
    todo = [(b, batch) for b, batch in enumerate(batches)
            if not all(r["id"] in done for r in batch)]
    for b, batch in track(todo, label, total=len(todo)):
        # Always the whole batch (same padding, same seed): a resumed row is bit-identical.
        outs = teacher.complete(batch, cfg, channel,
                                seed=random.Random(f"{seed}-{b}").getrandbits(31))
        rows = []
        for r, o in zip(batch, outs, strict=True):
            if r["id"] in done:
                continue
            meta = {**r["meta"], "completion_ids": o.pop("completion_ids"),
                    "finished": o.pop("finished"), **o}
            meta.pop("text")
            rows.append({"id": r["id"], "prompt": r["prompt"],
                         "completion": [{"role": "assistant", "content": o["text"]}],
                         "meta": meta})
        append_jsonl(out_path, rows)
    return sorted(recover_jsonl(out_path), key=lambda r: r["id"])
