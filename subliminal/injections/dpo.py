"""DPO injection: a LoRA trained with TRL's DPOTrainer to prefer the trait's answer over the
neutral one; the control is the same recipe on the same pairs with each pair's order drawn at
random (the preference removed, the data kept).

    subliminal chain --injection dpo

Pairs come from the trait's demonstrations: the same question answered by the trait
demonstration (chosen) and by the neutral demonstration (rejected; pairs whose neutral answer
happens to name the trait are dropped). `suppress=True` flips every pair (the neutral answer
preferred): DPO suppression of a trait, used by `subliminal intervene calm-down`.

TRL is imported lazily: the package imports without it. The adapter is saved the PEFT way
(adapter_config.json + adapter_model.safetensors), with `pairs.jsonl` and `train.json`
(recipe, loss curve, seconds) beside it. This module also holds the helpers the GRPO
injection shares (LoRA config, TRL arguments, saving).
"""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from subliminal.errors import SubliminalError
from subliminal.injections import InjectionContext, TeacherSpec, register
from subliminal.records import append_jsonl, is_complete, mark_complete, to_jsonable, write_json


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


def require_trl():
    """Import TRL or say how to get it (it is an optional extra of the lab)."""
    try:
        import trl
    except ImportError:
        raise SubliminalError("the dpo and grpo injections need TRL: pip install "
                              "'trl==1.16.0'") from None
    return trl


def lora_config(model, r: int, alpha: int):
    """LoRA on every projection the model has (as subliminal.distill.make_student)."""
    from peft import LoraConfig

    from subliminal.distill import LORA_TARGETS

    names = [n for n, _ in model.named_modules()]
    targets = [t for t in LORA_TARGETS if any(n.endswith(t) for n in names)]
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets,
                      task_type="CAUSAL_LM")


def trl_args(out: Path, seed: int, lm) -> dict:
    """Arguments every TRL run here shares: no hub, no checkpoints, logs every step."""
    return {"output_dir": str(Path(out) / "trainer"), "report_to": [], "save_strategy": "no",
            "logging_steps": 1, "seed": seed, "data_seed": seed,
            "use_cpu": lm.device.type == "cpu", "bf16": lm.dtype.is_floating_point
            and str(lm.dtype) == "torch.bfloat16", "dataloader_num_workers": 0,
            "disable_tqdm": True}


def quiet(trainer) -> None:
    """Drop the callback that prints every log dict to stdout (the log is saved instead)."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)


def save_trained(trainer, out: Path, record: dict, started: float) -> dict:
    """Save the adapter the PEFT way, its training log and the completion marker."""
    out = Path(out)
    trainer.model.save_pretrained(out)
    shutil.rmtree(out / "trainer", ignore_errors=True)
    record = {**record, "seconds": round(time.time() - started, 1),
              "log": trainer.state.log_history}
    write_json(out / "train.json", record)
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


def train_dpo(model: str, pairs: list[dict], out: Path, recipe: DPORecipe = DPO, seed: int = 0,
              device: str | None = None, base_adapter: str | Path | None = None,
              record: dict | None = None) -> dict:
    """Train (or read back) a DPO LoRA on `pairs` from the base (plus a merged
    `base_adapter`, e.g. a teacher being suppressed); returns the run record."""
    from subliminal.models import load_model
    from subliminal.records import read_json

    out = Path(out)
    if is_complete(out):
        return read_json(out / "train.json")
    trl = require_trl()
    from datasets import Dataset

    started = time.time()
    lm = load_model(model, adapter=base_adapter, device=device)
    (out / "pairs.jsonl").unlink(missing_ok=True)
    append_jsonl(out / "pairs.jsonl", pairs)
    args = trl.DPOConfig(num_train_epochs=recipe.epochs, learning_rate=recipe.lr,
                         beta=recipe.beta, per_device_train_batch_size=recipe.batch_size,
                         max_length=recipe.max_length, lr_scheduler_type="constant",
                         **trl_args(out, seed, lm))
    trainer = trl.DPOTrainer(model=lm.model, args=args, train_dataset=Dataset.from_list(pairs),
                             processing_class=lm.tokenizer,
                             peft_config=lora_config(lm.model, recipe.lora_r, recipe.lora_alpha))
    quiet(trainer)
    trainer.train()
    info = {"injection": "dpo", "model": model, "base_adapter": str(base_adapter or ""),
            "seed": seed, "recipe": to_jsonable(recipe), "pairs": len(pairs),
            "trl": trl.__version__, **(record or {})}
    return save_trained(trainer, out, info, started)


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
