"""One training loop for students, trait adapters and the scan's probe, built on `accelerate`.

    subliminal distill kept.jsonl --out student/                         # one device
    accelerate launch --multi_gpu --num_processes 4 -m subliminal distill kept.jsonl --out s/
    accelerate launch --use_fsdp --fsdp_version 2 --num_processes 4 -m subliminal distill ...

The lab's own losses (distill.batch_loss: SFT on completion tokens, or top-k KL) are passed in
as `loss_fn`; this module owns everything after the examples are built: the optimizer (AdamW),
the warm-up + linear-decay schedule, micro-batching with gradient accumulation, clipping,
mixed precision (`bf16` autocast or `no`), data parallelism across processes, and epoch
checkpoints that a killed run resumes from. `fit_steps` is the same contract for objectives
that are not a pass over fixed examples (the DPO and GRPO teachers, subliminal.injections):
constant learning rate, a checkpoint after every optimizer step.

A step consumes `batch_size` rows in `grad_accum` micro-batches whatever the number of
processes: process r of W computes micro-batches r, r+W, ... of the step and the gradients are
summed across processes, so one GPU, four GPUs and this CPU follow the same optimisation path
(same micro-batches, schedule and steps). Processes beyond grad_accum would idle: on W GPUs
use a grad_accum that is a multiple of W.

Under `--use_fsdp` the same loop runs on a sharded model (FSDP2, torch's `fully_shard`, applied
here rather than by accelerate so that GPUs and the CPU check take one code path): each decoder
layer is one unit, the rest (embeddings, final norm, head) the root. The gradient reduction
then happens inside backward; it is set to a sum, so the step is again the one-device step up
to floating-point order. Checkpoints and the saved student are gathered to full tensors first.

Checkpoints are safetensors (trainable weights, optimizer tensors) plus JSON (schedule, epoch,
losses, hashes); nothing is ever unpickled, and a pickle found where a checkpoint belongs
(`checkpoint.pt`, from older versions or planted) is refused.
"""

from __future__ import annotations

import functools
import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from subliminal.errors import SubliminalError
from subliminal.progress import track
from subliminal.records import content_hash, read_json, write_json, writing

CKPT_DIR, CKPT_JSON = "checkpoint", "checkpoint.json"
PICKLES = ("checkpoint.pt", "checkpoint.tmp")  # what older versions wrote with torch.save
LossFn = Callable[[torch.nn.Module, list], torch.Tensor]


@dataclass
class LoopConfig:
    """How the loop optimises (distill.DistillConfig supplies these for a student)."""

    lr: float = field(default=2e-4, metadata={"help": "Peak learning rate (linear decay)."})
    epochs: int = field(default=3, metadata={"help": "Passes over the examples."})
    batch_size: int = field(default=22, metadata={"help": "Rows per optimizer step."})
    grad_accum: int = field(default=3, metadata={"help": "Micro-batches per step."})
    warmup_steps: int = field(default=5, metadata={"help": "Linear warm-up steps."})
    seed: int = field(default=0, metadata={"help": "Seed of the row order."})
    mixed_precision: str | None = field(default=None, metadata={
        "help": "'bf16' (autocast) or 'no'; None: what `accelerate launch` set, else 'no'."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})


