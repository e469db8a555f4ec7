"""`subliminal scan DATA --model BASE`: per-row log-likelihoods under BASE and its trait
injections, forward passes only.

    subliminal scan rows.jsonl --model smollm2-135m --injection adapter --traits owl,dolphin,cat

For each row: the mean per-token log-likelihood of the completion tokens under plain BASE (the
template's default system prompt) and under each trait injection (the trait's system prompt,
or BASE + the trait's LoRA, subliminal/injections/adapter.py). The judging of these numbers
lives in `scan.null`: a reference population of trait-free teachers sets every null
(`scan.population`), never DATA's rows alone.

Speed (adapter injection): every adapter is loaded once; a batch of rows is scored under every
condition in one forward pass (PEFT routes each row of a mixed batch to its own LoRA through
`adapter_names=`); the system prefix is run once per chunk of rows and, with `prompt_states='base'`
(default), each row's user turn is run once under BASE and its KV cache shared by every
condition, so a condition costs only the completion tokens. With the prompt injection each
condition has its own system prompt and is scored in its own pass (prefix cached per batch).
The same pass keeps BASE's mean residual activation over each row's completion at
`vector_layer` (the persona-vector ranker, `scan.persona`).
"""

from __future__ import annotations

import copy
import math
import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from subliminal.errors import SubliminalError
from subliminal.injections.adapter import trait_adapter
from subliminal.models import LM, with_system
from subliminal.progress import track
from subliminal.trait import CATALOGUE
from subliminal.vectors import decoder_layers

NEUTRAL = "none"
BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" inside a mixed batch


@dataclass
class LikelihoodConfig:
    """How the likelihoods are measured and judged."""

    batch_size: int = field(default=8, metadata={
        "help": "Rows per forward pass (each row is scored under every condition in it)."})
    score_rows: int | None = field(default=256, metadata={
        "help": "Rows (a seeded random sample) scored under every condition; None = all."})
    context: str = field(default="full", metadata={
        "help": "'full': system + the row's prompt + completion (what fine-tuning sees); "
                "'completion': system + an empty user turn + completion (cheaper)."})
    prompt_states: str = field(default="base", metadata={
        "help": "'base': each row's prompt is read once by BASE and every condition scores "
                "the completion on BASE's cached prompt states (fast; references are scored "
                "the same way); 'condition': every condition reads the prompt too (exact)."})
    mixed: bool = field(default=True, metadata={
        "help": "Score all adapter conditions of a batch in one mixed forward pass (off: one "
                "pass per condition, same numbers; for benchmarks)."})
    max_prompt_tokens: int = field(default=256, metadata={
        "help": "Keep at most the last N tokens of the user turn(s)."})
    max_completion_tokens: int = field(default=128, metadata={
        "help": "Score at most the first N completion tokens (plus end of turn)."})
    top_rows: int = field(default=10, metadata={"help": "Top carrier rows reported."})
    alpha: float = field(default=0.05, metadata={
        "help": "False-positive rate the detection threshold is set for (Bonferroni over "
                "traits)."})
    seed: int = field(default=0, metadata={"help": "Seed for row sampling and references."})
    injection: str = field(default="adapter", metadata={
        "help": "How a trait is injected into BASE: 'adapter' (BASE + its LoRA, trained on "
                "first use: ~1.5-3 CPU minutes per adapter on the embedded model, then cached "
                "per machine) or 'prompt' (its system prompt; one control: the neutral "
                "system prompt)."})
    traits: list[str] | None = field(default=None, metadata={
        "help": "Catalogue traits to rank (default: owl, dolphin, eagle, elephant, wolf, cat "
                "with adapters, all with prompts); names the top among these only."})
    adapters: dict[str, str] = field(default_factory=dict, metadata={
        "help": "With injection 'adapter': your own LoRA folder per trait or control "
                "({trait: folder}; 'neutral-K' for the population's neutral teacher of seed K); "
                "the others are trained (or copied from the machine cache)."})
    time_budget_s: float | None = field(default=None, metadata={
        "help": "Stop scoring new rows after this many seconds and judge on the rows scored "
                "so far (a random sample: rows are scored in random order); None = no limit."})
    population_rows: int = field(default=32, metadata={
        "help": "Rows each reference teacher writes on its own sample of DATA's prompts (0 = "
                "no population: the scan then only reports, never accuses)."})
    population_neutral: int = field(default=5, metadata={
        "help": "Neutral LoRA teachers in the population (seeds 0..N-1, trained like the "
                "trait adapters on trait-free demonstrations, sampled at T=1)."})
    population: str | None = field(default=None, metadata={
        "help": "A reference population folder built by an earlier scan (OUT/population) or "
                "by the validation; reused instead of building one."})
    reference_decodings: list[str] = field(default_factory=lambda: ["greedy", "0.7", "1.0"],
                                           metadata={
        "help": "Decodings of the population's BASE teachers: 'greedy' or a sampling "
                "temperature; they bracket the decodings a publisher may have used."})
    vector_layer: float = field(default=0.6, metadata={
        "help": "Decoder layer of the persona-vector ranker, as a share of depth (0.6 = 60%)."})


