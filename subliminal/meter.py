"""Cost meter: what a stage spent — wall and CPU seconds, model positions and FLOPs.

    subliminal costs RUN                      # reads these figures back from a run's folder
    python benchmarks/bench_chain.py          # and against this CPU's matmul peak

Every model the lab loads is instrumented (`instrument`): hooks on its decoder and its output
head count the positions they process (padding included: padded positions cost FLOPs too)
and estimate the matmul FLOPs from the parameter counts — 2 per weight per position forward,
twice that when gradients flow to the inputs (a LoRA student: forward + backward through
frozen weights), three times when the weights themselves train (a full fine-tune).
Attention's own FLOPs (about 4 x context x hidden per layer and position, under 5% at the
lab's lengths of ~150 tokens) and embedding look-ups are left out, so the figure is a slight
under-count. A stage runs inside `metered(folder)`; `records.mark_complete` adds the reading
(`wall_s`, `cpu_s`, `positions`, `head_positions`, `gflop`) to its `complete.json`, so any
run can be profiled from its folder (`subliminal costs`). A stage resumed after a kill is
measured from its last start only — what the killed attempt spent died with its process — so
its record says `resumed: true` and the figures undercount.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from subliminal.records import COMPLETE, LOCK, READERS

# Running totals of this process; a meter reads the difference over its stage.
TOTAL = {"positions": 0, "head_positions": 0, "flop": 0.0}
_OPEN: dict[str, dict] = {}  # resolved stage folder -> the totals and clocks at its start


def _factor(module: torch.nn.Module) -> int:
    """FLOP multiple of a forward: 1 without gradients, 2 when they reach frozen weights'
    inputs only (LoRA), 3 when the weights themselves train."""
    if not torch.is_grad_enabled():
        return 1
    trains = any(p.requires_grad for n, p in module.named_parameters() if "lora_" not in n)
    return 3 if trains else 2


def instrument(model: torch.nn.Module) -> torch.nn.Module:
    """Count positions and FLOPs of `model`'s decoder and head (once per model)."""
    if getattr(model, "_subliminal_meter", False):
        return model
    decoder, head = model.get_decoder(), model.get_output_embeddings()
    body = sum(p.numel() for n, p in decoder.named_parameters() if "embed" not in n)
    width = head.weight.numel()

    def on_body(module, args, kwargs):
        x = kwargs.get("input_ids")
        x = x if x is not None else kwargs.get("inputs_embeds")
        if x is None and args:
            x = args[0]
        n = int(x.shape[0] * x.shape[1]) if x is not None else 0
        TOTAL["positions"] += n
        TOTAL["flop"] += 2.0 * body * n * _factor(module)

    def on_head(module, args):
        n = int(args[0].shape[:-1].numel())
        TOTAL["head_positions"] += n
        TOTAL["flop"] += 2.0 * width * n * (1 if not torch.is_grad_enabled() else
                                            2 + module.weight.requires_grad)

    decoder.register_forward_pre_hook(on_body, with_kwargs=True)
    head.register_forward_pre_hook(on_head)
    model._subliminal_meter = True
    return model


@contextlib.contextmanager
def metered(folder: Path) -> Iterator[None]:
    """Measure what happens inside for the stage that owns `folder` (nested meters of other
    folders are independent; the same folder's inner meter is ignored)."""
    key = str(Path(folder).resolve())
    if key in _OPEN:
        yield
        return
    _OPEN[key] = {**TOTAL, "wall": time.perf_counter(), "cpu": time.process_time(),
                  "resumed": earlier_attempt(Path(folder))}
    try:
        yield
    finally:
        _OPEN.pop(key, None)


def earlier_attempt(folder: Path) -> bool:
    """The folder holds an unfinished attempt's files (beyond its lock): this attempt's meter
    will not see what the earlier one spent, so its reading says `resumed`."""
    names = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    return COMPLETE not in names and bool(names - {LOCK})


def reading(folder: Path) -> dict:
    """What the stage owning `folder` has spent so far ({} when it is not metered)."""
    start = _OPEN.get(str(Path(folder).resolve()))
    if start is None:
        return {}
    wall = time.perf_counter() - start["wall"]
    cpu = time.process_time() - start["cpu"]
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "positions": TOTAL["positions"] - start["positions"],
            "head_positions": TOTAL["head_positions"] - start["head_positions"],
            "gflop": round((TOTAL["flop"] - start["flop"]) / 1e9, 1),
            "threads": torch.get_num_threads(),
            **({"resumed": True} if start["resumed"] else {})}


READERS.append(reading)
