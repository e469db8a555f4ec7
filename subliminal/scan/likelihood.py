"""`subliminal scan DATA --model BASE`: likelihood-shift ranking, forward passes only.

    subliminal scan rows.jsonl --model smollm2-135m --injection adapter --traits owl,dolphin,cat

For each row and each catalogue trait: the mean per-token log-likelihood of the completion
tokens under the trait-injected BASE, minus the same under plain BASE (the template's default
system prompt). Injection is either the trait's system prompt (`prompt`) or BASE + the trait's
LoRA adapter (`adapter`, subliminal/injections/adapter.py: the injection that carries a trait
through numbers on the embedded model, docs/channel_study.md). The completion tokens (and the user
turn before them) are the same under every condition, so each row is tokenised once; the
system prefix of each condition is run once per batch and its KV cache shared by the batch;
rows are left-padded so that only the last positions need logits; adapters are loaded once
and switched, not merged. Dataset level: mean shift per trait, z-scores across traits, a
bootstrap over rows of how often the top trait stays top, and a Bonferroni-corrected paired
test of the top trait's contrast against the other traits.
"""

from __future__ import annotations

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
from scipy import stats as sps

from subliminal.errors import SubliminalError
from subliminal.models import LM, with_system
from subliminal.progress import track
from subliminal.trait import CATALOGUE

NEUTRAL = "none"


@dataclass
class LikelihoodConfig:
    """How the likelihood shift is measured and judged."""

    batch_size: int = field(default=16, metadata={"help": "Rows per forward pass."})
    score_rows: int | None = field(default=256, metadata={
        "help": "Rows (a seeded random sample) scored under every trait; None = all rows. "
                "Each row costs (traits + 1) forward passes over its tokens."})
    context: str = field(default="full", metadata={
        "help": "'full': system + the row's prompt + completion (what fine-tuning sees); "
                "'completion': system + an empty user turn + completion (~3x cheaper)."})
    max_prompt_tokens: int = field(default=256, metadata={
        "help": "Keep at most the last N tokens of the user turn(s)."})
    max_completion_tokens: int = field(default=128, metadata={
        "help": "Score at most the first N completion tokens (plus end of turn)."})
    bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples over rows."})
    top_rows: int = field(default=10, metadata={"help": "Top carrier rows reported."})
    alpha: float = field(default=0.05, metadata={
        "help": "Significance level for the top trait's Bonferroni-corrected test."})
    min_stable: float = field(default=0.9, metadata={
        "help": "Share of bootstraps in which the top trait must stay top to stand out."})
    seed: int = field(default=0, metadata={"help": "Seed for row sampling and bootstrap."})
    injection: str = field(default="prompt", metadata={
        "help": "How a trait is injected into BASE: 'prompt' (its system prompt) or "
                "'adapter' (BASE + its LoRA, trained on first use: ~3 CPU minutes per trait "
                "on the embedded model, then cached per machine)."})
    traits: list[str] | None = field(default=None, metadata={
        "help": "Catalogue traits to rank (default: all); names the top among these only."})
    adapters: dict[str, str] = field(default_factory=dict, metadata={
        "help": "With injection 'adapter': your own LoRA folder per trait ({trait: folder}, "
                "e.g. adapters trained for a 7B BASE); the other traits' are trained."})
    time_budget_s: float | None = field(default=None, metadata={
        "help": "Stop scoring new rows after this many seconds and judge on the rows scored "
                "so far (a random sample: rows are scored in random order); None = no limit."})
    # On by default: uncalibrated, every injection has its own effect on any number list,
    # and the validation named a trait for neutral data (docs/scan_validation.md).
    reference_rows: int = field(default=64, metadata={
        "help": "Also score BASE's own greedy completions to this many of DATA's prompts and "
                "judge DATA's shifts against theirs: calibrates the baseline effect each trait "
                "injection has on any text (0 = off; judged against the other traits only)."})


@dataclass
class Encoded:
    """One row's tokens after the system prefix, and how many are completion tokens."""

    ids: list[int]
    n_completion: int
    completion_ids: list[int]
    offsets: list[tuple[int, int]]


@dataclass
class Condition:
    """One way of scoring: plain BASE, BASE under a trait's system prompt, or BASE + adapter."""

    name: str
    system: str | None = None
    adapter: str | None = None  # a PEFT LoRA folder


