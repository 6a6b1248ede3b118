"""`sopsctl diff`: who gains and who loses which files between two policies or two .sops.yaml files."""

import json
from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import FormatOption, PolicyOption, RootOption, out


@app.command()
def diff(
    against: Annotated[str | None, typer.Option(
        "--against", help="A git revision (the policy as committed there), or a policy / .sops.yaml FILE. "
                          "Default: the .sops.yaml on disk.")] = None,
    exit_code: Annotated[bool, typer.Option("--exit-code", help="Exit 1 when access changes.")] = False,
    root: RootOption = None,
    policy: PolicyOption = None,
    output_format: FormatOption = "text",
) -> None:
    """Access changes from --against to the current policy, on the real secrets tree."""
    from .. import ops
    from ..changes import by_subject

    repo = ops.open_repo(Path.cwd(), root, policy)
    changes, added, removed = ops.diff(repo, against)
    if output_format == "json":
        out(json.dumps({
            "files": [{"path": c.path, "gained": list(c.gained), "lost": list(c.lost), "uncovered": c.uncovered,
                       "groups_changed": c.groups_changed} for c in changes],
            "subjects": [{"subject": s.subject, "gains": list(s.gains), "loses": list(s.loses)}
                         for s in by_subject(changes)],
            "keys_added": added, "keys_removed": removed}, indent=2) + "\n")
    else:
        out(access_text(changes, added, removed))
    if exit_code and (changes or added or removed):
        raise typer.Exit(1)


def access_text(changes, added, removed) -> str:  # type: ignore[no-untyped-def]
    from ..changes import by_subject, describe

    lines = []
    for change in by_subject(changes):
        if change.gains:
            lines.append(f"{change.subject} gains {', '.join(change.gains)}")
        if change.loses:
            lines.append(f"{change.subject} loses {', '.join(change.loses)}")
    lines += [f"key appears: {s}" for s in added] + [f"key disappears: {s}" for s in removed]
    if not lines:
        return "no access changes\n"
    detail = describe(changes)
    return "\n".join(lines) + ("\n\nper file:\n" + "\n".join(f"  {d}" for d in detail) if detail else "") + "\n"
