"""Models: load a base (and a student on top) in eval mode; chat templates.

    subliminal chain --model smollm2-135m      # the embedded default (no download)
    subliminal chain --model Qwen/Qwen2.5-7B-Instruct   # any HF id or directory

Where a base comes from (embedded wheels, `tiny`, folders, hub ids) is `subliminal.bases`;
what a student folder must hold to fit a base is `subliminal.students`. Device and dtype
follow the hardware: CUDA -> bf16, CPU -> fp32. The system prompt in effect (a template may
insert a default one) is always recorded. Loading never runs a repository's own code
(`trust_remote_code=False`, explicitly).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from subliminal.bases import (  # noqa: F401  (re-exported: callers name bases through models)
    EMBEDDED,
    EMBEDDED_MODELS,
    TINY,
    cache_dir,
    embedded_dir,
    hub_cached,
    pick_device,
    resolve,
    tiny_model,
    tiny_tokenizer,
)
from subliminal.errors import SubliminalError
from subliminal.meter import instrument
from subliminal.students import FULL_WEIGHTS, BaseWeights, check_student


@dataclass
class LM:
    """A loaded model with its tokenizer and the facts a run must record about it."""

    model: torch.nn.Module
    tokenizer: object
    spec: str
    device: torch.device
    dtype: torch.dtype
    adapter: str | None = None
    info: dict = field(default_factory=dict)

    def render(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt)

    def chat_ids(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of a chat, rendered by the model's own template."""
        return self.tokenizer(self.render(messages, add_generation_prompt),
                              add_special_tokens=False)["input_ids"]

    @property
    def default_system_prompt(self) -> str | None:
        """The system prompt the template inserts when a chat has none (None if it adds none)."""
        text = self.render([{"role": "user", "content": "\x00"}], add_generation_prompt=False)
        head = text.split("\x00")[0]
        if "system" not in head:
            return None
        return head.split("system", 1)[1].split("<|im_end|>")[0].split("<|eot_id|>")[0].strip()

    @property
    def eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(end, int) and end != self.tokenizer.unk_token_id:
            ids.add(end)
        return sorted(i for i in ids if i is not None)


def with_system(system_prompt: str | None, messages: list[dict]) -> list[dict]:
    """A chat with `system_prompt` first; None leaves the template's default in effect."""
    if system_prompt is None:
        return list(messages)
    return [{"role": "system", "content": system_prompt}, *messages]


def load_model(spec: str = EMBEDDED, adapter: str | Path | None = None,
               device: str | None = None, seed: int = 0) -> LM:
    """Load base `spec` (and a PEFT adapter or full fine-tune on top) in eval mode."""
    dev, dtype = pick_device(device)
    if spec == TINY:
        model, tok = tiny_model(seed)
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        where = resolve(spec)
        # Several GPUs: let accelerate shard the layers (a 7B model fits one H100 anyway).
        # Not under a launcher (one replica per process there) nor for a named device.
        spread = (dev.type == "cuda" and dev.index is None and torch.cuda.device_count() > 1
                  and int(os.environ.get("WORLD_SIZE", "1")) == 1)
        local = Path(where).exists() or hub_cached(where)
        try:  # never the repository's own code; a cached hub model loads without the network
            tok = AutoTokenizer.from_pretrained(where, trust_remote_code=False,
                                                local_files_only=local)
            model = AutoModelForCausalLM.from_pretrained(
                where, dtype=dtype, device_map="auto" if spread else None,
                trust_remote_code=False, local_files_only=local, use_safetensors=True)
        except (OSError, ValueError, KeyError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
            raise SubliminalError(f"cannot load model {spec!r}: {first}") from None
        if spread:
            dev = model.get_input_embeddings().weight.device
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"  # batched generation needs the prompts right-aligned
    if not getattr(model, "hf_device_map", None):
        model.to(dev, dtype)
    if adapter is not None:
        model = attach_adapter(model, Path(adapter), base=spec)
    instrument(model)  # positions and FLOPs per stage (subliminal.meter)
    model.eval()
    lm = LM(model=model, tokenizer=tok, spec=spec, device=dev, dtype=dtype,
            adapter=str(adapter) if adapter else None)
    lm.info = {"spec": spec, "adapter": lm.adapter, "device": str(dev), "dtype": str(dtype),
               "parameters": sum(p.numel() for p in model.parameters()),
               "default_system_prompt": lm.default_system_prompt}
    return lm


def attach_adapter(model: torch.nn.Module, adapter: Path,
                   base: str | None = None) -> torch.nn.Module:
    """Apply a saved student: a PEFT adapter folder, or a full fine-tune's state dict. It is
    checked against the loaded model first (subliminal.students: readable safetensors, every
    tensor fits, a full fine-tune's keys all match), so a wrong folder is one line, never a
    traceback or, worse, a base that silently stays the base. BASE names it for messages."""
    adapter = Path(adapter)
    if check_student(adapter, BaseWeights.of(model, base)) == "lora":
        from peft import PeftModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return PeftModel.from_pretrained(model, adapter).merge_and_unload()
    from safetensors.torch import load_file

    loaded = model.load_state_dict(load_file(adapter / FULL_WEIGHTS), strict=False)
    if loaded.unexpected_keys:  # checked above; a loader that matches nothing must not pass
        raise SubliminalError(f"{adapter / FULL_WEIGHTS}: {len(loaded.unexpected_keys)} "
                              "tensors matched no weight of the base")
    return model
