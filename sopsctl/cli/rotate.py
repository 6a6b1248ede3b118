"""`sopsctl rotate`: a new data key per file, every value re-encrypted, wrapped for the policy's recipients."""

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import FormatOption, PolicyOption, RootOption, err, identity_notes, out, progress_bar
from .rekey import IdentityOption


def rotate_paths(repo, relatives: list[str], *, identity_files: list[Path] | None = None,  # type: ignore[no-untyped-def]
                 output_format: str = "text", policy=None) -> int:
    """Rotate `relatives` (repo-relative); print the report; return the exit code (0, or 3 if any failed).

    `policy` is the repo's loaded policy when the caller has it (loaded here otherwise).
    """
    from .. import ops, rotate
    from ..identities import load_identities

    if policy is None:
        policy = ops.load(repo)
    generated = ops.creation_rules(policy)  # the rules only: nobody reads the .sops.yaml text here
    clan_rules = ops.clan_rules(repo, policy)
    identities = load_identities(os.environ, Path.home(), identity_files or [])
    identity_notes(identities)
    from ..fsutil import repo_lock

    with repo_lock(repo.root):
        report = rotate.run(repo.root, relatives, generated.rules, identities,
                            progress=progress_bar("rotated", 200)(len(relatives)), overrides=clan_rules)
    if output_format == "json":
        out(json.dumps({"rotated": report.rotated,
                        "failed": [{"path": p, "message": m} for p, m in report.failed]}, indent=2) + "\n")
    else:
        out("".join(f"rotated {path}\n" for path in report.rotated))
        out(f"{len(report.rotated)} file(s) rotated, {len(report.failed)} failed\n")
    for path, message in report.failed:
        err(f"sopsctl: error: {path}: {message}")
    return 3 if report.failed else 0


@app.command("rotate")
def rotate_command(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to rotate.")],
    identity: IdentityOption = None,
    root: RootOption = None,
    policy: PolicyOption = None,
    output_format: FormatOption = "text",
) -> None:
    """New data key for each file: every value re-encrypted (same IV), new MAC and lastmodified, wrapped for
    the recipients its rule names (like sops rotate -i). Files that do not verify are refused."""
    from .. import ops

    repo = ops.open_repo(Path.cwd(), root, policy)
    loaded = ops.load(repo)
    relatives = ops.selected_files(repo, loaded, paths)
    code = rotate_paths(repo, relatives, identity_files=identity, output_format=output_format, policy=loaded)
    if code:
        raise typer.Exit(code)
