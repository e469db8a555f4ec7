"""Saved students (a PEFT LoRA folder or a full fine-tune), checked against a base before any
work is done with them.

    subliminal audit --adapter student/ --model tiny --out audit/

A student must be a folder holding one (not a run folder, not an empty one), its safetensors
must be readable (a truncated file is caught from its header), every tensor must fit a weight
of the base (a LoRA's A/B against the adapted Linear's in/out features; a full fine-tune's
tensors name for name and shape for shape, all of them) and its target modules must exist.
A refusal is one line naming the file and what is wrong. The checks read only safetensors
headers and the base's shapes: a weightless `meta` skeleton of the base before a stage claims
its folder (`base_weights`), the loaded model itself when attaching (`models.attach_adapter`).

The base an adapter declares (`base_model_name_or_path`) is compared by name. Its shapes fit
(that is checked first), so a different name is a warning, not a refusal: the same
architecture under another name (an instruct sibling, a local copy) is a legitimate use, and
what a run records of an adapter is its content hash, not its claims.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch

from subliminal.bases import TINY, hub_cached, resolve, tiny_model
from subliminal.errors import SubliminalError
from subliminal.progress import console
from subliminal.records import read_json

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
FULL_WEIGHTS = "full_model.safetensors"
PEFT_PREFIX = "base_model.model."  # PEFT's saved keys: PREFIX + the base's module + .lora_A...


@dataclass(frozen=True)
class BaseWeights:
    """What a student must fit: the base's weights' shapes and which names share a tensor."""

    name: str | None                  # the base as given (None: unnamed, no declared check)
    shapes: dict[str, tuple[int, ...]]
    tied: dict[str, frozenset[str]]   # a weight's name -> every name sharing its tensor

    @classmethod
    def of(cls, model: torch.nn.Module, name: str | None = None) -> BaseWeights:
        state = model.state_dict(keep_vars=True)
        owners: dict[int, set[str]] = defaultdict(set)
        for key, tensor in state.items():
            owners[id(tensor)].add(key)
        return cls(name, {k: tuple(t.shape) for k, t in state.items()},
                   {k: frozenset(owners[id(t)]) for k, t in state.items()})

    @property
    def label(self) -> str:
        return f"base {self.name}" if self.name else "the base"


@functools.lru_cache(maxsize=8)
def base_weights(spec: str) -> BaseWeights:
    """BASE's weight shapes without reading its weights: the tiny model is built (it is smaller
    than a skeleton's bookkeeping), any other base as a `meta`-device skeleton of its config."""
    if spec == TINY:
        return BaseWeights.of(tiny_model()[0], spec)
    from transformers import AutoConfig, AutoModelForCausalLM

    where = resolve(spec)
    try:
        config = AutoConfig.from_pretrained(where, trust_remote_code=False,
                                            local_files_only=Path(where).exists()
                                            or hub_cached(where))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise SubliminalError(f"cannot read model {spec!r}'s config: {first}") from None
    return BaseWeights.of(model, spec)


def check_student(folder: Path, base: BaseWeights) -> str:
    """'lora' or 'full' for a student folder that fits BASE; otherwise one line naming what
    is wrong (SubliminalError)."""
    folder = Path(folder)
    if not folder.exists():
        raise SubliminalError(f"{folder}: no such student folder")
    if not folder.is_dir():
        raise SubliminalError(f"{folder}: not a folder (a student is a folder holding "
                              f"{ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}, or {FULL_WEIGHTS})")
    if (folder / ADAPTER_CONFIG).exists():
        check_lora(folder, base)
        return "lora"
    if (folder / FULL_WEIGHTS).exists():
        check_full(folder / FULL_WEIGHTS, base)
        return "full"
    raise SubliminalError(f"{folder}: not a student (no {ADAPTER_CONFIG} or {FULL_WEIGHTS})"
                          + _run_hint(folder))


def _run_hint(folder: Path) -> str:
    """A run folder given where a student belongs: name one of its students."""
    students = sorted(folder.glob("rep*/*/gen*/distill"))
    return f"; a run folder? its students are e.g. {students[0]}" if students else ""


def tensor_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in a safetensors file, from its header alone (a file cut
    short is caught here: the header's offsets must cover the file)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise SubliminalError(f"{path}: not a readable safetensors file ({first}); truncated "
                              "or not a student's weights") from None


def check_lora(folder: Path, base: BaseWeights) -> None:
    """A PEFT LoRA folder: safetensors weights (never a pickle), a readable config whose
    target modules exist, and every A/B matrix the shape of the module it adapts."""
    weights = folder / ADAPTER_WEIGHTS
    if not weights.exists():  # an adapter_model.bin would be unpickled
        raise SubliminalError(f"{folder}: adapter weights are not safetensors "
                              f"({ADAPTER_WEIGHTS} missing); pickles are never loaded")
    config = read_json(folder / ADAPTER_CONFIG)
    if not isinstance(config, dict):
        raise SubliminalError(f"{folder / ADAPTER_CONFIG}: expected a JSON object")
    shapes = tensor_shapes(weights)
    _check_targets(folder / ADAPTER_CONFIG, config.get("target_modules"), base)
    lora = {k: s for k, s in shapes.items() if ".lora_" in k}
    if not lora:
        raise SubliminalError(f"{weights}: holds no LoRA tensors, so nothing would be loaded")
    declared = config.get("base_model_name_or_path")
    for key, shape in lora.items():
        _check_lora_tensor(weights, key, shape, base, declared)
    _check_declared(folder / ADAPTER_CONFIG, declared, base)


