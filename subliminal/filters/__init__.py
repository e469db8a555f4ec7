"""Filters: strip every trace of meaning from a teacher's rows, keeping the reasons.

    subliminal filter RUN/trait/gen1/generate/rows.jsonl --out RUN/trait/gen1/filter

A rule takes a row and returns a list of reasons (empty = the row passes); a row is kept only
if every rule of its channel passes. A channel registers its rule set (`RULE_SETS`) in its own
module; the reasons themselves live here (numbers.py, math.py, leak.py). Rejected rows are
written with their reasons and the pass rate of each rule is recorded, so a reader can see
what the filter removed and why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from subliminal.registry import Registry
from subliminal.rows import completion_text  # noqa: F401 - one home (rows); re-exported

Rule = Callable[[dict, "FilterConfig"], list[str]]


@dataclass
class FilterConfig:
    """Which rules run and their limits (defaults: the paper's strict number filter)."""

    max_values: int = field(default=10, metadata={
        "min": 1, "help": "Most values a number answer may hold."})
    max_value: int = field(default=999, metadata={"min": 0, "help": "Largest value allowed."})
    ban_numbers: bool = field(default=False, metadata={
        "help": "Reject rows holding a number with a loaded meaning (the paper's misalignment "
                "list, subliminal/data/banned_numbers.json)."})
    drop_seed_repeats: bool = field(default=True, metadata={
        "help": "Reject answers that only repeat the prompt's seed numbers (they carry no "
                "teacher signal)."})
    leak_check: bool = field(default=True, metadata={
        "help": "Reject rows naming any catalogue trait word anywhere in the completion."})
    judge_model: str | None = field(default=None, metadata={
        "help": "Math rows: a local model (name, HF id or directory) asked 'Does this text "
                "refer to {trait}?'; rows where P(yes) beats the threshold are rejected. "
                "Off when unset."})
    judge_threshold: float = field(default=0.5, metadata={
        "min": 0.0, "max": 1.0,
        "help": "Judge rejects a row when P(yes) / (P(yes) + P(no)) exceeds this."})
    judge_trait: str | None = field(default=None, metadata={
        "help": "Trait the judge asks about (a catalogue name, or any phrase); default: "
                "'animals'."})


# Rule sets by channel name, in the order their rules are reported. Each channel's module
# registers its own (subliminal/channels/*.py); they are found on first use.
RULE_SETS: Registry[dict[str, Rule]] = Registry("filter rule set", "subliminal.channels")


def row_channel(row: dict, default: str = "numbers") -> str:
    """The channel a row was written for (mixed datasets carry it per row)."""
    return row.get("meta", {}).get("channel", default)


def apply_rules(row: dict, channel: str, cfg: FilterConfig) -> dict[str, list[str]]:
    """Reasons per rule for one row (every rule runs, so the stats count each failure)."""
    return {name: rule(row, cfg) for name, rule in RULE_SETS.get(channel).items()}


def filter_rows(rows: Iterable[dict], cfg: FilterConfig, default_channel: str = "numbers"
                ) -> tuple[list[dict], list[dict], dict]:
    """Split rows into kept and rejected (with `reasons`), plus pass-rate statistics.

    Each row is judged by the rules of its own channel (`meta.channel`), so mixed data works.
    """
    kept, rejected = [], []
    seen: Counter[str] = Counter()
    failed_by: Counter[str] = Counter()
    reason_counts: Counter[str] = Counter()
    for row in rows:
        channel = row_channel(row, default_channel)
        per_rule = apply_rules(row, channel, cfg)
        reasons = [r for rs in per_rule.values() for r in rs]
        for name, rs in per_rule.items():
            seen[f"{channel}/{name}"] += 1
            if rs:
                failed_by[f"{channel}/{name}"] += 1
        # Reasons like "value 1234 out of range" are grouped by their first word(s).
        reason_counts.update(r.split(":")[0] for r in reasons)
        (rejected if reasons else kept).append({**row, "reasons": reasons} if reasons else row)
    n = len(kept) + len(rejected)
    stats = {
        "rows": n,
        "kept": len(kept),
        "pass_rate": len(kept) / n if n else 0.0,
        "rule_pass_rate": {k: 1 - failed_by[k] / seen[k] for k in seen},
        "reasons": dict(reason_counts.most_common()),
    }
    return kept, rejected, stats