DEFAULT_ADAPTER_TRAITS = ["owl", "dolphin", "eagle", "elephant", "wolf", "cat"]


@dataclass
class Encoded:
    """One row's tokens after the system prefix, and how many are completion tokens."""

    ids: list[int]
    n_completion: int
    completion_ids: list[int]
    offsets: list[tuple[int, int]]


@dataclass
class Condition:
    """One way of scoring: plain BASE, a control, or a trait injection (prompt or adapter)."""

    name: str
    system: str | None = None
    adapter: str | None = None  # a PEFT LoRA folder
    role: str = "trait"  # "base" or "trait"


def check_traits(traits: list[str] | None, injection: str) -> list[str]:
    names = list(traits) if traits else (DEFAULT_ADAPTER_TRAITS if injection == "adapter"
                                         else list(CATALOGUE))
    unknown = [t for t in names if t not in CATALOGUE]
    if unknown:
        raise SubliminalError(f"unknown trait(s) {', '.join(unknown)}; the catalogue has "
                              f"{', '.join(CATALOGUE)}")
    if len(names) < 2:
        raise SubliminalError("rank at least two traits (specificity compares traits)")
    if injection not in ("prompt", "adapter"):
        raise SubliminalError(f"unknown injection {injection!r}; choose prompt or adapter")
    return names


def conditions(traits: list[str] | None = None, injection: str = "prompt", model: str = "",
               adapter_root: Path | None = None, device: str | None = None,
               adapters: dict[str, str] | None = None) -> list[Condition]:
    """BASE first, then one condition per trait: its system prompt, or BASE + its LoRA (seed
    0; given, reused from the machine cache, or trained)."""
    names = check_traits(traits, injection)
    base = Condition(NEUTRAL, role="base")
    if injection == "prompt":
        return [base] + [Condition(t, CATALOGUE[t].system_prompt) for t in names]

    given = {k: v for k, v in (adapters or {}).items() if not k.startswith("neutral-")}
    for t, folder in given.items():
        if t not in names:
            raise SubliminalError(f"--adapter {t}={folder}: {t} is not one of the ranked "
                                  f"traits ({', '.join(names)})")
        if not (Path(folder) / "adapter_config.json").is_file():
            raise SubliminalError(f"{folder}: no adapter_config.json; not a LoRA folder for {t}")
    root = Path(adapter_root or tempfile.mkdtemp(prefix="scan-adapters-"))
    return [base] + [
        Condition(t, adapter=str(given.get(t) or
                                 trait_adapter(model, CATALOGUE[t], root / t, device)))
        for t in names]