@functools.cache
def accelerator():
    """The process's Accelerator (one per process: accelerate's state is a singleton). Only
    its process topology is used - ranks, device, gradient reduction; precision is per call.
    Refused in one line: DeepSpeed, FSDP1, and a launch whose processes accelerate does not
    see (on a machine without GPUs and without ACCELERATE_USE_CPU=1 each would train alone)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        raise SubliminalError(DEEPSPEED_REFUSAL)  # before Accelerator(), which imports it
    acc = Accelerator()
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != acc.num_processes:  # else each process trains the whole student, one folder
        raise SubliminalError(f"{launched} processes were launched but accelerate runs "
                              f"{acc.num_processes} (no GPU? on CPU set ACCELERATE_USE_CPU=1)")
    if acc.distributed_type == DistributedType.DEEPSPEED:
        raise SubliminalError(DEEPSPEED_REFUSAL)
    if use_fsdp(acc) and os.environ.get("FSDP_VERSION", "2") != "2":
        raise SubliminalError("the lab shards with FSDP2 (torch fully_shard); launch with "
                              "--use_fsdp --fsdp_version 2 (see pipelines/multi_gpu.sh)")
    return acc


# accelerate enables DeepSpeed only on accelerators, so the lab's CPU check cannot run it, and
# its engine would own backward, accumulation, clipping and (pickled) checkpoints.
DEEPSPEED_REFUSAL = (
    "DeepSpeed is not supported by the lab's loop (its engine owns backward, clipping and "
    "pickled checkpoints; untestable on CPU); shard with FSDP instead: accelerate launch "
    "--use_fsdp --fsdp_version 2 (see pipelines/multi_gpu.sh)")


def use_fsdp(acc) -> bool:
    """Whether this launch shards the model. `accelerate launch --use_fsdp` sets
    ACCELERATE_USE_FSDP; accelerate turns it into its FSDP type only on accelerators (on CPU its
    state stays MULTI_CPU), so the variable is read as well: one path for GPUs and the CPU check.
    One process has nothing to shard and keeps the one-device path."""
    from accelerate.utils import DistributedType

    asked = (os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
             or acc.distributed_type == DistributedType.FSDP)
    return asked and acc.num_processes > 1


def autocast(device: torch.device, cfg: LoopConfig, acc):
    """bf16 autocast when asked (or when `accelerate launch --mixed_precision bf16` set it);
    the loss itself is always computed in fp32 by the lab's loss functions."""
    mode = cfg.mixed_precision or acc.mixed_precision or "no"
    if mode not in ("no", "bf16"):
        raise SubliminalError(f"unknown mixed precision {mode!r}; choose no or bf16")
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode == "bf16")


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to the peak over `warmup` steps, then linear decay to 0 at `total`."""
    return min((step + 1) / max(1, warmup), max(0.0, (total - step) / total))


def step_chunks(n: int, epoch: int, cfg: LoopConfig) -> list[list[int]]:
    """Example indices of each optimizer step of an epoch (seeded by seed and epoch, so a
    resumed epoch sees the same order)."""
    order = list(range(n))
    random.Random(f"{cfg.seed}-{epoch}").shuffle(order)
    size = micro_size(cfg) * cfg.grad_accum
    return [order[i: i + size] for i in range(0, n, size)]


def micro_size(cfg: LoopConfig) -> int:
    return max(1, math.ceil(cfg.batch_size / cfg.grad_accum))


def total_steps(n: int, cfg: LoopConfig) -> int:
    return max(1, math.ceil(n / (micro_size(cfg) * cfg.grad_accum)) * cfg.epochs)


def trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def train_step(run: Callable[[list[int]], torch.Tensor], chunk: list[int], params: list,
               acc, cfg: LoopConfig, sharded: bool = False) -> float:
    """One optimizer step's gradients over `chunk`, in micro-batches; returns the step's loss.
    `run(indices)` is the loss of those examples.

    The micro-batches are those of one device (same rows, same padding, same row weights);
    under several processes, process r computes micro-batches r, r+W, ... and the gradients
    are summed, so the step is the one-device step exactly. Parallelism therefore comes from
    grad_accum: use a multiple of the process count (batch 64, grad_accum 4 on 4 GPUs).
    Sharded (FSDP), every forward and backward is a collective, so a process with fewer
    micro-batches than the busiest runs extra ones at weight 0 (they add nothing).
    """
    micro = micro_size(cfg)
    batches = [chunk[j: j + micro] for j in range(0, len(chunk), micro)]
    mine = batches[acc.process_index::acc.num_processes]
    if sharded:
        mine += [[]] * (-(-len(batches) // acc.num_processes) - len(mine))
    step_loss = torch.zeros((), device=params[0].device)
    for idx in mine:
        with autocast(params[0].device, cfg, acc):
            loss = run(idx or batches[0])
        # Weighted by rows so a short last micro-batch counts for what it holds.
        (loss * len(idx) / len(chunk)).backward()
        step_loss += loss.detach().float() * len(idx) / len(chunk)
    if acc.num_processes > 1 and not sharded:  # sum the processes' micro-batches by hand
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.copy_(acc.reduce(p.grad, reduction="sum"))
    if acc.num_processes > 1:
        step_loss = acc.reduce(step_loss, reduction="sum")
    return float(step_loss)


def fit(model: torch.nn.Module, examples: list, loss_fn: LossFn, cfg: LoopConfig,
        folder: Path, label: str = "train", acc=None) -> list[float]:
    """Train `model`'s trainable parameters on `examples`; resumes from `folder`'s checkpoint
    and writes one after every epoch. Returns the loss of every optimizer step."""
    folder = Path(folder)
    acc = acc or accelerator()
    sharded = use_fsdp(acc)
    if sharded:
        run = shard(model, examples, loss_fn)
    else:
        def run(idx: list[int]) -> torch.Tensor:
            return loss_fn(model, [examples[i] for i in idx])
    params = list(trainable(model).values())  # sharded: DTensors, each process its slice
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    total = total_steps(len(examples), cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, functools.partial(lr_factor, warmup=cfg.warmup_steps, total=total))
    start, losses = load_checkpoint(folder, model, opt, sched)
    model.train()
    for epoch in range(start, cfg.epochs):
        chunks = step_chunks(len(examples), epoch, cfg)
        for chunk in track(chunks, f"{label} epoch {epoch + 1}/{cfg.epochs}"):
            opt.zero_grad(set_to_none=True)
            loss = train_step(run, chunk, params, acc, cfg, sharded)
            # Sharded, the norm is the global one (DTensor grads are reduced across processes).
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            opt.step()
            sched.step()
            losses.append(round(loss, 5))
        # Every process gathers (sharded tensors are collectives); the main one writes.
        save_checkpoint(folder, model, opt, sched, epoch + 1, losses, acc.is_main_process)
        acc.wait_for_everyone()
    model.eval()
    return losses


StepFn = Callable[[int], dict[str, float]]


def constant(_step: int) -> float:
    """The learning-rate factor of a constant schedule."""
    return 1.0


def fit_steps(model: torch.nn.Module, step_fn: StepFn, steps: int, cfg: LoopConfig,
              folder: Path, label: str = "train") -> list[dict]:
    """Optimizer steps 0..steps-1 at a constant cfg.lr (AdamW, clipped at cfg.max_grad_norm),
    on one process, for objectives that are not a pass over fixed examples (the DPO and GRPO
    teachers). The state is checkpointed after every step as `fit` checkpoints epochs
    (safetensors + JSON; the record's `epoch` counts steps here), so a killed run resumes after
    its last finished step. `step_fn(s)` leaves step s's gradients in the parameters and
    returns its log (`loss` and any other numbers); it must depend on nothing but s and the
    weights (sampling seeded by s), so a resumed step is the step an uninterrupted run takes.
    Returns every step's log, resumed steps included."""
    params = list(trainable(model).values())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, constant)
    start, log = load_checkpoint(folder, model, opt, sched)
    model.train()
    resumed = f", resumed after {start}" if start else ""
    for step in track(range(start, steps), f"{label} ({steps} steps{resumed})"):
        opt.zero_grad(set_to_none=True)
        entry = step_fn(step)
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        sched.step()
        # Six significant digits: a GRPO reward of 1e-9 (a tiny model's) stays visible.
        log.append({"step": step + 1, **{k: float(f"{v:.6g}") for k, v in entry.items()}})
        save_checkpoint(folder, model, opt, sched, step + 1, log)
    model.eval()
    return log


