"""`subliminal scan DATA`: BASE's own completions to DATA's prompts, under several decodings.

    subliminal scan rows.jsonl --model smollm2-135m --population-rows 32

A trait-free teacher (plain BASE with the template's default system prompt, or BASE with a
neutral LoRA) completes a seeded sample of DATA's prompts under one decoding (greedy or a
temperature), format-constrained when DATA is number lists. The reference population
(`population.py`) is made of such teachers; their rows carry no trait by construction and span
the decodings a publisher may have used, so DATA's statistics are judged against them
(`null.py`), and DATA's decoding is described by where it sits among BASE's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from subliminal.channels import get_channel
from subliminal.errors import SubliminalError
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


def decode_config(label: str, constrained: bool, batch_size: int = 16) -> DecodeConfig:
    """'greedy' or a sampling temperature ('0.7') as a DecodeConfig."""
    if label == "greedy":
        return DecodeConfig(decoding="greedy", constrained=constrained, batch_size=batch_size)
    try:
        temp = float(label)
    except ValueError:
        raise SubliminalError(f"reference decoding {label!r}: expected 'greedy' or a "
                              "temperature such as 0.7") from None
    if temp <= 0:
        raise SubliminalError(f"reference decoding {label!r}: a temperature must be > 0")
    return DecodeConfig(decoding="sample", temperature=temp, constrained=constrained,
                        batch_size=batch_size)


def base_completions(lm: LM, rows: list[dict], family: str, out_path: Path, seed: int,
                     batch_size: int = 16, label: str = "reference rows",
                     decoding: str = "greedy", teacher: Teacher | None = None
                     ) -> tuple[list, bool]:
    """BASE's (or `teacher`'s) completion of each row's prompt under `decoding` (resumable);
    returns (rows, constrained)."""
    if family == "numbers":
        channel, constrained = get_channel("numbers"), True
    else:
        n_tok = max(len(lm.tokenizer(r["completion"][0]["content"])["input_ids"])
                    for r in rows)
        channel, constrained = FreeChannel(max_new_tokens=min(256, max(16, n_tok))), False
    prompts = [{"id": r["id"], "prompt": prompt_of(r), "meta": {}} for r in rows]
    cfg = decode_config(decoding, constrained, batch_size)
    return generate_rows(teacher or Teacher(lm, None), prompts, cfg, channel, Path(out_path),
                         seed, label=label), constrained


def references(lm: LM, rows: list[dict], family: str, out_dir: Path, k: int, seed: int,
               decodings: list[str]) -> dict[str, list[dict]]:
    """BASE's completions to a seeded sample of `k` of DATA's prompts, per decoding."""
    picked = sample(rows, k, seed)
    return {d: base_completions(lm, picked, family, Path(out_dir) / f"reference_{d}.jsonl",
                                seed, label=f"reference rows ({d})", decoding=d)[0]
            for d in decodings}


def sample(rows: list[dict], k: int, seed: int) -> list[dict]:
    return rows if len(rows) <= k else random.Random(seed).sample(rows, k)
