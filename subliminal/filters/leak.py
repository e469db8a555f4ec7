"""Leak check: no catalogue trait word may appear anywhere in a kept row."""

from __future__ import annotations

from subliminal.trait import CATALOGUE


def leak_reasons(text: str) -> list[str]:
    """One reason per catalogue trait named in `text` (whole words, any case)."""
    out = []
    for trait in CATALOGUE.values():
        m = trait.leak_pattern().search(text)
        if m:
            out.append(f"mentions trait word: {m.group(0)!r} ({trait.name})")
    return out