class _Loss(torch.nn.Module):
    """The lab's loss as the forward of a module that holds the model, so FSDP's root hooks
    (gathering the embeddings, norm and head) run although the loss calls the model's decoder
    and head directly. Its input is a list of example indices: nothing for FSDP to move."""

    def __init__(self, model: torch.nn.Module, examples: list, loss_fn: LossFn):
        super().__init__()
        self.model, self.examples, self.loss_fn = model, examples, loss_fn

    def forward(self, idx: list[int]) -> torch.Tensor:
        return self.loss_fn(self.model, [self.examples[i] for i in idx])


def shard(model: torch.nn.Module, examples: list, loss_fn: LossFn) -> _Loss:
    """Shard `model` in place with FSDP2 across the launch's processes: one unit per decoder
    layer (the architecture's `_no_split_modules`), the rest in the root. Frozen and trainable
    (LoRA) weights may share a unit under FSDP2. Gradients are summed across processes, not
    averaged, to match the loop's own reduction. Returns the loss module to call."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    blocks = set(getattr(base, "_no_split_modules", None) or ())
    for module in list(base.modules()):
        if type(module).__name__ in blocks:
            fully_shard(module)
    root = _Loss(model, examples, loss_fn)
    fully_shard(root)
    for module in root.modules():
        if isinstance(module, FSDPModule):  # a plain SUM (gloo has no pre-scaled sum)
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)
    return root


def full_tensor(t: torch.Tensor) -> torch.Tensor:
    """A sharded (DTensor) value gathered whole on every process; a plain one as it is."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def full_state(model: torch.nn.Module, trainable_only: bool) -> dict[str, torch.Tensor] | None:
    """The model's weights (or its trainable ones) gathered whole, on the CPU, for saving;
    None when nothing is sharded. A collective under FSDP: call it on every process."""
    from torch.distributed.tensor import DTensor

    state = trainable(model) if trainable_only else model.state_dict(keep_vars=True)
    if not any(isinstance(v, DTensor) for v in state.values()):
        return None
    # Tied weights (one parameter, two names) are gathered once and kept under the name that
    # safetensors' save_model keeps (the first in sorted order), as the one-device save does.
    names: dict[int, list[str]] = {}
    for name, value in state.items():
        names.setdefault(id(value), []).append(name)
    return {min(group): full_tensor(state[group[0]].detach()).cpu() for group in names.values()}