@contextmanager
def switchable(lm: LM, conds: list[Condition]) -> Iterator:
    """Yield the PEFT model with every condition's adapter loaded once (None when no
    condition has one). On exit the LoRA layers are removed, so `lm` is plain BASE again."""
    with_adapter = [c for c in conds if c.adapter]
    if not with_adapter:
        yield None
        return
    from peft import PeftModel

    peft = PeftModel.from_pretrained(lm.model, with_adapter[0].adapter,
                                     adapter_name=with_adapter[0].name)
    for c in with_adapter[1:]:
        peft.load_adapter(c.adapter, adapter_name=c.name)
    peft.eval()
    try:
        yield peft
    finally:
        peft.unload()


@contextmanager
def use(peft, lm: LM, cond: Condition) -> Iterator:
    """The model that scores under `cond` alone (one adapter active, or none)."""
    if peft is None:
        yield lm.model
    elif cond.adapter:
        peft.set_adapter(cond.name)
        yield peft
    else:
        with peft.disable_adapter():
            yield peft


def prefix_text(lm: LM, system: str | None) -> str:
    """Rendered chat up to (and including) the user header, under `system`."""
    text = lm.render(with_system(system, [{"role": "user", "content": "\x00"}]),
                     add_generation_prompt=False)
    return text.split("\x00")[0]


def encode_rows(lm: LM, rows: list[dict], cfg: LikelihoodConfig) -> list[Encoded]:
    """Tokenise each row once: user turn(s) + assistant header, then completion + EOS."""
    tok = lm.tokenizer
    pre = prefix_text(lm, None)
    eos = lm.eos_ids[-1:]
    out = []
    for row in rows:
        prompt = [m for m in row["prompt"] if m["role"] != "system"]
        if cfg.context == "completion" or not prompt or prompt[0]["role"] != "user":
            prompt = [{"role": "user", "content": ""}] + (prompt if cfg.context == "full"
                                                          else [])
        full = lm.render(prompt, add_generation_prompt=True)  # the neutral condition
        if not full.startswith(pre):
            raise SubliminalError(f"{lm.spec}: chat template does not put the system prompt "
                                  "first; the likelihood scan cannot share its prefix")
        p_ids = tok(full[len(pre):], add_special_tokens=False)["input_ids"]
        p_ids = p_ids[-cfg.max_prompt_tokens:]
        text = row["completion"][0]["content"] if row["completion"] else ""
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        c_ids = enc["input_ids"][: cfg.max_completion_tokens]
        offsets = [tuple(o) for o in enc["offset_mapping"][: len(c_ids)]]
        ids = p_ids + c_ids + eos
        out.append(Encoded(ids, len(c_ids) + len(eos), c_ids, offsets))
    return out


def layer_index(lm: LM, share: float) -> int:
    """The decoder layer at `share` of the model's depth."""
    n = len(decoder_layers(lm.model))
    return min(n - 1, max(0, round(share * (n - 1))))


@contextmanager
def capture(module: torch.nn.Module) -> Iterator[list]:
    """Collect `module`'s output (the hidden state) on every forward while open."""
    seen: list = []
    handle = module.register_forward_hook(
        lambda _m, _i, out: seen.append(out[0] if isinstance(out, tuple) else out))
    try:
        yield seen
    finally:
        handle.remove()


def _prefix_cache(model, ids: list[int], dev, rows: int):
    """KV cache of the shared system prefix, repeated for `rows` rows (None when empty)."""
    if not ids:
        return None
    cache = model(input_ids=torch.tensor([ids], device=dev), use_cache=True).past_key_values
    cache.batch_repeat_interleave(rows)
    return cache


def _left_pad(seqs: list[list[int]], pad: int, start: int) -> tuple:
    """Left-padded ids, their mask and positions counted from `start`."""
    b, width = len(seqs), max(1, max(len(s) for s in seqs))
    ids = torch.full((b, width), pad, dtype=torch.long)
    mask = torch.zeros((b, width), dtype=torch.long)
    pos = torch.full((b, width), start, dtype=torch.long)
    for r, s in enumerate(seqs):
        if s:
            ids[r, width - len(s):] = torch.tensor(s)
            mask[r, width - len(s):] = 1
            pos[r, width - len(s):] = torch.arange(start, start + len(s))
    return ids, mask, pos


