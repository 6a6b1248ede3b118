"""`python -m sopsctl`: the same entry point as the console script."""

from .cli import run

run()
