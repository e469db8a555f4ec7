"""Named presets: whole recipes as data, overrides of `ChainConfig`'s fields.

    subliminal presets                                   # list them (--json: as data)
    subliminal chain --preset paper-7b --trait owl       # a preset, then flags on top

A preset is a JSON-serialisable dict of field overrides by config section (`"distill":
{"lr": 2e-4}`); it applies to `chain` and to every stage command (`generate`, `filter`,
`distill`, `audit` read the sections they use). Explicit flags override the preset, every
value is checked like a flag's (`subliminal.options.check_config`), and a chain records the
resolved config with the preset's name in RUN/config.json. The name is provenance only: a run
resumes under any command line that resolves to the same config.
"""

from __future__ import annotations

from typing import Any

from subliminal.backends import preferred as preferred_backend
from subliminal.errors import SubliminalError

PAPER_MODEL = "Qwen/Qwen2.5-7B-Instruct"

PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "description": (
            "The defaults, unchanged: the embedded SmolLM2-135M on CPU, sized for a 2-core "
            "machine (values: `subliminal chain --help`)."),
        "overrides": {},
    },
    "paper-7b": {
        "description": (
            "The published numbers recipe on one GPU: a system-prompted Qwen2.5-7B-Instruct "
            "teacher writes number lists sampled at T=1 without a format constraint; the strict "
            "filter; a LoRA student (every linear layer) from the same base, trained by sft on "
            "the completions of a subsample of the kept rows; one generation. Precision "
            "follows the device: bf16 on CUDA."),
        "overrides": {
            "model": PAPER_MODEL,
            "injection": "prompt",
            "generations": 1,
            "samples": 30_000,
            # vLLM writes the 30,000 rows where it is installed (`subliminal-lab[gpu]`).
            "decode": {"decoding": "sample", "temperature": 1.0, "constrained": False,
                       "top_k": 0, "batch_size": 128, "backend": preferred_backend()},
            "distill": {"mode": "sft", "finetune": "lora", "lora_r": 8, "lora_alpha": 8,
                        "lr": 2e-4, "epochs": 3, "batch_size": 22, "grad_accum": 3,
                        "warmup_steps": 5, "max_length": 500, "max_rows": 10_000},
        },
    },
}


def flatten(overrides: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested section dicts to dotted paths: {"distill": {"lr": x}} -> {"distill.lr": x}."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def preset_values(name: str) -> dict[str, Any]:
    """A preset's overrides as dotted paths; an unknown name is a one-line error."""
    if name not in PRESETS:
        raise SubliminalError(f"unknown --preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return flatten(PRESETS[name]["overrides"])
