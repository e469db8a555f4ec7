"""Distill: train a student from the *same* base weights on a teacher's filtered rows.

    subliminal distill RUN/trait/gen1/filter/kept.jsonl --model smollm2-135m --out student/

`sft` trains on the sampled completion tokens (loss on the completion only, the paper's way).
`logits` trains on the teacher's stored next-token distributions with a KL loss: the
dark-knowledge channel, free of sampling noise. Distributions stored `restricted` (the default,
teacher.py) cover only the channel's allowed tokens and the student is renormalised over the
same tokens, so nothing outside the filtered channel is taught; `overt` ones (raw top-k over
the whole vocabulary) are an overt-distillation positive control. Students are LoRA adapters
(saved the PEFT way) or full fine-tunes. A checkpoint is written after every epoch, so a
killed run resumes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from subliminal.errors import SubliminalError
from subliminal.filters import completion_text
from subliminal.models import LM, load_model
from subliminal.prefix import common_length
from subliminal.records import is_complete, mark_complete, writing
from subliminal.schema import Train
from subliminal.students import write_canonical_config
from subliminal.training import (
    LoopConfig,
    accelerator,
    clear_checkpoint,
    fit,
    full_state,
    refuse_pickles,
    use_fsdp,
)

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# The lab's learning rates for tens of rows and ~16 updates, by what trains: a LoRA's few
# weights take a large step; a full fine-tune moves all 135M and takes a tenth of it (the
# chain's default student, and the `full` cells and recipes of `subliminal study`).
SMALL_RUN_LR = {"lora": 1e-3, "full": 1e-4}


@dataclass
class DistillConfig:
    """How a student is trained (defaults follow the paper's open-model students)."""

    mode: str = field(default="sft", metadata={
        "choices": ("sft", "logits"),
        "help": "'sft': cross-entropy on completion tokens; 'logits': KL to the teacher's "
                "stored top-k distributions (rows need meta.topk_*)."})
    finetune: str = field(default="lora", metadata={
        "choices": ("lora", "full"), "help": "Train a LoRA adapter or every weight."})
    lora_r: int = field(default=8, metadata={
        "min": 1, "help": "LoRA rank (on the command line it sets alpha too)."})
    lora_alpha: int = field(default=8, metadata={"min": 1, "help": "LoRA alpha."})
    lr: float = field(default=2e-4, metadata={
        "gt": 0.0, "help": "Peak learning rate (linear decay)."})
    epochs: int = field(default=3, metadata={"min": 1, "help": "Passes over the training rows."})
    batch_size: int = field(default=22, metadata={"min": 1, "help": "Rows per optimizer step."})
    grad_accum: int = field(default=3, metadata={
        "min": 1,
        "help": "Micro-batches per step (effective batch = batch_size * grad_accum; paper 66)."})
    warmup_steps: int = field(default=5, metadata={"min": 0, "help": "Linear warm-up steps."})
    max_length: int = field(default=500, metadata={
        "min": 1, "help": "Truncate prompt+completion here."})
    lora_layers: int | None = field(default=None, metadata={
        "min": 1,
        "help": "Train LoRA only on the first N decoder layers (early layers are reported to "
                "carry subliminal transfer); default: every layer."})
    max_rows: int | None = field(default=None, metadata={
        "min": 1,
        "help": "Subsample the training rows to this many (paper: 10,000)."})
    seed: int = field(default=0, metadata={
        "min": 0, "help": "Seed for subsampling, order and init."})


@dataclass
class Example:
    ids: list[int]
    start: int  # first completion position (loss is taken on ids[start:])
    topk_ids: list[list[int]] | None = None
    topk_logprobs: list[list[float]] | None = None
    channel: str = "restricted"  # how the stored distributions were built (teacher.py)


def build_examples(lm: LM, rows: list[dict], cfg: DistillConfig) -> list[Example]:
    """Tokenise rows the way the student will see them: its own chat template, no trait."""
    out = []
    for row in rows:
        prompt = row.get("prompt")
        if prompt is None:
            prompt = [m for m in row.get("messages", []) if m["role"] != "assistant"]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        p_ids = lm.chat_ids(prompt)
        meta = row.get("meta", {})
        if meta.get("prefill") and "completion_ids" in meta:
            # The teacher was given the prefill; its stored ids/top-k start after it.
            p_ids = p_ids + lm.tokenizer(meta["prefill"], add_special_tokens=False)["input_ids"]
        if cfg.mode == "logits":
            if "topk_ids" not in meta:
                raise SubliminalError(f"row {row.get('id')}: no stored teacher logits "
                                      "(generate with --top-k > 0 for --mode logits)")
            c_ids = meta["completion_ids"]
        elif "completion_ids" in meta:
            c_ids = meta["completion_ids"]
        else:
            c_ids = lm.tokenizer(completion_text(row), add_special_tokens=False)["input_ids"]
            c_ids = c_ids + lm.eos_ids[-1:]
        ids = (p_ids + c_ids)[: cfg.max_length]
        n_c = len(ids) - len(p_ids)
        if n_c <= 0:
            continue
        ex = Example(ids, len(p_ids))
        if cfg.mode == "logits":
            ex.topk_ids, ex.topk_logprobs = meta["topk_ids"][:n_c], meta["topk_logprobs"][:n_c]
            # Rows from before the restricted channel existed stored raw top-k: overt.
            ex.channel = meta.get("logits_channel", "overt")
        out.append(ex)
    return out


def pad_rows(rows: list[list], fill) -> torch.Tensor:
    """Ragged per-position lists (a position's allowed tokens vary) to one padded tensor."""
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [fill] * (width - len(r)) for r in rows])


