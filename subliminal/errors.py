"""The one exception type the CLI turns into a one-line message (no traceback), and the one
place that turns it into that line, for the `subliminal` command and the pipelines/ scripts
alike."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import NoReturn


class SubliminalError(Exception):
    """A problem with the user's input or run directory, worded for the user."""


def fail(message: str) -> NoReturn:
    """Bad input: one line on stderr saying what and where, exit code 2; nothing written."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def run_script(main: Callable[[], None]) -> None:
    """A pipelines/ script's entry point: its SubliminalError (a missing or corrupt record, a
    recipe the study does not have) ends it as `subliminal` ends a command, one line and exit
    code 2; any other exception is a bug and keeps its traceback."""
    try:
        main()
    except SubliminalError as e:
        fail(str(e))
