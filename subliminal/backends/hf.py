"""The `hf` backend: transformers' `generate` on the loaded teacher (the default).

    subliminal generate --backend hf --trait owl --out gen/

The teacher is the base with its adapter merged and its steering hooks attached
(`subliminal.injections.load_teacher`); batches are left-padded, decoded with a KV cache, and
the format constraint runs as a Python logits processor (`subliminal.teacher`).
"""

from __future__ import annotations

from pathlib import Path

from subliminal.backends import register
from subliminal.injections import load_teacher
from subliminal.teacher import Teacher


@register("hf")
class HFBackend:
    """Every teacher, every decoding: the reference the other backends are checked against."""

    @staticmethod
    def missing() -> str | None:
        return None

    @staticmethod
    def check(decode) -> None:
        """Any decoding works."""

    @staticmethod
    def check_teacher(model: str, spec, run_dir: Path | None) -> None:
        """Any teacher works (adapters are merged, steering hooks attached)."""

    @staticmethod
    def load(model: str, spec, run_dir: Path | None, device: str | None):
        return Teacher(load_teacher(model, spec, run_dir, device), spec.system_prompt)