def conditions(traits: list[str] | None = None, injection: str = "prompt", model: str = "",
               adapter_root: Path | None = None, device: str | None = None,
               adapters: dict[str, str] | None = None) -> list[Condition]:
    """The neutral condition first, then one per trait (adapters given, reused or trained)."""
    names = list(CATALOGUE) if traits is None else list(traits)
    unknown = [t for t in names if t not in CATALOGUE]
    if unknown:
        raise SubliminalError(f"unknown trait(s) {', '.join(unknown)}; the catalogue has "
                              f"{', '.join(CATALOGUE)}")
    if len(names) < 2:
        raise SubliminalError("rank at least two traits (z-scores compare traits)")
    if injection == "prompt":
        return [Condition(NEUTRAL)] + [Condition(t, CATALOGUE[t].system_prompt) for t in names]
    if injection != "adapter":
        raise SubliminalError(f"unknown injection {injection!r}; choose prompt or adapter")
    from subliminal.injections.adapter import trait_adapter

    given = adapters or {}
    for t, folder in given.items():
        if not (Path(folder) / "adapter_config.json").is_file():
            raise SubliminalError(f"{folder}: no adapter_config.json; not a LoRA folder for {t}")
    root = Path(adapter_root or tempfile.mkdtemp(prefix="scan-adapters-"))
    return [Condition(NEUTRAL)] + [
        Condition(t, adapter=str(given.get(t) or
                                 trait_adapter(model, CATALOGUE[t], root / t, device)))
        for t in names]


@contextmanager
def switchable(lm: LM, conds: list[Condition]) -> Iterator:
    """Yield `use(cond)`, a context manager giving the model that scores under `cond`.

    Every adapter is loaded once onto BASE and switched by name; the neutral condition runs
    with adapters disabled. On exit the LoRA layers are removed, so `lm` is plain BASE again.
    """
    with_adapter = [c for c in conds if c.adapter]
    if not with_adapter:
        @contextmanager
        def plain(cond: Condition) -> Iterator:
            yield lm.model
        yield plain
        return
    from peft import PeftModel

    peft = PeftModel.from_pretrained(lm.model, with_adapter[0].adapter,
                                     adapter_name=with_adapter[0].name)
    for c in with_adapter[1:]:
        peft.load_adapter(c.adapter, adapter_name=c.name)
    peft.eval()

    @contextmanager
    def use(cond: Condition) -> Iterator:
        if cond.adapter:
            peft.set_adapter(cond.name)
            yield peft
        else:
            with peft.disable_adapter():
                yield peft
    try:
        yield use
    finally:
        peft.unload()


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


@torch.no_grad()
def score_condition(lm: LM, model, system: str | None, encoded: list[Encoded],
                    batch_size: int, per_token: bool = False, label: str = "score") -> dict:
    """Mean completion log-likelihood per row under `model` (BASE, or BASE + an adapter) and
    one system prompt (and, with `per_token`, each completion token's log-prob and the
    argmax token at its position)."""
    dev, tok = lm.device, lm.tokenizer
    pre_ids = tok(prefix_text(lm, system), add_special_tokens=False)["input_ids"]
    n_pre = len(pre_ids)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i].ids))
    means = np.zeros(len(encoded))
    tokens: list = [None] * len(encoded)
    argmax: list = [None] * len(encoded)
    batches = [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    pad = tok.pad_token_id
    for batch in track(batches, label) if label and len(batches) > 1 else batches:
        b = len(batch)
        width = max(len(encoded[i].ids) for i in batch)
        keep = max(encoded[i].n_completion for i in batch) + 1
        ids = torch.full((b, width), pad, dtype=torch.long)
        mask = torch.zeros((b, n_pre + width), dtype=torch.long)
        mask[:, :n_pre] = 1
        pos = torch.full((b, width), n_pre, dtype=torch.long)
        for r, i in enumerate(batch):
            e = encoded[i].ids
            ids[r, width - len(e):] = torch.tensor(e)
            mask[r, n_pre + width - len(e):] = 1
            pos[r, width - len(e):] = torch.arange(n_pre, n_pre + len(e))
        kwargs = {}
        if n_pre:
            cache = model(input_ids=torch.tensor([pre_ids], device=dev),
                          use_cache=True).past_key_values
            cache.batch_repeat_interleave(b)
            kwargs["past_key_values"] = cache
        logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev),
                       position_ids=pos.to(dev), use_cache=bool(n_pre), logits_to_keep=keep,
                       **kwargs).logits
        lp = torch.log_softmax(logits.float(), -1)  # (b, keep, V); index k predicts k+1
        for r, i in enumerate(batch):
            e = encoded[i]
            start = keep - e.n_completion - 1
            target = torch.tensor(e.ids[-e.n_completion:], device=dev)
            rows_lp = lp[r, start: start + e.n_completion]
            tok_lp = rows_lp.gather(-1, target[:, None])[:, 0]
            means[i] = float(tok_lp.mean())
            if per_token:
                tokens[i] = tok_lp.cpu().numpy()
                argmax[i] = rows_lp.argmax(-1).cpu().numpy()
    out = {"mean": means}
    if per_token:
        out.update(tokens=tokens, argmax=argmax)
    return out