def topk_kl(student_logits: torch.Tensor, topk_ids: torch.Tensor,
            topk_logprobs: torch.Tensor) -> torch.Tensor:
    """Overt control: KL(teacher || student) over the teacher's raw top-k tokens plus one
    'rest' bucket (the exact KL of both distributions coarsened to k+1 outcomes).
    Shapes: (N, V), (N, k), (N, k) -> mean over N."""
    s_lp = torch.log_softmax(student_logits.float(), -1).gather(-1, topk_ids)
    t_lp = topk_logprobs.float()
    rest = lambda lp: torch.log1p(-lp.exp().sum(-1).clamp(max=1 - 1e-6))  # noqa: E731
    t_all = torch.cat([t_lp, rest(t_lp)[:, None]], -1)
    s_all = torch.cat([s_lp, rest(s_lp)[:, None]], -1)
    return (t_all.exp() * (t_all - s_all)).sum(-1).mean()


def restricted_kl(student_logits: torch.Tensor, ids: torch.Tensor,
                  teacher_lp: torch.Tensor) -> torch.Tensor:
    """Leak-free channel: KL(teacher || student) with *both* distributions restricted to the
    stored (channel-allowed) tokens and renormalised there, like matching only auxiliary
    logits. The student's mass on any other token is invisible to the loss: only the relative
    odds of digits, separators and end of text are taught. Padding slots carry -inf."""
    valid = teacher_lp.isfinite()
    s = student_logits.float().gather(-1, ids).masked_fill(~valid, float("-inf"))
    s_lp = torch.log_softmax(s, -1)
    t_lp = torch.log_softmax(teacher_lp.float(), -1)  # renormalise the rounded stored values
    terms = torch.where(valid, t_lp.exp() * (t_lp - s_lp), torch.zeros_like(s_lp))
    return terms.sum(-1).mean()


SUB_BATCH = 4  # rows per forward inside a micro-batch: similar lengths together, less padding


def _expand(cache, rows: int, model):
    """A one-row KV cache seen as `rows` rows (a view: gradients from every row add up)."""
    if cache is None:
        return None
    data = [(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1))
            for layer in cache.layers]
    return DynamicCache(ddp_cache_data=data, config=model.config)


