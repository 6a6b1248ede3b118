"""Options and helpers every command shares: --root, --policy, --format, and writing output."""

import sys
from pathlib import Path
from typing import Annotated

import typer

from ..errors import SopsctlError

RootOption = Annotated[
    Path | None,
    typer.Option("--root", help="Repository root (default: the nearest directory with .sops.yaml, walking up).",
                 file_okay=False),
]
PolicyOption = Annotated[
    Path | None,
    typer.Option("--policy", help="Policy file or directory (default: <root>/policies)."),
]


def out(text: str) -> None:
    """Write to stdout as given (callers add newlines), so JSON output is never mixed with logs.

    A reader that left (a closed pipe) is the error boundary's to treat as done; any other write
    error (a full disk under `> report.json`) is one clear line and exit 3, not a bug report."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise SopsctlError(f"cannot write the output: {exc.strerror or exc}") from None


def err(text: str) -> None:
    sys.stderr.write(text if text.endswith("\n") else text + "\n")


def identity_notes(identities: object) -> None:
    """One note per identity source that failed while others loaded (with none, the error says it all).

    A malformed `--identity` file must not pass unnoticed because SOPS_AGE_KEY_FILE happened to work.
    """
    if identities:
        for problem in getattr(identities, "errors", ()):
            err(f"sopsctl: note: identity source {problem}")


def choice(allowed: tuple[str, ...]):  # type: ignore[no-untyped-def]
    """A typer callback that accepts only the given words (clear usage error, exit 2, otherwise)."""

    def check(value: str) -> str:
        if value not in allowed:
            raise typer.BadParameter(f"must be one of: {', '.join(allowed)}")
        return value

    return check


FormatOption = Annotated[
    str,
    typer.Option("--format", help="Output format: text or json.", callback=choice(("text", "json"))),
]


def progress_bar(verb: str, minimum: int = 500):  # type: ignore[no-untyped-def]
    """A factory for run_audit/rekey: given the total, a step callback drawing a bar on a terminal.

    Nothing is drawn for short runs or when stderr is not a terminal (CI logs, JSON pipelines).
    """

    def start(total: int):  # type: ignore[no-untyped-def]
        if total < minimum or not sys.stderr.isatty():
            return None
        done = [0]

        def step(count: int) -> None:
            done[0] += count
            width = 30
            filled = width * done[0] // total
            sys.stderr.write(f"\rsopsctl: {verb} [{'#' * filled}{'.' * (width - filled)}] {done[0]}/{total}")
            if done[0] >= total:
                sys.stderr.write("\n")
            sys.stderr.flush()

        return step

    return start
