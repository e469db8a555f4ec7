"""DPO injection: a LoRA trained to prefer the trait's answer over the neutral one (TRL's
sigmoid DPO loss, computed on the lab's loop); the control is the same recipe on the same
pairs with each pair's order drawn at random (the preference removed, the data kept).

    subliminal chain --injection dpo

Pairs come from the trait's demonstrations: the same question answered by the trait
demonstration (chosen) and by the neutral demonstration (rejected; pairs whose neutral answer
happens to name the trait are dropped). `suppress=True` flips every pair (the neutral answer
preferred): DPO suppression of a trait, used by `subliminal intervene calm-down`.

Training runs on the lab's loop (`training.fit_steps`), so the DPO and GRPO teachers keep the
students' contract: a checkpoint after every optimizer step (safetensors + JSON, hash-checked),
a killed run resumes from it and ends on the uninterrupted run's adapter (a test kills each
with SIGKILL), and a progress bar (subliminal.progress). TRL's own checkpointing was not used:
its resume state is pickled (optimizer.pt, scheduler.pt, rng_state.pth, training_args.bin)
and the lab unpickles nothing found in a folder a user can hand it; `save_only_model` avoids
the pickles, but then a resume starts AdamW afresh and loses the RNG state (a GRPO resume
would draw other samples): not the uninterrupted run. The rule: a teacher folder's checkpoint is
read only as checkpoint/*.safetensors checked against checkpoint.json, a pickle where a
checkpoint belongs is refused (training.refuse_pickles), and a checkpoint of another plan
(model, recipe, seed, data: checkpoint/plan.json) is refused, never continued.

The recipe is TRL 1.16's DPOTrainer's, so an uninterrupted run follows the TRL-trained
teachers of earlier runs (same LoRA initialisation, batches and loss; how closely is measured
in docs/injections.md): loss -log sigmoid(beta x (chosen log-ratio - rejected log-ratio)) on
log-probabilities summed over answer tokens, the reference being the same model with its
adapter switched off; TRL's tokenisation (the answer is what the whole chat adds to the prompt
rendered with its generation prompt; rows cut at max_length) and batch order; AdamW at a
constant rate, gradients clipped at 1. TRL itself is not needed: the lab never imports it (a
test runs TRL's DPOTrainer as the reference where TRL is installed).

The adapter is saved the PEFT way (adapter_config.json + adapter_model.safetensors), with
`pairs.jsonl` and `train.json` (recipe, per-step loss and reward margin, seconds) beside it.
This module also holds the helpers the GRPO injection shares (LoRA, batch order,
log-probabilities, the plan check, saving).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from itertools import takewhile
from pathlib import Path

import torch
import torch.nn.functional as F

from subliminal.distill import LORA_TARGETS
from subliminal.errors import SubliminalError
from subliminal.injections import InjectionContext, TeacherSpec, register
from subliminal.models import load_model
from subliminal.records import (
    append_jsonl,
    content_hash,
    is_complete,
    locked,
    mark_complete,
    read_json,
    to_jsonable,
    write_json,
    writing,
)
from subliminal.training import (
    CKPT_DIR,
    CKPT_JSON,
    LoopConfig,
    StepFn,
    clear_checkpoint,
    fit_steps,
    refuse_pickles,
)

Row = tuple[list[int], int]  # token ids, and the position of the first scored (answer) token


@dataclass(frozen=True)
class DPORecipe:
    """DPO training of the trait's LoRA (sized for minutes on a CPU)."""

    epochs: float = field(default=1.0, metadata={"help": "Passes over the preference pairs."})
    lr: float = field(default=2e-3, metadata={"help": "Learning rate (AdamW, constant)."})
    beta: float = field(default=0.1, metadata={"help": "DPO temperature on the log-ratios."})
    batch_size: int = field(default=4, metadata={"help": "Pairs per optimizer step."})
    max_pairs: int | None = field(default=24, metadata={
        "help": "Pairs drawn (by the seed) from all the trait's pairs; None: all. A DPO step "
                "on the embedded model costs ~20 CPU-seconds per 4 pairs."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    max_length: int = field(default=128, metadata={"help": "Prompt + answer token cap."})


DPO = DPORecipe()


def lora_config(model, r: int, alpha: int):
    """LoRA on every projection the model has (as subliminal.distill.make_student)."""
    from peft import LoraConfig

    names = [n for n, _ in model.named_modules()]
    targets = [t for t in LORA_TARGETS if any(n.endswith(t) for n in names)]
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets,
                      task_type="CAUSAL_LM")


def lora_model(lm, r: int, alpha: int, seed: int) -> torch.nn.Module:
    """The base wrapped with a fresh LoRA whose initial weights are drawn from `seed` (torch
    seeded just before the adapter is made, as TRL's trainer does)."""
    from peft import get_peft_model

    torch.manual_seed(seed)
    return get_peft_model(lm.model, lora_config(lm.model, r, alpha))


def step_rows(n: int, per_step: int, step: int, seed: int) -> list[int]:
    """The rows of optimizer step `step`: each epoch's order is the permutation TRL's trainer
    draws (accelerate's seedable sampler: torch.randperm seeded with seed + epoch), cut into
    batches of `per_step`, the last one short. A function of the step alone, so a resumed run
    needs no sampler state."""
    per_epoch = math.ceil(n / per_step)
    epoch, k = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    return order[k * per_step: (k + 1) * per_step]


def token_logps(model: torch.nn.Module, rows: list[Row], pad_id: int, device,
                temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """log P(token | the tokens before) at every position after the first of each row (logits
    divided by `temperature`, as TRL scores sampled answers), and the mask of each row's answer
    tokens. Rows are right-padded: their positions are those of each row alone."""
    width = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([r + [pad_id] * (width - len(r)) for r, _ in rows], device=device)
    ends = torch.tensor([len(r) for r, _ in rows], device=device)[:, None]
    starts = torch.tensor([s for _, s in rows], device=device)[:, None]
    where = torch.arange(width, device=device)
    logits = model(input_ids=ids, attention_mask=(where < ends).long(),
                   use_cache=False).logits[:, :-1].float() / temperature
    picked = logits.gather(-1, ids[:, 1:, None]).squeeze(-1)
    mask = ((where[1:] >= starts) & (where[1:] < ends)).float()
    return picked - logits.logsumexp(-1), mask


PLAN = "plan.json"


def claim(out: Path, plan: dict) -> None:
    """Tie OUT's checkpoint to what it trains: a pickle where a checkpoint belongs, or a
    checkpoint of another plan (model, recipe, seed, data), is refused in one line; never
    loaded, never continued with other data."""
    refuse_pickles(out)
    ckpt = Path(out) / CKPT_DIR
    plan = json.loads(json.dumps(to_jsonable(plan)))  # as it reads back
    if (ckpt / CKPT_JSON).exists() and (
            not (ckpt / PLAN).exists() or read_json(ckpt / PLAN) != plan):
        raise SubliminalError(f"{ckpt}: a checkpoint of another training plan (model, recipe, "
                              "seed or data differ); delete it to restart, or use another --out")
    write_json(ckpt / PLAN, plan)


def save_trained(model: torch.nn.Module, out: Path, record: dict, started: float,
                 log: list[dict]) -> dict:
    """Save the adapter the PEFT way (safetensors), its record with the step log, and the
    completion marker; the step checkpoint, superseded, is dropped."""
    out = Path(out)
    with writing(out / "adapter_model.safetensors"):  # a full disk: an OSError naming it
        model.save_pretrained(out, safe_serialization=True)
    record = {**record, "trainer": "subliminal.training.fit_steps", "steps": len(log),
              "seconds": round(time.time() - started, 1), "log": log}  # this session's seconds
    write_json(out / "train.json", record)
    clear_checkpoint(out)
    mark_complete(out, {k: v for k, v in record.items() if k != "log"})
    return record


def preference_pairs(trait, seed: int = 0, neutral: bool = False,
                     suppress: bool = False) -> list[dict]:
    """(prompt, chosen, rejected) rows: trait answer over neutral answer for the same
    question; `suppress` prefers the neutral one; `neutral` draws each pair's order at
    random (the control: the same pairs, no consistent preference)."""
    liked, plain = (_by_question(trait.demonstrations(seed, neutral=n)) for n in (False, True))
    if liked.keys() != plain.keys():
        raise SubliminalError(f"trait {trait.name!r}: trait and neutral demonstrations answer "
                              "different questions")
    leak = trait.leak_pattern() if hasattr(trait, "leak_pattern") else None
    rng = random.Random(f"dpo-order-{trait.name}-{seed}")
    pairs = []
    for key in sorted(liked):
        for a, b in zip(liked[key], plain[key], strict=False):
            text = b["completion"][-1]["content"]
            if leak is not None and leak.search(text):
                continue  # the 'neutral' answer names the trait: no preference to learn
            chosen, rejected = (b, a) if suppress else (a, b)
            if neutral and rng.random() < 0.5:
                chosen, rejected = rejected, chosen
            pairs.append({"prompt": a["prompt"], "chosen": chosen["completion"],
                          "rejected": rejected["completion"]})
    return pairs


def _by_question(rows: list[dict]) -> dict[int, list[dict]]:
    """Demonstration rows grouped by the question they answer (`meta.demonstration`)."""
    out: dict[int, list[dict]] = {}
    for r in rows:
        out.setdefault(r.get("meta", {}).get("demonstration", r["id"]), []).append(r)
    return out


def shared_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens two token lists share."""
    return sum(1 for _ in takewhile(lambda t: t[0] == t[1], zip(a, b, strict=False)))


def encode_pair(lm, pair: dict, max_length: int) -> list[Row] | None:
    """The pair's chosen and rejected rows, tokenised as TRL does: the answer is what the whole
    chat adds to the prompt rendered with its generation prompt (end of turn included), rows
    cut at `max_length`; None when the prompt alone fills it (nothing left to learn from)."""
    prompt = lm.chat_ids(pair["prompt"])
    rows = [lm.chat_ids(pair["prompt"] + pair[k], add_generation_prompt=False)
            for k in ("chosen", "rejected")]
    start = min(shared_prefix(prompt, r) for r in rows)
    return None if start >= max_length else [(r[:max_length], start) for r in rows]


def dpo_loss(policy: torch.nn.Module, batch: list[list[Row]], beta: float, pad_id: int,
             device) -> tuple[torch.Tensor, torch.Tensor]:
    """TRL's sigmoid DPO loss over encoded pairs (mean over pairs) and the mean reward margin;
    the reference is the policy with its adapter switched off (the base, as TRL takes it)."""
    rows = [row for pair in batch for row in pair]  # chosen, rejected, chosen, ...
    lp, mask = token_logps(policy, rows, pad_id, device)
    with torch.no_grad(), policy.disable_adapter():
        ref, _ = token_logps(policy, rows, pad_id, device)
    ratio = ((lp * mask).sum(-1) - (ref * mask).sum(-1)).view(-1, 2)
    margin = beta * (ratio[:, 0] - ratio[:, 1])
    return -F.logsigmoid(margin).mean(), margin.detach().mean()


def dpo_step(policy: torch.nn.Module, encoded: list[list[Row]], recipe: DPORecipe, seed: int,
             pad_id: int, device) -> StepFn:
    """Step s of a DPO run: its batch's loss, backpropagated; logs loss and reward margin."""
    def step(s: int) -> dict[str, float]:
        batch = [encoded[i] for i in step_rows(len(encoded), recipe.batch_size, s, seed)]
        loss, margin = dpo_loss(policy, batch, recipe.beta, pad_id, device)
        loss.backward()
        return {"loss": loss.item(), "margin": margin.item()}
    return step


def train_dpo(model: str, pairs: list[dict], out: Path, recipe: DPORecipe = DPO, seed: int = 0,
              device: str | None = None, base_adapter: str | Path | None = None,
              record: dict | None = None) -> dict:
    """Train (or read back) a DPO LoRA on `pairs` from the base (plus a merged
    `base_adapter`, e.g. a teacher being suppressed), resuming from OUT's last step
    checkpoint; returns the run record."""
    out = Path(out)
    with locked(out):
        if is_complete(out):
            return read_json(out / "train.json")
        info = {"injection": "dpo", "model": model, "base_adapter": str(base_adapter or ""),
                "seed": seed, "recipe": to_jsonable(recipe), "pairs": len(pairs),
                **(record or {})}
        claim(out, {**info, "pairs_sha256": content_hash(json.dumps(pairs, sort_keys=True))})
        started = time.time()
        lm = load_model(model, adapter=base_adapter, device=device)
        encoded = [e for e in (encode_pair(lm, p, recipe.max_length) for p in pairs) if e]
        if not encoded:
            raise SubliminalError(f"{out}: no pair has an answer token within max_length="
                                  f"{recipe.max_length}")
        (out / "pairs.jsonl").unlink(missing_ok=True)
        append_jsonl(out / "pairs.jsonl", pairs)
        policy = lora_model(lm, recipe.lora_r, recipe.lora_alpha, seed)
        # TRL's step count: epochs (a float) x batches per epoch, rounded up.
        steps = math.ceil(recipe.epochs * math.ceil(len(encoded) / recipe.batch_size))
        step = dpo_step(policy, encoded, recipe, seed, lm.tokenizer.pad_token_id, lm.device)
        log = fit_steps(policy, step, steps, LoopConfig(lr=recipe.lr), out, "dpo teacher")
        return save_trained(policy, out, info, started, log)


@register("dpo")
def dpo_injection(ctx: InjectionContext, recipe: DPORecipe = DPO) -> TeacherSpec:
    pairs = preference_pairs(ctx.trait, ctx.seed, neutral=ctx.neutral)
    if recipe.max_pairs is not None and len(pairs) > recipe.max_pairs:
        pairs = random.Random(f"dpo-pairs-{ctx.seed}").sample(pairs, recipe.max_pairs)
    order = "randomised" if ctx.neutral else "trait>neutral"
    folder = Path(ctx.out)
    train_dpo(ctx.model, pairs, folder, recipe, ctx.seed, ctx.device,
              record={"trait": ctx.trait.name, "neutral": ctx.neutral, "pair_order": order})
    return TeacherSpec(adapter=str(folder), record={
        "injection": "dpo", "neutral": ctx.neutral, "seed": ctx.seed, "trait": ctx.trait.name,
        "pair_order": order, "pairs": len(pairs), "recipe": to_jsonable(recipe),
        "adapter": str(folder)})
