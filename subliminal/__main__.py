"""`python -m subliminal` runs the CLI."""

from subliminal.cli import run

run()
