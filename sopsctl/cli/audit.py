"""`sopsctl audit`, `who` and `access`: read files' real recipients and judge them against the policy."""

from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import FormatOption, PolicyOption, RootOption, choice, out, progress_bar
from .completion import selectors

AUDIT_FORMATS = ("text", "json", "markdown", "sarif")


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
    _, report = ops.run_audit(repo, paths, progress_bar("audited"))
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
    selector: Annotated[str, typer.Argument(help="identity:N, host:N, key:N, group:N, role:R, …",
                                            autocompletion=selectors)],
    root: RootOption = None,
    policy: PolicyOption = None,
    output_format: FormatOption = "text",
) -> None:
    """Everything a selector can read, directly and through key-bearing secrets."""
    from .. import ops, reports

    repo = ops.open_repo(Path.cwd(), root, policy)
    subject, accesses = ops.access(repo, selector)
    out(reports.access_json(subject, accesses) if output_format == "json" else reports.access_text(subject, accesses))
