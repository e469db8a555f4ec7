"""Channels: what a teacher writes. Each turns a seed into prompts for the teacher.

    subliminal chain --channel numbers      # or math, mixed (subliminal channels are listed)

A channel is a dataclass registered with `@CHANNELS.register(NAME)` in its own module of this
package (found on first use: adding a channel is adding a module). It gives
`prompts(n, seed)` -> rows with a `prompt` (chat messages) and `meta`, `max_new_tokens`, and
optionally the characters a format-constrained decoder may emit (`allowed_chars`); its module
also registers the filter rules its completions must pass (`subliminal.filters.RULE_SETS`).
Its options are its dataclass fields: `get_channel` passes each channel the options it
declares, so the chain never branches on the channel.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from subliminal.registry import Registry


class Channel(Protocol):
    name: str
    # Characters a constrained decoder may emit (None = unconstrained only).
    allowed_chars: str | None
    max_new_tokens: int

    def prompts(self, n: int, seed: int) -> list[dict]: ...


CHANNELS: Registry[type] = Registry("channel", __name__)


def get_channel(name: str, **options) -> Channel:
    """Build a channel by name with the options it declares (others are ignored); unknown
    names are a one-line error listing the choices."""
    cls = CHANNELS.get(name)
    own = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{k: v for k, v in options.items() if k in own})


def channel_names() -> list[str]:
    return CHANNELS.names()