def completion_hidden(model: torch.nn.Module, batch: list[Example], pad_id: int,
                      device: torch.device, split: bool = True) -> torch.Tensor:
    """Final hidden states at every position that predicts a completion token (row by row,
    position by position): the states the loss reads.

    The tokens every row opens with (chat template, system prompt) run once per micro-batch
    and their KV cache is shared by the rows, gradients from all of them flowing back through
    it; the rest runs in sub-batches of similar length, so little is padded. The values equal
    one padded forward of the whole micro-batch, to float rounding (tested). `split=False`
    is that one padded forward: a model sharded by FSDP runs one forward per backward."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    n = max(0, min(common_length([e.ids for e in batch]), min(e.start for e in batch) - 1))
    n, size = (n, SUB_BATCH) if split else (0, len(batch))
    opening = decoder(input_ids=torch.tensor([batch[0].ids[:n]], device=device),
                      use_cache=True).past_key_values if n else None
    order = sorted(range(len(batch)), key=lambda i: (len(batch[i].ids), i))
    picks: list[torch.Tensor | None] = [None] * len(batch)
    for s in range(0, len(order), size):
        sub = order[s: s + size]
        width = max(len(batch[i].ids) for i in sub) - n
        ids = torch.full((len(sub), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(sub), n + width), dtype=torch.long)
        mask[:, :n] = 1
        for j, i in enumerate(sub):
            tail = batch[i].ids[n:]
            ids[j, : len(tail)] = torch.tensor(tail)
            mask[j, n: n + len(tail)] = 1
        pos = (n + torch.arange(width))[None].expand(len(sub), -1)
        hidden = decoder(input_ids=ids.to(device), attention_mask=mask.to(device),
                         position_ids=pos.to(device),
                         past_key_values=_expand(opening, len(sub), base),
                         use_cache=opening is not None).last_hidden_state
        for j, i in enumerate(sub):
            e = batch[i]
            picks[i] = hidden[j, e.start - 1 - n: len(e.ids) - 1 - n]
    return torch.cat(picks)


def batch_loss(model: torch.nn.Module, batch: list[Example], mode: str, pad_id: int,
               device: torch.device, split: bool = True) -> torch.Tensor:
    """Loss on completion positions only; prompts and padding carry no gradient. The LM
    head runs only at completion positions: it is ~20% of a small model's per-token cost."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    hidden = completion_hidden(model, batch, pad_id, device, split)
    # Position t predicts token t+1: completion token j (at start+j) is read at start+j-1.
    rows = [(i, t) for i, e in enumerate(batch) for t in range(e.start - 1, len(e.ids) - 1)]
    if mode == "sft":
        target = torch.tensor([batch[i].ids[t + 1] for i, t in rows], device=device)
        return F.cross_entropy(head(hidden).float(), target)
    k_ids = pad_rows([batch[i].topk_ids[t + 1 - batch[i].start] for i, t in rows], 0).to(device)
    k_lp = pad_rows([batch[i].topk_logprobs[t + 1 - batch[i].start] for i, t in rows],
                    float("-inf")).to(device)
    if batch[0].channel == "restricted":
        # The restricted loss reads only the stored tokens' logits: compute just those
        # columns of the head (a few dozen of the vocabulary's ~50k).
        picked = torch.einsum("nd,nkd->nk", hidden, head.weight[k_ids])
        if getattr(head, "bias", None) is not None:
            picked = picked + head.bias[k_ids]
        return restricted_kl(picked, torch.arange(k_ids.shape[1], device=device).expand_as(
            k_ids), k_lp)
    return topk_kl(head(hidden), k_ids, k_lp)


def make_student(lm: LM, cfg: DistillConfig) -> torch.nn.Module:
    """Wrap the base for training: LoRA adapters on every projection, or all weights."""
    if cfg.finetune == "full":
        for p in lm.model.parameters():
            p.requires_grad_(True)
        return lm.model
    if cfg.finetune != "lora":
        raise SubliminalError(f"unknown finetune {cfg.finetune!r}; choose lora or full")
    from peft import LoraConfig, get_peft_model

    targets = [t for t in LORA_TARGETS if any(n.endswith(t) for n, _ in
                                              lm.model.named_modules())]
    layers = list(range(cfg.lora_layers)) if cfg.lora_layers else None
    peft_cfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                          target_modules=targets, task_type="CAUSAL_LM",
                          layers_to_transform=layers)
    return get_peft_model(lm.model, peft_cfg)


