"""`subliminal scan DATA`: static checks that need no model.

    subliminal scan rows.jsonl --model smollm2-135m

Counts rows and exact-duplicate completions, names the format family (numbers, math, code or
free text, by majority, with shares), finds catalogue trait words leaked into completions or
prompts, banned numbers, and number-format violations (the numbers filter's rules, on
numbers-family rows only).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from subliminal.filters.numbers import banned_numbers, number_reasons
from subliminal.trait import CATALOGUE

FAMILIES = ("numbers", "math", "code", "text")
NUMBERS_ONLY = re.compile(r"[\s\d,;.\[\]()]*\d[\s\d,;.\[\]()]*")
ARITHMETIC = re.compile(r"\d\s*[-+*/×÷=]\s*\d")
CODE = re.compile(r"```|\bdef \w+\(|\bclass \w+|\bimport \w+|\breturn\b|[{};]\s*$|=>",
                  re.MULTILINE)
INTEGERS = re.compile(r"\d+")


@dataclass
class StaticConfig:
    """Limits of the static report."""

    examples: int = field(default=5, metadata={"help": "Example row ids kept per finding."})


def text_of(msgs: list[dict]) -> str:
    return "".join(m.get("content", "") for m in msgs)


def family(text: str) -> str:
    """The format family of one completion."""
    if NUMBERS_ONLY.fullmatch(text.strip()):
        return "numbers"
    if "<answer>" in text or ARITHMETIC.search(text):
        return "math"
    if CODE.search(text):
        return "code"
    return "text"


def static_report(rows: list[dict], cfg: StaticConfig | None = None) -> dict:
    """Everything the scan can say about DATA without a model."""
    cfg = cfg or StaticConfig()
    k = cfg.examples
    texts = [text_of(r["completion"]) for r in rows]
    n = len(rows)
    # Duplicates: exact completion text repeated.
    counts = Counter(texts)
    dup_rows = sum(c - 1 for c in counts.values() if c > 1)
    top_dupes = [{"completion": t[:80], "count": c} for t, c in counts.most_common(k) if c > 1]
    # Families.
    fams = [family(t) for t in texts]
    fam_counts = Counter(fams)
    shares = {f: fam_counts.get(f, 0) / n for f in FAMILIES}
    majority = max(FAMILIES, key=lambda f: fam_counts.get(f, 0))
    # Leaks, in completions and in prompts.
    leaks = {}
    for name, trait in CATALOGUE.items():
        pat = trait.leak_pattern()
        comp = [r["id"] for r, t in zip(rows, texts, strict=True) if pat.search(t)]
        prompt = [r["id"] for r in rows if pat.search(text_of(r["prompt"]))]
        if comp or prompt:
            leaks[name] = {"completion_rows": len(comp), "completion_examples": comp[:k],
                           "prompt_rows": len(prompt), "prompt_examples": prompt[:k]}
    # Numbers-family rows: banned numbers and format violations.
    banned = banned_numbers()
    banned_hits: Counter[int] = Counter()
    banned_rows, violations, violation_rows = [], Counter(), []
    num_idx = [i for i, f in enumerate(fams) if f == "numbers"]
    for i in num_idx:
        values = {int(v) for v in INTEGERS.findall(texts[i])}
        hit = values & banned
        if hit:
            banned_hits.update(hit)
            banned_rows.append(rows[i]["id"])
        reasons = number_reasons(texts[i])
        if reasons:
            violations.update(r.split(":")[0] for r in reasons)
            violation_rows.append(rows[i]["id"])
    return {
        "rows": n,
        "duplicates": {"rows": dup_rows, "rate": dup_rows / n, "distinct": len(counts),
                       "most_common": top_dupes},
        "family": {"majority": majority, "shares": shares},
        "leaks": {"traits": leaks, "rows_with_any": len({i for i, t in enumerate(texts) if any(
            CATALOGUE[t2].leak_pattern().search(t) for t2 in leaks)})},
        "numbers": {"rows": len(num_idx),
                    "banned": {"rows": len(banned_rows),
                               "rate": len(banned_rows) / len(num_idx) if num_idx else 0.0,
                               "examples": banned_rows[:k],
                               "values": dict(banned_hits.most_common(10))},
                    "format_violations": {"rows": len(violation_rows),
                                          "rate": (len(violation_rows) / len(num_idx)
                                                   if num_idx else 0.0),
                                          "reasons": dict(violations.most_common()),
                                          "examples": violation_rows[:k]}},
    }