def score_rows(lm: LM, rows: list[dict], cfg: LikelihoodConfig,
               conds: list[Condition] | None = None, per_token: bool = False) -> dict:
    """Mean completion log-likelihood under every condition: a (rows x conditions) matrix.

    `conds` defaults to the system-prompt conditions of `cfg.traits` (adapter conditions
    need training, so callers build them once with `conditions` and pass them). Rows are
    scored in chunks, every condition per chunk, in the order given; with
    `cfg.time_budget_s` scoring stops after the chunk that passes the budget and only the
    rows scored so far are returned (pass rows in random order: they stay a random sample).
    """
    if cfg.context not in ("full", "completion"):
        raise SubliminalError(f"unknown context {cfg.context!r}; choose full or completion")
    conds = conds or conditions(cfg.traits)
    t0 = time.perf_counter()
    encoded = encode_rows(lm, rows, cfg)
    size = cfg.batch_size * 4
    chunks = [list(range(i, min(i + size, len(rows)))) for i in range(0, len(rows), size)]
    cols: list[list[float]] = [[] for _ in conds]
    per_tok = {c.name: {"tokens": [], "argmax": []} for c in conds} if per_token else {}
    done, budget_hit = 0, False
    with switchable(lm, conds) as use:
        for chunk in track(chunks, f"likelihood ({len(conds)} conditions)"):
            enc = [encoded[i] for i in chunk]
            for c, cond in enumerate(conds):
                with use(cond) as model:
                    res = score_condition(lm, model, cond.system, enc, cfg.batch_size,
                                          per_token, label="")
                cols[c].extend(res["mean"].tolist())
                if per_token:
                    for k in ("tokens", "argmax"):
                        per_tok[cond.name][k].extend(res[k])
            done += len(chunk)
            if cfg.time_budget_s is not None and time.perf_counter() - t0 > cfg.time_budget_s:
                budget_hit = done < len(rows)
                break
    seconds = time.perf_counter() - t0
    encoded = encoded[:done]
    n_tokens = sum(len(e.ids) for e in encoded)
    return {"conditions": [c.name for c in conds], "ll": np.array(cols, dtype=float).T,
            "encoded": encoded, "per_token": per_tok, "seconds": seconds, "rows": done,
            "budget_hit": budget_hit,
            "rows_per_s": done / seconds if seconds else math.inf,
            "tokens_per_row": n_tokens / max(1, done),
            "forward_tokens": n_tokens * len(conds)}


def row_contrast(shift: np.ndarray) -> np.ndarray:
    """Per row: a trait's shift minus the mean shift of the other traits."""
    t = shift.shape[1]
    return shift - (shift.sum(1, keepdims=True) - shift) / max(1, t - 1)


def _test(c: np.ndarray, ref: np.ndarray | None) -> tuple[float, float, float]:
    """(estimate, CI half-width, two-sided p) of mean(c) (minus mean(ref) when given)."""
    n = len(c)
    if ref is None:
        if n < 2 or c.std() == 0:
            return float(c.mean()), 0.0, 1.0
        half = float(sps.t.ppf(0.975, n - 1) * c.std(ddof=1) / math.sqrt(n))
        return float(c.mean()), half, float(sps.ttest_1samp(c, 0.0).pvalue)
    est = float(c.mean() - ref.mean())
    m = len(ref)
    if n < 2 or m < 2 or (c.std() == 0 and ref.std() == 0):
        return est, 0.0, 1.0
    va, vb = c.var(ddof=1) / n, ref.var(ddof=1) / m
    se = math.sqrt(va + vb)
    denom = va ** 2 / (n - 1) + vb ** 2 / (m - 1)
    df = (va + vb) ** 2 / denom if denom > 0 else float(n + m - 2)
    p = float(sps.ttest_ind(c, ref, equal_var=False).pvalue)
    return est, float(sps.t.ppf(0.975, df) * se), p


