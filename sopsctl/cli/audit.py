"""`sopsctl audit`, `who` and `access`: read files' real recipients and judge them against the policy."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import FormatOption, PolicyOption, RootOption, choice, out

AUDIT_FORMATS = ("text", "json", "markdown", "sarif")


def _progress(total: int):  # type: ignore[no-untyped-def]  # called by run_audit once it knows the total
    """A progress bar on a terminal for long runs; nothing otherwise (JSON must stay clean)."""
    if total < 500 or not sys.stderr.isatty():
        return None
    done = [0]

    def step(count: int) -> None:
        done[0] += count
        sys.stderr.write(f"\rsopsctl: audited {done[0]}/{total} files")
        if done[0] >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return step


@app.command()
def audit(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files or folders (default: settings.secrets_dirs).")] = None,
    root: RootOption = None,
    policy: PolicyOption = None,
    output_format: Annotated[str, typer.Option("--format", help="text, json, markdown or sarif.",
                                               callback=choice(AUDIT_FORMATS))] = "text",
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 on warnings too.")] = False,
) -> None:
    """Audit every secrets file: its real recipients against what the policy grants."""
    from .. import ops, reports

    repo = ops.open_repo(Path.cwd(), root, policy)
    _, report = ops.run_audit(repo, paths, _progress)
    if output_format == "json":
        out(reports.audit_json(report))
    elif output_format in ("markdown", "sarif"):
        from .. import render

        out(render.audit_markdown(report) if output_format == "markdown" else render.audit_sarif(report))
    else:
        out(reports.audit_text(report))
    if report.errors or (strict and report.warnings):
        raise typer.Exit(1)


@app.command()
def who(
    path: Annotated[Path, typer.Argument(help="A secrets file (it need not exist yet).")],
    root: RootOption = None,
    policy: PolicyOption = None,
    output_format: FormatOption = "text",
) -> None:
    """Who can read this file: per subject, alone or only together (Shamir)."""
    from .. import ops, reports

    repo = ops.open_repo(Path.cwd(), root, policy)
    out(reports.who_json(ops.who(repo, path)) if output_format == "json" else reports.who_text(ops.who(repo, path)))


@app.command()
def access(
    selector: Annotated[str, typer.Argument(help="identity:N, host:N, key:N, group:N, role:R, …")],
    root: RootOption = None,
    policy: PolicyOption = None,
    output_format: FormatOption = "text",
) -> None:
    """Everything a selector can read, directly and through key-bearing secrets."""
    from .. import ops, reports

    repo = ops.open_repo(Path.cwd(), root, policy)
    subject, accesses = ops.access(repo, selector)
    out(reports.access_json(subject, accesses) if output_format == "json" else reports.access_text(subject, accesses))
