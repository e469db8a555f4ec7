"""`subliminal scan DATA --reference-rows N`: BASE's own completions to DATA's prompts.

    subliminal scan rows.jsonl --model smollm2-135m --reference-rows 64

Plain BASE (no trait, the template's default system prompt) completes a seeded sample of
DATA's prompts, greedily, format-constrained when DATA is number lists. These rows carry no
trait by construction: the likelihood ranking uses them to calibrate each trait prompt's
baseline effect, and the probe trains its control student on them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from subliminal.channels import get_channel
from subliminal.models import LM
from subliminal.teacher import DecodeConfig, Teacher, generate_rows


@dataclass
class FreeChannel:
    """An unconstrained channel for completions of non-number data."""

    max_new_tokens: int = 64
    name: str = "free"
    allowed_chars: str | None = None


def prompt_of(row: dict) -> list[dict]:
    """The prompt BASE completes (text rows get an empty user turn)."""
    return row["prompt"] or [{"role": "user", "content": ""}]


def base_completions(lm: LM, rows: list[dict], family: str, out_path: Path, seed: int,
                     batch_size: int = 16, label: str = "reference rows") -> tuple[list, bool]:
    """BASE's greedy completion of each row's prompt (resumable); returns (rows, constrained)."""
    if family == "numbers":
        channel, constrained = get_channel("numbers"), True
    else:
        n_tok = max(len(lm.tokenizer(r["completion"][0]["content"])["input_ids"])
                    for r in rows)
        channel, constrained = FreeChannel(max_new_tokens=min(256, max(16, n_tok))), False
    prompts = [{"id": r["id"], "prompt": prompt_of(r), "meta": {}} for r in rows]
    cfg = DecodeConfig(decoding="greedy", constrained=constrained, batch_size=batch_size)
    return generate_rows(Teacher(lm, None), prompts, cfg, channel, Path(out_path), seed,
                         label=label), constrained


def sample(rows: list[dict], k: int, seed: int) -> list[dict]:
    return rows if len(rows) <= k else random.Random(seed).sample(rows, k)
