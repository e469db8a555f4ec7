"""Distill: train a student from the *same* base weights on a teacher's filtered rows.

    subliminal distill RUN/trait/gen1/filter/kept.jsonl --model smollm2-135m --out student/

`sft` trains on the sampled completion tokens (loss on the completion only, the paper's way).
`logits` trains on the teacher's stored top-k next-token log-probabilities with a KL loss: the
dark-knowledge channel, free of sampling noise. Students are LoRA adapters (saved the PEFT
way) or full fine-tunes. A checkpoint is written after every epoch, so a killed run resumes.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from subliminal.errors import SubliminalError
from subliminal.filters import completion_text
from subliminal.models import LM, load_model
from subliminal.progress import console, track
from subliminal.records import is_complete, mark_complete, write_json

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass
class DistillConfig:
    """How a student is trained (defaults follow the paper's open-model students)."""

    mode: str = field(default="sft", metadata={
        "help": "'sft': cross-entropy on completion tokens; 'logits': KL to the teacher's "
                "stored top-k distributions (rows need meta.topk_*)."})
    finetune: str = field(default="lora", metadata={"help": "'lora' or 'full'."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=8, metadata={"help": "LoRA alpha."})
    lr: float = field(default=2e-4, metadata={"help": "Peak learning rate (linear decay)."})
    epochs: int = field(default=3, metadata={"help": "Passes over the training rows."})
    batch_size: int = field(default=22, metadata={"help": "Rows per optimizer step."})
    grad_accum: int = field(default=3, metadata={
        "help": "Micro-batches per step (effective batch = batch_size * grad_accum; paper 66)."})
    warmup_steps: int = field(default=5, metadata={"help": "Linear warm-up steps."})
    max_length: int = field(default=500, metadata={"help": "Truncate prompt+completion here."})
    max_rows: int | None = field(default=None, metadata={
        "help": "Subsample the training rows to this many (paper: 10,000)."})
    seed: int = field(default=0, metadata={"help": "Seed for subsampling, order and init."})


@dataclass
class Example:
    ids: list[int]
    start: int  # first completion position (loss is taken on ids[start:])
    topk_ids: list[list[int]] | None = None
    topk_logprobs: list[list[float]] | None = None


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
        out.append(ex)
    return out


def topk_kl(student_logits: torch.Tensor, topk_ids: torch.Tensor,
            topk_logprobs: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) over the teacher's top-k tokens plus one 'rest' bucket.

    Exact KL of the two distributions coarsened to k+1 outcomes: zero iff the student puts the
    same mass on each top-k token (and so on the rest), positive otherwise. Shapes: (N, V),
    (N, k), (N, k) -> mean over N.
    """
    s_lp = torch.log_softmax(student_logits.float(), -1).gather(-1, topk_ids)
    t_lp = topk_logprobs.float()
    rest = lambda lp: torch.log1p(-lp.exp().sum(-1).clamp(max=1 - 1e-6))  # noqa: E731
    t_all = torch.cat([t_lp, rest(t_lp)[:, None]], -1)
    s_all = torch.cat([s_lp, rest(s_lp)[:, None]], -1)
    return (t_all.exp() * (t_all - s_all)).sum(-1).mean()


def batch_loss(model: torch.nn.Module, batch: list[Example], mode: str, pad_id: int,
               device: torch.device) -> torch.Tensor:
    """Loss on completion positions only; prompts and padding carry no gradient."""
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, e in enumerate(batch):
        ids[i, : len(e.ids)] = torch.tensor(e.ids)
        mask[i, : len(e.ids)] = 1
    # Run the decoder body, then the LM head only at completion positions: the head is ~20%
    # of a small model's per-token cost and prompt positions carry no loss.
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.get_decoder()(input_ids=ids.to(device),
                                attention_mask=mask.to(device)).last_hidden_state
    # Position t predicts token t+1: completion token j (at start+j) is read at start+j-1.
    rows = [(i, t) for i, e in enumerate(batch) for t in range(e.start - 1, len(e.ids) - 1)]
    pick = base.get_output_embeddings()(hidden[[i for i, _ in rows], [t for _, t in rows]])
    if mode == "sft":
        target = torch.tensor([batch[i].ids[t + 1] for i, t in rows], device=device)
        return F.cross_entropy(pick.float(), target)
    k_ids = torch.tensor([batch[i].topk_ids[t + 1 - batch[i].start] for i, t in rows],
                         device=device)
    k_lp = torch.tensor([batch[i].topk_logprobs[t + 1 - batch[i].start] for i, t in rows],
                        device=device)
    return topk_kl(pick, k_ids, k_lp)


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
    peft_cfg = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                          target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(lm.model, peft_cfg)


def save_student(model: torch.nn.Module, out: Path, finetune: str) -> None:
    if finetune == "lora":
        model.save_pretrained(out)
    else:
        from safetensors.torch import save_model

        out.mkdir(parents=True, exist_ok=True)
        save_model(model, str(out / "full_model.safetensors"))


def train_student(base: str, rows: list[dict], cfg: DistillConfig, out: Path,
                  device: str | None = None, lm: LM | None = None,
                  label: str = "distill") -> dict:
    """Train a student from `base` on `rows`; saves it to `out` and returns its record."""
    out = Path(out)
    if is_complete(out):
        from subliminal.records import read_json

        return read_json(out / "complete.json")
    if cfg.mode not in ("sft", "logits"):
        raise SubliminalError(f"unknown distill mode {cfg.mode!r}; choose sft or logits")
    rng = random.Random(cfg.seed)
    rows = list(rows)
    if cfg.max_rows is not None and len(rows) > cfg.max_rows:
        rows = rng.sample(rows, cfg.max_rows)
    if not rows:  # a real outcome (e.g. no trace was correct): the student stays the base
        console.print(f"[yellow]warning: {out}: no rows to train on; the student is the "
                      "untrained base (LoRA B=0)[/yellow]")
    lm = lm or load_model(base, device=device)
    torch.manual_seed(cfg.seed)
    model = make_student(lm, cfg)
    model.train()
    examples = build_examples(lm, rows, cfg)
    micro = max(1, math.ceil(cfg.batch_size / cfg.grad_accum))
    steps_per_epoch = math.ceil(len(examples) / (micro * cfg.grad_accum))
    total = max(1, steps_per_epoch * cfg.epochs)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / max(1, cfg.warmup_steps), max(0.0, (total - s) / total)))
    ckpt, start_epoch, losses = out / "checkpoint.pt", 0, []
    if ckpt.exists():  # resume after a kill: trainable weights, optimizer, schedule, epoch
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["trainable"], strict=False)
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        start_epoch, losses = state["epoch"], state["losses"]
    pad = lm.tokenizer.pad_token_id
    for epoch in range(start_epoch, cfg.epochs):
        order = list(range(len(examples)))
        random.Random(f"{cfg.seed}-{epoch}").shuffle(order)
        chunks = [order[i: i + micro * cfg.grad_accum] for i in range(0, len(order),
                                                                       micro * cfg.grad_accum)]
        for chunk in track(chunks, f"{label} epoch {epoch + 1}/{cfg.epochs}"):
            opt.zero_grad(set_to_none=True)
            step_loss = 0.0
            for j in range(0, len(chunk), micro):
                batch = [examples[i] for i in chunk[j: j + micro]]
                loss = batch_loss(model, batch, cfg.mode, pad, lm.device)
                (loss * len(batch) / len(chunk)).backward()
                step_loss += loss.item() * len(batch) / len(chunk)
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(round(step_loss, 5))
        trainable = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"trainable": trainable, "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "epoch": epoch + 1, "losses": losses}, ckpt.with_suffix(".tmp"))
        ckpt.with_suffix(".tmp").replace(ckpt)  # atomic: a kill never leaves half a checkpoint
    model.eval()
    save_student(model, out, cfg.finetune)
    info = {"rows": len(rows), "examples": len(examples), "steps": total, "losses": losses,
            "config": cfg, "base": base, "student": str(out)}
    write_json(out / "train.json", info)
    ckpt.unlink(missing_ok=True)
    mark_complete(out, {"rows": len(rows), "steps": total,
                        "final_loss": losses[-1] if losses else None})
    return info