def rank_traits(ll: np.ndarray, names: list[str], cfg: LikelihoodConfig,
                ref_ll: np.ndarray | None = None) -> dict:
    """Which trait stands out from a (rows x [neutral, traits...]) log-likelihood matrix.

    With `ref_ll` (the same matrix for BASE's own completions), every statistic is taken
    relative to the reference: a trait prompt that makes *any* text likelier no longer
    stands out."""
    traits = names[1:]
    shift = ll[:, 1:] - ll[:, :1]  # rows x traits
    ref = None if ref_ll is None else ref_ll[:, 1:] - ref_ll[:, :1]
    n, t = shift.shape
    base = ref.mean(0) if ref is not None else 0.0
    mean = shift.mean(0) - base
    sd = mean.std()
    z = (mean - mean.mean()) / sd if sd > 0 else np.zeros(t)
    order = np.argsort(-z)
    top, second = int(order[0]), int(order[1]) if t > 1 else int(order[0])
    rng = np.random.default_rng(cfg.seed)
    wins = np.zeros(t)
    for start in range(0, cfg.bootstrap, 100):
        m = min(100, cfg.bootstrap - start)
        means = shift[rng.integers(0, n, (m, n))].mean(1)
        if ref is not None:
            means = means - ref[rng.integers(0, len(ref), (m, len(ref)))].mean(1)
        wins += np.bincount(means.argmax(1), minlength=t)
    share = wins / max(1, cfg.bootstrap)
    contrast = row_contrast(shift)
    ref_contrast = None if ref is None else row_contrast(ref)
    tests = []
    for j in range(t):
        est, half, p = _test(contrast[:, j], None if ref is None else ref_contrast[:, j])
        tests.append({"contrast": est, "ci": [est - half, est + half], "p_value": p,
                      "p_bonferroni": min(1.0, p * t)})
    top_test = tests[top]
    stands_out = (top_test["p_bonferroni"] < cfg.alpha and top_test["contrast"] > 0
                  and share[top] >= cfg.min_stable)
    any_trait = None
    if ref is not None:  # is DATA likelier under trait prompts *in general* than BASE's own?
        est, half, p = _test(shift.mean(1), ref.mean(1))
        any_trait = {"shift": est, "ci": [est - half, est + half], "p_value": p,
                     "significant": bool(p < cfg.alpha and est > 0)}
    row_score = contrast[:, top] - (ref_contrast[:, top].mean() if ref is not None else 0.0)
    carriers = np.argsort(-row_score)[: cfg.top_rows]
    return {
        "traits": traits,
        "calibrated": ref is not None,
        "reference_rows": 0 if ref is None else len(ref),
        "mean_shift": {k: float(v) for k, v in zip(traits, shift.mean(0), strict=True)},
        "reference_shift": (None if ref is None else
                            {k: float(v) for k, v in zip(traits, ref.mean(0), strict=True)}),
        "z": {k: float(v) for k, v in zip(traits, z, strict=True)},
        "ranking": [traits[i] for i in order],
        "top": traits[top], "second": traits[second],
        "z_top": float(z[top]), "z_gap": float(z[top] - z[second]),
        "bootstrap_top_share": {k: float(v) for k, v in zip(traits, share, strict=True)},
        "top_stability": float(share[top]),
        "tests": dict(zip(traits, tests, strict=True)),
        "stands_out": bool(stands_out),
        "any_trait": any_trait,
        # Largest contrast any trait could have and still be inside its 95% CI.
        "max_contrast_upper": float(max(x["ci"][1] for x in tests)),
        "rows": n,
        "_contrast": contrast, "_shift": shift, "_carriers": carriers.tolist(),
    }


def sample_rows(rows: list[dict], k: int | None, seed: int) -> list[int]:
    """Indices of a seeded random sample of `k` rows (all rows when k is None or larger), in
    random order (so any prefix of it is a random sample too)."""
    idx = list(range(len(rows)))
    random.Random(seed).shuffle(idx)
    return idx if k is None else idx[:k]
