"""Shared-prefix scoring: many continuations of many prompts, each common part computed once.

    subliminal audit --out audit/        # the probe and the battery score through this module

An audit asks for log P(continuation | prompt) for hundreds of (prompt, continuation) pairs
that share most of their tokens: every prompt opens with the same chat template and system
prompt, and each prompt is scored with several continuations (an item's options, the 14
animals' words). Run naively, every pair repeats those tokens. Here they form a three-level
tree — the shared opening (computed once), each prompt's own tail (once per prompt), each
continuation (once) — and each level continues the KV cache of the one above:

    ctx = root(lm, opening)                      # one row
    ctx = extend(lm, ctx, tails)                 # one row per prompt, left-padded tails
    lp, end = continuation_logprobs(lm, ctx, rows, conts)

Rows of different lengths are padded *between* the cached part and their own tokens, with
an attention mask and explicit position ids, so every row sees exactly its own tokens at
their own positions: the result equals scoring each pair alone (to float rounding; tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import DynamicCache

from subliminal.models import LM

MAX_LOGITS = 2 ** 26  # floats of logits held at once (256 MB): bounds the rows per forward


@dataclass
class Context:
    """Rows that continue from cached tokens: the KV cache (None: nothing cached yet), the
    attention mask over the cached positions (rows, cached), each row's next position id,
    and each row's log-probabilities for the token after its last one."""

    cache: DynamicCache | None
    mask: torch.Tensor
    next_pos: torch.Tensor
    last_lp: torch.Tensor | None = None

    @property
    def rows(self) -> int:
        return self.mask.shape[0]


def common_length(prefixes: list[list[int]]) -> int:
    """How many leading tokens every prefix shares, leaving each at least one of its own
    (its last token's logits are what a continuation's first token is scored from)."""
    n = 0
    while all(len(p) > n + 1 and p[n] == prefixes[0][n] for p in prefixes):
        n += 1
    return n


def _clone(cache: DynamicCache | None, model, rows: torch.Tensor | None = None):
    """A cache object over the same tensors (or over the chosen rows): the model appends to
    the object it is given, and the parent context must stay as it was."""
    if cache is None:
        return None
    data = [(layer.keys if rows is None else layer.keys[rows],
             layer.values if rows is None else layer.values[rows]) for layer in cache.layers]
    return DynamicCache(ddp_cache_data=data, config=model.config)


def root(lm: LM, ids: list[int]) -> Context:
    """One row holding `ids` (the shared opening); empty `ids` hold nothing."""
    empty = Context(None, torch.zeros((1, 0), dtype=torch.long), torch.zeros(1, dtype=torch.long))
    if not ids:
        return empty
    ctx, _ = extend(lm, empty, [ids])
    return ctx


def select(lm: LM, ctx: Context, rows: torch.Tensor) -> Context:
    """The context of the chosen rows (repeats allowed), sharing nothing mutable."""
    return Context(_clone(ctx.cache, lm.model, rows), ctx.mask[rows], ctx.next_pos[rows],
                   None if ctx.last_lp is None else ctx.last_lp[rows])


@torch.no_grad()
def extend(lm: LM, ctx: Context, tails: list[list[int]]) -> tuple[Context, torch.Tensor]:
    """Append each row's tail to `ctx` (a one-row context serves every tail). Tails are
    left-padded so their last tokens align; returns the new context (its `last_lp` is each
    row's next-token log-probabilities) and that same (rows, vocab) tensor."""
    if ctx.rows == 1 and len(tails) > 1:
        ctx = select(lm, ctx, torch.zeros(len(tails), dtype=torch.long))
    dev, width = lm.device, max(len(t) for t in tails)
    lens = torch.tensor([len(t) for t in tails])
    ids = torch.full((len(tails), width), lm.tokenizer.pad_token_id or 0, dtype=torch.long)
    for i, t in enumerate(tails):
        ids[i, width - len(t):] = torch.tensor(t, dtype=torch.long)
    own = torch.arange(width)[None] >= (width - lens)[:, None]
    pos = ctx.next_pos[:, None] + (torch.arange(width)[None] - (width - lens)[:, None]).clamp(min=0)
    mask = torch.cat([ctx.mask, own.long()], 1)
    out = lm.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                   past_key_values=_clone(ctx.cache, lm.model), use_cache=True,
                   logits_to_keep=1)
    last = torch.log_softmax(out.logits[:, -1].float(), -1).cpu()
    return Context(out.past_key_values, mask, ctx.next_pos + lens, last), last