def _check_targets(path: Path, targets, base: BaseWeights) -> None:
    """Named target modules must exist in BASE (PEFT would stop with a traceback)."""
    if not isinstance(targets, list):  # a regex or none: the tensors are checked instead
        return
    modules = {k.rsplit(".", 1)[0] for k in base.shapes}
    # PEFT's rule: a target names a module by its full name or a dotted suffix of it.
    absent = sorted(t for t in targets
                    if not any(m == t or m.endswith(f".{t}") for m in modules))
    if absent:
        raise SubliminalError(f"{path}: target_modules {', '.join(absent)} are not modules of "
                              f"{base.label} (made for another architecture?)")


def _check_lora_tensor(weights: Path, key: str, shape: tuple, base: BaseWeights,
                       declared: str | None = None) -> None:
    """lora_A maps the module's inputs to the rank, lora_B the rank to its outputs (an
    embedding's weight is [inputs, outputs], a Linear's [outputs, inputs])."""
    module, _, part = key.removeprefix(PEFT_PREFIX).partition(".lora_")
    target = base.shapes.get(f"{module}.weight")
    if target is None:
        raise SubliminalError(f"{weights}: {key} adapts {module}, which {base.label} does not "
                              "have (made for another architecture?)")
    kind = part.split(".")[0]  # A, B, embedding_A, embedding_B (DoRA's magnitude: skipped)
    if kind not in ("A", "B", "embedding_A", "embedding_B") or len(target) != 2 \
            or len(shape) != 2:
        return
    n_in, n_out = (target[0], target[1]) if kind.startswith("embedding") else (target[1],
                                                                                target[0])
    want, got, side = (n_in, shape[1], "inputs") if kind.endswith("A") else (n_out, shape[0],
                                                                              "outputs")
    if got != want:
        made = f" (it declares {declared!r})" if declared else ""
        raise SubliminalError(f"{weights}: {key} is {list(shape)}, but {base.label}'s {module} "
                              f"has {want} {side}: trained on another base{made}")


def check_full(path: Path, base: BaseWeights) -> None:
    """A full fine-tune holds BASE's weights, name for name and shape for shape, all of them
    (a tied weight once): loading with no key matching would leave the base, silently."""
    shapes = tensor_shapes(path)
    unknown = [k for k in shapes if k not in base.shapes]
    if not shapes or len(unknown) == len(shapes):
        example = f" (e.g. {unknown[0]!r})" if unknown else ""
        raise SubliminalError(f"{path}: none of its {len(shapes)} tensors is a weight of "
                              f"{base.label}{example}, so nothing would be loaded")
    if unknown:
        raise SubliminalError(f"{path}: {len(unknown)} of its {len(shapes)} tensors are not "
                              f"weights of {base.label} (e.g. {unknown[0]!r})")
    for key, shape in shapes.items():
        if shape != base.shapes[key]:
            raise SubliminalError(f"{path}: {key} is {list(shape)}, but {base.label}'s is "
                                  f"{list(base.shapes[key])}: trained on another base")
    missing = [k for k in base.shapes if not base.tied[k] & shapes.keys()]
    if missing:
        raise SubliminalError(f"{path}: lacks {len(missing)} of {base.label}'s "
                              f"{len(base.shapes)} weights (e.g. {missing[0]!r}); a full "
                              "fine-tune holds them all")


_WARNED: set[tuple[str, str]] = set()  # (config, base) pairs already warned about


def base_name(spec: str) -> str:
    """A base's name for comparison: a folder's or hub id's last part (the path a base was
    loaded from differs between machines)."""
    return Path(str(spec).rstrip("/")).name.lower()


def _check_declared(path: Path, declared, base: BaseWeights) -> None:
    """Warn (once) when the adapter declares another base than the one it is loaded on."""
    if not declared or not base.name or base_name(declared) == base_name(base.name):
        return
    if (str(path), base.name) in _WARNED:
        return
    _WARNED.add((str(path), base.name))

    console.print(f"[yellow]warning: {path}: declares base {declared!r}, loaded on "
                  f"{base.name!r} (the shapes fit; make sure it was trained on this base)"
                  "[/yellow]", soft_wrap=True)  # one line, whatever the terminal's width


def canonical_config(raw: bytes) -> bytes:
    """adapter_config.json as one text: keys sorted, `target_modules` sorted. PEFT keeps the
    target modules in a set, so their order follows the process's hash seed, and two
    identical runs wrote different bytes for the same adapter. Otherwise PEFT's own format
    (indent 2, sorted keys), so an already sorted config keeps its bytes. Unparseable bytes
    are returned as they are (loading refuses them)."""
    try:
        config = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return raw
    if isinstance(config, dict) and isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    return json.dumps(config, indent=2, sort_keys=True).encode()


def write_canonical_config(folder: Path, base: str | None = None) -> None:
    """Rewrite a just-saved adapter's config canonically and, given BASE, declaring it by name
    (PEFT writes the absolute folder the base was loaded from, which differs between
    machines, or nothing for a model built in code)."""
    path = Path(folder) / ADAPTER_CONFIG
    config = json.loads(path.read_bytes())
    if base is not None:
        config["base_model_name_or_path"] = Path(base).name if Path(base).is_dir() else base
    path.write_bytes(canonical_config(json.dumps(config).encode()))