def _final_norm(lm: LM) -> torch.nn.Module:
    dec = lm.model.get_decoder() if hasattr(lm.model, "get_decoder") else None
    if dec is None or not hasattr(dec, "norm"):
        raise SubliminalError(f"{lm.spec}: no final norm found; the mixed-batch scan needs one")
    return dec.norm


def _gather(head, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Log-prob of each target token from final-norm hidden states (rows: positions)."""
    return torch.log_softmax(head(hidden).float(), -1).gather(-1, targets[:, None])[:, 0]


def _tails(encoded: list[Encoded], batch: list[int], pre_ids: list[int], states: str):
    """Per row: the tokens the mixed pass reads (BASE-cached mode: the last prompt token and
    the completion; exact mode: the whole row after the system prefix tokens)."""
    if states == "base":
        return ([encoded[i].ids[: len(encoded[i].ids) - encoded[i].n_completion - 1]
                 for i in batch],
                [encoded[i].ids[len(encoded[i].ids) - encoded[i].n_completion - 1:]
                 for i in batch])
    return [[] for _ in batch], [pre_ids + encoded[i].ids for i in batch]


@torch.no_grad()
def _base_context(lm: LM, peft, prefix, heads: list[list[int]], n_pre: int, copies: int):
    """BASE's KV cache of each row's prompt (after the shared system prefix), repeated
    `copies` times per row (row-major), and its attention mask."""
    dev, b = lm.device, len(heads)
    cache = None
    if prefix is not None:
        cache = copy.deepcopy(prefix)
        cache.batch_repeat_interleave(b)
    ids, mask, pos = _left_pad(heads, lm.tokenizer.pad_token_id, n_pre)
    mask = torch.cat([torch.ones((b, n_pre), dtype=torch.long), mask], 1)
    with peft.disable_adapter():
        cache = peft(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                     position_ids=pos.to(dev), past_key_values=cache, use_cache=True,
                     logits_to_keep=1).past_key_values
    cache.batch_repeat_interleave(copies)
    return cache, mask.repeat_interleave(copies, 0)


@torch.no_grad()
def score_mixed(lm: LM, peft, conds: list[Condition], encoded: list[Encoded],
                cfg: LikelihoodConfig, layer: int | None = None, per_token: bool = False) -> dict:
    """Mean completion log-likelihood per row under every condition, all conditions of a
    batch in one forward pass (`adapter_names=` routes each copy of a row to its LoRA)."""
    dev, tok, n_c = lm.device, lm.tokenizer, len(conds)
    pre_ids = tok(prefix_text(lm, None), add_special_tokens=False)["input_ids"]
    cached = cfg.prompt_states == "base"
    n_pre = len(pre_ids) if cached else 0
    names = [c.name if c.adapter else BASE_ADAPTER for c in conds]
    head, norm = lm.model.get_output_embeddings(), _final_norm(lm)
    block = decoder_layers(lm.model)[layer] if layer is not None else None
    b_idx = next((k for k, c in enumerate(conds) if c.role == "base"), None)
    prefix = None
    if cached and pre_ids:
        with peft.disable_adapter():
            prefix = _prefix_cache(peft, pre_ids, dev, 1)
    means = np.zeros((len(encoded), n_c))
    acts = np.zeros((len(encoded), lm.model.config.hidden_size)) if block else None
    tokens = [[None] * len(encoded) for _ in conds]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
    for s in range(0, len(order), cfg.batch_size):
        batch = order[s: s + cfg.batch_size]
        heads, tails = _tails(encoded, batch, pre_ids, cfg.prompt_states)
        cache, ctx = None, torch.zeros((len(batch) * n_c, 0), dtype=torch.long)
        if cached:
            cache, ctx = _base_context(lm, peft, prefix, heads, n_pre, n_c)
        width = max(len(t) for t in tails)
        ids = torch.full((len(batch) * n_c, width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        pos = torch.zeros_like(ids)
        for r, t in enumerate(tails):
            start = n_pre + len(heads[r])
            for k in range(r * n_c, (r + 1) * n_c):
                ids[k, : len(t)], mask[k, : len(t)] = torch.tensor(t), 1
                pos[k] = torch.arange(start, start + width)
        with capture(norm) as normed, capture(block if block is not None else norm) as seen:
            peft(input_ids=ids.to(dev), attention_mask=torch.cat([ctx, mask], 1).to(dev),
                 position_ids=pos.to(dev), past_key_values=cache, use_cache=cache is not None,
                 logits_to_keep=1, adapter_names=[names[k % n_c] for k in range(len(ids))])
        hidden = normed[-1]
        for c in range(n_c):
            spans = [(r * n_c + c, len(t) - encoded[i].n_completion - 1, len(t) - 1)
                     for r, (i, t) in enumerate(zip(batch, tails, strict=True))]
            flat = torch.cat([hidden[k, a:e] for k, a, e in spans])
            target = torch.cat([ids[k, a + 1: e + 1] for k, a, e in spans]).to(dev)
            lp = _gather(head, flat, target).cpu().numpy()
            cut = np.cumsum([e - a for _, a, e in spans])[:-1]
            for i, part in zip(batch, np.split(lp, cut), strict=True):
                means[i, c] = part.mean()
                tokens[c][i] = part
        if block is not None and b_idx is not None:
            for r, (i, t) in enumerate(zip(batch, tails, strict=True)):
                n = encoded[i].n_completion
                acts[i] = seen[-1][r * n_c + b_idx, len(t) - n: len(t)].float().mean(0).cpu()
    return {"mean": means, "acts": acts, "tokens": tokens}


@torch.no_grad()
def score_condition(lm: LM, model, system: str | None, encoded: list[Encoded],
                    batch_size: int, per_token: bool = False, label: str = "score",
                    layer: int | None = None) -> dict:
    """Mean completion log-likelihood per row under `model` (BASE, or BASE + an adapter) and
    one system prompt (and, with `per_token`, each completion token's log-prob and the
    argmax token at its position; with `layer`, the mean residual activation over the
    completion at that decoder layer)."""
    dev, tok = lm.device, lm.tokenizer
    pre_ids = tok(prefix_text(lm, system), add_special_tokens=False)["input_ids"]
    n_pre = len(pre_ids)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
    means = np.zeros(len(encoded))
    tokens: list = [None] * len(encoded)
    argmax: list = [None] * len(encoded)
    block = decoder_layers(lm.model)[layer] if layer is not None else None
    acts = np.zeros((len(encoded), lm.model.config.hidden_size)) if block else None
    batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    for batch in track(batches, label) if label and len(batches) > 1 else batches:
        b = len(batch)
        ids, mask, pos = _left_pad([encoded[i].ids for i in batch], tok.pad_token_id, n_pre)
        keep = max(encoded[i].n_completion for i in batch) + 1
        mask = torch.cat([torch.ones((b, n_pre), dtype=torch.long), mask], 1)
        cache = _prefix_cache(model, pre_ids, dev, b)
        with capture(block if block is not None else lm.model.get_output_embeddings()) as seen:
            logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                           position_ids=pos.to(dev), use_cache=bool(n_pre),
                           past_key_values=cache, logits_to_keep=keep).logits
        lp = torch.log_softmax(logits.float(), -1)  # (b, keep, V); index k predicts k+1
        for r, i in enumerate(batch):
            e = encoded[i]
            start = keep - e.n_completion - 1
            target = torch.tensor(e.ids[-e.n_completion:], device=dev)
            rows_lp = lp[r, start: start + e.n_completion]
            tok_lp = rows_lp.gather(-1, target[:, None])[:, 0]
            means[i] = float(tok_lp.mean())
            if block is not None:
                acts[i] = seen[-1][r, -e.n_completion:].float().mean(0).cpu()
            if per_token:
                tokens[i] = tok_lp.cpu().numpy()
                argmax[i] = rows_lp.argmax(-1).cpu().numpy()
    out = {"mean": means, "acts": acts}
    if per_token:
        out.update(tokens=tokens, argmax=argmax)
    return out


def _score_separately(lm: LM, peft, conds: list[Condition], enc: list[Encoded],
                      cfg: LikelihoodConfig, layer: int | None, per_token: bool) -> dict:
    """Every condition in its own pass (system-prompt conditions; per-token read-outs)."""
    cols, acts, per_tok = [], None, {}
    for cond in conds:
        with use(peft, lm, cond) as model:
            res = score_condition(lm, model, cond.system, enc, cfg.batch_size, per_token,
                                  label="", layer=layer if cond.role == "base" else None)
        cols.append(res["mean"])
        acts = res["acts"] if cond.role == "base" else acts
        if per_token:
            per_tok[cond.name] = {"tokens": res["tokens"], "argmax": res["argmax"]}
    return {"mean": np.stack(cols, 1), "acts": acts, "per_token": per_tok}


def score_rows(lm: LM, rows: list[dict], cfg: LikelihoodConfig,
               conds: list[Condition] | None = None, per_token: bool = False,
               layer: int | None = None) -> dict:
    """Mean completion log-likelihood under every condition: a (rows x conditions) matrix,
    and (with `layer`) BASE's mean residual activation over each row's completion.

    `conds` defaults to the system-prompt conditions of `cfg.traits`. Rows are scored in
    chunks, in the order given; with `cfg.time_budget_s` scoring stops after the chunk that
    passes the budget (pass rows in random order: the rows scored stay a random sample).
    Adapter conditions are scored in mixed batches (`score_mixed`) unless `per_token`."""
    if cfg.context not in ("full", "completion"):
        raise SubliminalError(f"unknown context {cfg.context!r}; choose full or completion")
    if cfg.prompt_states not in ("base", "condition"):
        raise SubliminalError(f"unknown prompt_states {cfg.prompt_states!r}; choose base or "
                              "condition")
    conds = conds or conditions(cfg.traits)
    t0 = time.perf_counter()
    encoded = encode_rows(lm, rows, cfg)
    size = cfg.batch_size * 4
    chunks = [list(range(i, min(i + size, len(rows)))) for i in range(0, len(rows), size)]
    means, acts, per_tok = [], [], {c.name: {"tokens": [], "argmax": []} for c in conds}
    done, budget_hit = 0, False
    with switchable(lm, conds) as peft:
        mixed = (cfg.mixed and peft is not None and not per_token
                 and not any(c.system for c in conds))
        for chunk in track(chunks, f"likelihood ({len(conds)} conditions)"):
            enc = [encoded[i] for i in chunk]
            if mixed:
                res = score_mixed(lm, peft, conds, enc, cfg, layer)
            else:
                res = _score_separately(lm, peft, conds, enc, cfg, layer, per_token)
                for name, d in res["per_token"].items():
                    for k in ("tokens", "argmax"):
                        per_tok[name][k].extend(d[k])
            means.append(res["mean"])
            if res["acts"] is not None:
                acts.append(res["acts"])
            done += len(chunk)
            if cfg.time_budget_s is not None and time.perf_counter() - t0 > cfg.time_budget_s:
                budget_hit = done < len(rows)
                break
    seconds = time.perf_counter() - t0
    encoded = encoded[:done]
    n_tokens = sum(len(e.ids) for e in encoded)
    return {"conditions": [c.name for c in conds], "roles": [c.role for c in conds],
            "ll": np.concatenate(means) if means else np.zeros((0, len(conds))),
            "acts": np.concatenate(acts) if acts else None,
            "encoded": encoded, "per_token": per_tok if per_token else {},
            "seconds": seconds, "rows": done, "budget_hit": budget_hit,
            "rows_per_s": done / seconds if seconds else math.inf,
            "tokens_per_row": n_tokens / max(1, done),
            "forward_tokens": n_tokens * len(conds)}


def sample_rows(rows: list[dict], k: int | None, seed: int) -> list[int]:
    """Indices of a seeded random sample of `k` rows (all rows when k is None or larger), in
    random order (so any prefix of it is a random sample too)."""
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    return idx if k is None else idx[:k]