def save_student(model: torch.nn.Module, out: Path, finetune: str,
                 state: dict[str, torch.Tensor] | None = None, base: str | None = None) -> None:
    """Write the student as safetensors only: a PEFT adapter folder (its config canonical,
    declaring BASE by name: students.write_canonical_config), or the full weights.
    `state`: the weights gathered whole when training sharded them (training.full_state)."""
    out.mkdir(parents=True, exist_ok=True)
    if finetune == "lora":
        with writing(out / "adapter_model.safetensors"):  # a full disk: an OSError naming it
            model.save_pretrained(out, safe_serialization=True, state_dict=state)
        write_canonical_config(out, base)
        return
    from safetensors.torch import save_file, save_model

    with writing(out / "full_model.safetensors"):
        if state is not None:
            save_file({k: v.contiguous() for k, v in state.items()},
                      str(out / "full_model.safetensors"))
        else:
            save_model(model, str(out / "full_model.safetensors"))


def train_student(base: str, rows: list[dict], cfg: DistillConfig, out: Path,
                  device: str | None = None, lm: LM | None = None,
                  label: str = "distill", mixed_precision: str | None = None) -> Train:
    """Train a student from `base` on `rows` through the shared loop (training.fit); saves it
    to `out` and returns its record. Resumes from the last epoch checkpoint in `out`.
    `mixed_precision`: 'bf16' or 'no' (None: the config's, else what accelerate launch set)."""
    out = Path(out)
    if is_complete(out):
        return Train.load(out / "train.json")
    refuse_pickles(out)  # before any work: a planted pickle stops the stage at once
    if cfg.mode not in ("sft", "logits"):
        raise SubliminalError(f"unknown distill mode {cfg.mode!r}; choose sft or logits")
    rows = list(rows)
    if cfg.max_rows is not None and len(rows) > cfg.max_rows:
        rows = random.Random(cfg.seed).sample(rows, cfg.max_rows)
    if not rows:
        raise SubliminalError(f"{out}: no rows to train on; a student trained on nothing "
                              "would be the base under another name")
    acc = accelerator()
    if lm is None and device is None and acc.num_processes > 1:
        device = str(acc.device)  # one replica per process under `accelerate launch`
    lm = lm or load_model(base, device=device)
    torch.manual_seed(cfg.seed)
    model = make_student(lm, cfg)
    examples = build_examples(lm, rows, cfg)
    if not examples:
        raise SubliminalError(f"{out}: none of the {len(rows)} rows has a completion token "
                              f"within max_length={cfg.max_length}")
    loop = LoopConfig(lr=cfg.lr, epochs=cfg.epochs, batch_size=cfg.batch_size,
                      grad_accum=cfg.grad_accum, warmup_steps=cfg.warmup_steps, seed=cfg.seed,
                      mixed_precision=mixed_precision or getattr(cfg, "mixed_precision", None))
    pad = lm.tokenizer.pad_token_id
    split = not use_fsdp(acc)  # a sharded model takes one forward per backward
    losses = fit(model, examples, lambda m, b: batch_loss(m, b, cfg.mode, pad, lm.device, split),
                 loop, out, label, acc)
    info = Train(rows=len(rows), examples=len(examples), steps=len(losses), losses=losses,
                 config=cfg, base=base, student=out.name, processes=acc.num_processes)
    state = full_state(model, trainable_only=cfg.finetune == "lora")  # sharded: every process
    if acc.is_main_process:
        save_student(model, out, cfg.finetune, state, base)
        info.save(out / "train.json")
        clear_checkpoint(out)
        mark_complete(out, {"rows": len(rows), "steps": len(losses),
                            "final_loss": losses[-1] if losses else None})
    acc.wait_for_everyone()
    return info
