"""Generation backends: the engine that runs a teacher when it writes a channel's rows.

    subliminal generate --backend vllm --trait owl --samples 300 --out gen/
    subliminal chain --backend vllm ...      # `--preset paper-7b` picks vllm when importable

`hf` (the default) runs transformers' `generate` with the format constraint as a Python logits
processor; `vllm` serves the same teacher from vLLM's engine (a LoRA teacher as a LoRA
request, the channel's grammar as a regex the engine enforces, one seed per prompt). Both
write the same rows and the same stage records; docs/gpu.md says what was checked where.

A backend is a class registered with `@register("name")` in a module of this package (found
by listing the package, so a new backend is a new module). It provides:

- `missing() -> str | None`: why it cannot run here (None: it can);
- `check(decode)`: refuse a decoding it cannot do exactly, before any work;
- `check_teacher(model, spec, run_dir)`: refuse a teacher it cannot serve, before any work;
- `load(model, spec, run_dir, device) -> Writer`: a writer (`subliminal.teacher.Teacher` or
  a subclass) whose `complete(prompt_rows, decode, channel, seed)` returns one batch's rows,
  whose `record` describes the writer, and whose `close()` frees its engine.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

from subliminal.errors import SubliminalError
from subliminal.registry import Registry

# Every module of this package that registers a backend is found on first lookup. A backend's
# engine (vllm) is imported only when used, so listing never needs it. The kind reads as the
# flag, so an unknown name is "unknown --backend 'tgi'; choose one of: hf, vllm".
BACKENDS: Registry[type] = Registry("--backend", __name__)


def register(name: str) -> Callable[[type], type]:
    """Decorator: make a backend class available as `--backend NAME`."""
    return BACKENDS.register(name)


def names() -> list[str]:
    return sorted(BACKENDS.names())


def get(name: str) -> type:
    return BACKENDS.get(name)


def check(decode) -> None:
    """The backend of `decode` can run here and decode this way (one line if not)."""
    backend = get(decode.backend)
    reason = backend.missing()
    if reason:
        raise SubliminalError(f"--backend {decode.backend}: {reason}")
    backend.check(decode)


def importable(module: str) -> bool:
    """Whether `module` can be imported here, without importing it."""
    return importlib.util.find_spec(module) is not None


def preferred() -> str:
    """The fastest backend this machine has: vllm when it is importable, else hf."""
    return "vllm" if importable("vllm") else "hf"
