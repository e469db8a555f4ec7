"""Leak check: no trait word may appear anywhere in a kept row.

    subliminal filter RUN/trait/gen1/generate/rows.jsonl --out RUN/trait/gen1/filter

Every trait of every family names the words that would carry it in plain text
(`leak_pattern()`: 'owls', 'malicious', 'joyful', 'utilitarian', 'liar' ...). The filter does
not know which trait a teacher carried, so by default it checks them all: a row that names any
trait is not neutral data.
"""

from __future__ import annotations

from collections.abc import Iterable

from subliminal.trait import TRAITS, get_trait


def leak_reasons(text: str, traits: Iterable | None = None) -> list[str]:
    """One reason per trait named in `text` (whole words, any case). `traits`: names or trait
    objects to check; None checks every trait of every family."""
    pool = TRAITS.values() if traits is None else [
        get_trait(t) if isinstance(t, str) else t for t in traits]
    out = []
    for trait in pool:
        if trait is None:
            continue
        m = trait.leak_pattern().search(text)
        if m:
            out.append(f"mentions trait word: {m.group(0)!r} ({trait.name})")
    return out
