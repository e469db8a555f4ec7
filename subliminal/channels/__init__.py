"""Channels: what a teacher writes. Each turns a seed into prompts for the teacher.

A channel gives `prompts(n, seed)` -> rows with a `prompt` (chat messages) and `meta`, the
filter rules that apply to its completions, and optionally the characters a format-constrained
decoder may emit.
"""

from __future__ import annotations

from typing import Protocol

from subliminal.errors import SubliminalError


class Channel(Protocol):
    name: str
    # Characters a constrained decoder may emit (None = unconstrained only).
    allowed_chars: str | None
    max_new_tokens: int

    def prompts(self, n: int, seed: int) -> list[dict]: ...


def get_channel(name: str, **options) -> Channel:
    """Build a channel by name; unknown names are a one-line error listing the choices."""
    from subliminal.channels.numbers import NumbersChannel

    channels: dict[str, type] = {"numbers": NumbersChannel}
    try:
        from subliminal.channels.math import MathChannel, MixedChannel

        channels.update(math=MathChannel, mixed=MixedChannel)
    except ImportError:
        pass
    if name not in channels:
        raise SubliminalError(f"unknown channel {name!r}; choose one of: {', '.join(channels)}")
    return channels[name](**options)
