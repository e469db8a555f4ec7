"""The one exception type the CLI turns into a one-line message (no traceback)."""


class SubliminalError(Exception):
    """A problem with the user's input or run directory, worded for the user."""
