"""`sopsctl lint`: validate the policy and report every problem with its file:line."""

import json
from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import FormatOption, PolicyOption, RootOption, out


@app.command()
def lint(
    root: RootOption = None,
    policy: PolicyOption = None,
    output_format: FormatOption = "text",
    strict: Annotated[bool, typer.Option("--strict", help="Exit 1 on warnings too.")] = False,
) -> None:
    """Validate the policy: schema, references, keys, empty or unreachable classes, lockout risk."""
    from .. import ops, schemacheck
    from ..errors import PolicyError

    repo = ops.open_repo(Path.cwd(), root, policy)
    # Every schema violation of every file first: the loader stops at the first one in a section.
    checked = schemacheck.check(ops.read_policy_sources(repo))
    try:
        problems = ops.lint(repo)
    except PolicyError as exc:  # lint reports what stops the policy from loading as findings
        problems = exc.problems
    problems = schemacheck.combine(checked, problems)
    if output_format == "json":
        out(json.dumps({"problems": [
            {"code": p.code, "severity": p.severity, "message": p.message,
             "file": p.source.file if p.source else None, "line": p.source.line if p.source else None}
            for p in problems]}, indent=2) + "\n")
    else:
        for problem in problems:
            out(f"{problem}\n")
        errors = sum(p.severity == "error" for p in problems)
        warnings = sum(p.severity == "warning" for p in problems)
        out(f"{errors} error(s), {warnings} warning(s)\n" if problems else "policy ok\n")
    if any(p.severity == "error" or (strict and p.severity == "warning") for p in problems):
        raise typer.Exit(1)