@torch.no_grad()
def continuation_logprobs(lm: LM, ctx: Context, rows: list[int], conts: list[list[int]],
                          stop: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """log P(conts[i] | context row rows[i]) for every i, and — with `stop`, a vocabulary
    mask of tokens that would continue the text (e.g. letters after a word) — log P(none of
    them follows), i.e. that the continuation ends there; else zeros. Continuations run in
    groups of equal length (no padding), each group in chunks that bound the logits held."""
    first = ctx.last_lp[torch.tensor(rows), torch.tensor([c[0] for c in conts])]
    total, ends = first.clone(), torch.zeros(len(conts))
    runs = [c if stop is not None else c[:-1] for c in conts]
    vocab = ctx.last_lp.shape[-1]
    if stop is not None:  # a tokenizer may list fewer tokens than the model's vocabulary
        stop = torch.cat([stop.bool(), torch.zeros(max(0, vocab - len(stop)), dtype=torch.bool)])
    for width in sorted({len(r) for r in runs} - {0}):
        idx = [i for i, r in enumerate(runs) if len(r) == width]
        step = max(1, MAX_LOGITS // (width * vocab))
        for s in range(0, len(idx), step):
            part = idx[s: s + step]
            lp = _run(lm, ctx, [rows[i] for i in part], [runs[i] for i in part])
            ids = torch.tensor([conts[i] for i in part])
            n = ids.shape[1] - 1  # positions j < n score token j+1 of the continuation
            if n > 0:
                total[part] += lp[:, :n].gather(-1, ids[:, 1:, None])[..., 0].sum(-1)
            if stop is not None:
                p_go = lp[:, -1].exp()[:, stop[: vocab]].sum(-1).clamp(max=1 - 1e-6)
                ends[part] = torch.log1p(-p_go)
    return total, ends


def _run(lm: LM, ctx: Context, rows: list[int], runs: list[list[int]]) -> torch.Tensor:
    """Log-softmax after each token of `runs` (equal lengths), each continuing its row."""
    sub = select(lm, ctx, torch.tensor(rows))
    ids = torch.tensor(runs, dtype=torch.long)
    width = ids.shape[1]
    mask = torch.cat([sub.mask, torch.ones(len(runs), width, dtype=torch.long)], 1)
    pos = sub.next_pos[:, None] + torch.arange(width)[None]
    dev = lm.device
    out = lm.model(input_ids=ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                   past_key_values=sub.cache, use_cache=True)
    return torch.log_softmax(out.logits.float(), -1).cpu()


@torch.no_grad()
def sample(lm: LM, ctx: Context, n: int, max_new_tokens: int, generator: torch.Generator,
           temperature: float = 1.0) -> list[list[int]]:
    """`n` sampled continuations of a one-row context whose cache they share (the prompt is
    read once, not n times). Tokens after an end of text are kept; the caller cuts there."""
    rows = select(lm, ctx, torch.zeros(n, dtype=torch.long))
    lp, out = rows.last_lp, [[] for _ in range(n)]
    for step in range(max_new_tokens):
        tokens = torch.multinomial(torch.softmax(lp / temperature, -1), 1,
                                   generator=generator)[:, 0].tolist()
        for seq, t in zip(out, tokens, strict=True):
            seq.append(t)
        if step + 1 < max_new_tokens:
            rows, lp = extend(lm, rows, [[t] for t in tokens])
    return out
