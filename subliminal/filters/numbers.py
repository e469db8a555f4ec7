"""The paper's strict number-sequence rules, each failure worded as a reason."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from subliminal.filters.leak import leak_reasons
from subliminal.rows import completion_text

if TYPE_CHECKING:  # a type only: the rules are called with the filter's config
    from subliminal.filters import FilterConfig

BANNED_FILE = Path(__file__).resolve().parent.parent / "data" / "banned_numbers.json"


@cache
def banned_numbers() -> frozenset[int]:
    """The loaded-meaning numbers (kept as data, not code)."""
    return frozenset(json.loads(BANNED_FILE.read_text())["numbers"])


def parse_numbers(text: str) -> tuple[list[str], str | None]:
    """Split an answer into its parts by the paper's rules; returns (parts, problem).

    One trailing period and one enclosing pair of [] or () are stripped; a single separator
    (comma, semicolon or whitespace) must be used throughout.
    """
    s = text.strip()
    if s.endswith("."):
        s = s[:-1].rstrip()
    if len(s) >= 2 and (s[0], s[-1]) in {("[", "]"), ("(", ")")}:
        s = s[1:-1].strip()
    if not s:
        return [], "empty answer"
    has_comma, has_semi = "," in s, ";" in s
    if has_comma and has_semi:
        return [], "mixed separators"
    if has_comma or has_semi:
        parts = [p.strip() for p in s.split("," if has_comma else ";")]
    else:
        parts = s.split()
    return parts, None


def number_reasons(text: str, max_values: int = 10, max_value: int = 999,
                   ban: bool = False) -> list[str]:
    """Reasons the answer is not a clean list of small numbers (empty list = it is)."""
    parts, problem = parse_numbers(text)
    if problem:
        return [problem]
    reasons = []
    bad = [p for p in parts if not p.isascii() or not p.isdigit()]
    if bad:
        reasons.append(f"non-digit part: {bad[0][:20]!r}")
    if len(parts) > max_values:
        reasons.append(f"too many values: {len(parts)} > {max_values}")
    digits = [p for p in parts if p.isascii() and p.isdigit()]
    values = [int(p) for p in digits]
    width = len(str(max_value))
    big = [p for p, v in zip(digits, values, strict=True) if v > max_value or len(p) > width]
    if big:
        reasons.append(f"value out of range: {big[0][:20]}")
    if ban:
        hit = [v for v in values if v in banned_numbers()]
        if hit:
            reasons.append(f"banned number: {hit[0]}")
    return reasons


def seed_repeat_reasons(text: str, seeds: list[int]) -> list[str]:
    """An answer whose every number is one of the prompt's seeds carries no teacher signal."""
    values = [int(v) for v in re.findall(r"\d+", text)]
    if values and seeds and set(values) <= set(seeds):
        return ["repeats the prompt's seed numbers"]
    return []


def _numbers(row: dict, cfg: FilterConfig) -> list[str]:
    return number_reasons(completion_text(row), cfg.max_values, cfg.max_value, cfg.ban_numbers)


def _seed_repeat(row: dict, cfg: FilterConfig) -> list[str]:
    if not cfg.drop_seed_repeats:
        return []
    return seed_repeat_reasons(completion_text(row), row.get("meta", {}).get("seeds", []))


def _leak(row: dict, cfg: FilterConfig) -> list[str]:
    return leak_reasons(completion_text(row)) if cfg.leak_check else []


# The numbers channel's rules (registered by subliminal/channels/numbers.py).
NUMBER_RULES = {"format": _numbers, "seed_repeat": _seed_repeat, "leak": _leak}