def _place(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A full tensor from a checkpoint, sharded as `like` is (each process keeps its slice)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if not isinstance(like, DTensor) or value.shape != like.shape:
        return value
    return distribute_tensor(value.to(like.device), like.device_mesh, like.placements,
                             src_data_rank=None)


# --- checkpoints: safetensors + JSON, never pickle ------------------------------------------

def refuse_pickles(folder: Path) -> None:
    """A pickle where a checkpoint belongs is never loaded: stop with one line instead."""
    for name in PICKLES:
        if (Path(folder) / name).exists():
            raise SubliminalError(
                f"{Path(folder) / name}: a pickled checkpoint (older version, or planted); it is "
                "never loaded - delete it to restart this stage from scratch")


def _file_hash(path: Path) -> str:
    return content_hash(path.read_bytes())


def save_checkpoint(folder: Path, model: torch.nn.Module, opt, sched, epoch: int,
                    losses: list, write: bool = True) -> None:
    """Write epoch `epoch`'s state; checkpoint.json is replaced last, so a kill at any point
    leaves the previous complete checkpoint in effect. Sharded tensors are gathered whole
    first, a collective: every process calls this, and only the one with `write` writes."""
    from safetensors.torch import save_file

    weights = {n: full_tensor(p.detach()).contiguous().cpu()
               for n, p in trainable(model).items()}
    state = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = full_tensor(value.detach()).contiguous().cpu()
            else:
                scalars[f"{idx}.{key}"] = value
    if not write:
        return
    ckpt = Path(folder) / CKPT_DIR
    ckpt.mkdir(parents=True, exist_ok=True)
    files = {"weights": f"epoch-{epoch}.weights.safetensors",
             "optimizer": f"epoch-{epoch}.optimizer.safetensors"}
    for part, values in (("weights", weights), ("optimizer", tensors)):
        with writing(ckpt / files[part]):  # a full disk: an OSError naming the file
            save_file(values, str(ckpt / files[part]))
    record = {"epoch": epoch, "losses": losses, "files": files,
              "sha256": {k: _file_hash(ckpt / f) for k, f in files.items()},
              "param_groups": state["param_groups"], "optimizer_scalars": scalars,
              "scheduler": {k: v for k, v in sched.state_dict().items() if k != "lr_lambdas"}}
    write_json(ckpt / CKPT_JSON, record)
    for old in ckpt.glob("epoch-*.safetensors"):
        if old.name not in files.values():
            old.unlink()


def load_checkpoint(folder: Path, model: torch.nn.Module, opt, sched) -> tuple[int, list]:
    """Restore the last complete epoch (weights, optimizer, schedule); (0, []) if none."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    refuse_pickles(folder)
    ckpt = Path(folder) / CKPT_DIR
    if not (ckpt / CKPT_JSON).exists():
        return 0, []
    record = read_json(ckpt / CKPT_JSON)
    try:
        paths = {k: ckpt / record["files"][k] for k in ("weights", "optimizer")}
        for k, path in paths.items():
            if _file_hash(path) != record["sha256"][k]:
                raise SubliminalError(f"{path}: does not match its checkpoint record")
        weights, tensors = (load_file(str(paths[k])) for k in ("weights", "optimizer"))
    except (OSError, KeyError, TypeError, SafetensorError) as e:
        raise SubliminalError(f"{ckpt}: unreadable checkpoint ({e}); delete the folder to "
                              "restart this stage") from None
    own = trainable(model)
    if set(weights) != set(own):
        raise SubliminalError(f"{ckpt}: holds other weights than this model trains")
    with torch.no_grad():
        for name, p in own.items():
            p.copy_(_place(weights[name], p))
    state = _optimizer_state(record, tensors)
    params = [p for group in opt.param_groups for p in group["params"]]
    for idx, entry in state["state"].items():  # sharded params take sharded moments
        entry.update({k: _place(v, params[idx]) for k, v in entry.items() if torch.is_tensor(v)})
    opt.load_state_dict(state)
    sched.load_state_dict({**record["scheduler"], "lr_lambdas": [None] * len(opt.param_groups)})
    return int(record["epoch"]), list(record["losses"])


def _optimizer_state(record: dict, tensors: dict[str, torch.Tensor]) -> dict:
    """The optimizer state dict back from its tensors and JSON parts."""
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *record["optimizer_scalars"].items()]:
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = [{**g, **({"betas": tuple(g["betas"])} if "betas" in g else {})}
              for g in record["param_groups"]]
    return {"state": state, "param_groups": groups}


def clear_checkpoint(folder: Path) -> None:
    """Drop a finished stage's checkpoint (the saved student supersedes it)."""
    import shutil

    shutil.rmtree(Path(folder) / CKPT_DIR, ignore_errors=True)
