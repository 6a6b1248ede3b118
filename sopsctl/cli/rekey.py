"""`sopsctl rekey`: natively re-wrap data keys so every file has its rule's key groups and threshold."""

import json
from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import FormatOption, PolicyOption, RootOption, err, identity_notes, out, progress_bar

IdentityOption = Annotated[list[Path] | None, typer.Option(
    "--identity", help="An age identity file or OpenSSH private key, besides the places sops looks (repeatable).")]


def rekey_paths(repo, paths: list[str] | None, *, dry_run: bool = False, jobs: int | None = None,  # type: ignore[no-untyped-def]
                identity_files: list[Path] | None = None, output_format: str = "text") -> int:
    """Re-key `paths` (default: every secrets file); print the report; return the exit code."""
    import os

    from .. import ops, rekey
    from ..identities import load_identities

    policy = ops.load(repo)
    _, generated = ops.generated_config(repo, policy)
    clan_rules = ops.clan_rules(repo, policy)  # clan secrets get the recipients their links grant
    relatives = paths if paths is not None else ops.secrets_files(repo, policy) + sorted(
        p for p, rule in clan_rules.items() if not isinstance(rule, str))
    identities = None if dry_run else load_identities(os.environ, Path.home(), identity_files or [])
    identity_notes(identities)
    from ..fsutil import repo_lock

    with repo_lock(repo.root):
        report = rekey.run(repo.root, relatives, generated.rules, identities, dry_run=dry_run, jobs=jobs,
                           progress=None if dry_run else progress_bar("re-keyed", 200)(len(relatives)),
                           overrides=clan_rules)
    if output_format == "json":
        out(json.dumps({"changed": report.changed, "unchanged": report.unchanged,
                        "failed": [{"path": p, "message": m} for p, m in report.failed]}, indent=2) + "\n")
    else:
        verb = "would re-key" if dry_run else "re-keyed"
        out("".join(f"{verb} {path}\n" for path in report.changed))
        out(f"{len(report.changed)} file(s) {verb}, {len(report.unchanged)} already up to date, "
            f"{len(report.failed)} failed\n")
    for path, message in report.failed:
        err(f"sopsctl: error: {path}: {message}")
    if report.failed:
        return 3
    return 1 if dry_run and report.changed else 0


@app.command("rekey")
def rekey_command(
    paths: Annotated[list[Path] | None, typer.Argument(help="Files or folders (default: settings.secrets_dirs).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would change (no private key needed); "
                                                             "exit 1 if anything would.")] = False,
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1, max=64,
                                             help="Processes re-keying (default: every core).")] = None,
    identity: IdentityOption = None,
    root: RootOption = None,
    policy: PolicyOption = None,
    output_format: FormatOption = "text",
) -> None:
    """Re-key files whose key groups or threshold differ from their rule (like sops updatekeys -y)."""
    from .. import ops

    repo = ops.open_repo(Path.cwd(), root, policy)
    relatives = ops.selected_files(repo, ops.load(repo), paths) if paths else None
    code = rekey_paths(repo, relatives, dry_run=dry_run, jobs=jobs, identity_files=identity,
                       output_format=output_format)
    if code:
        raise typer.Exit(code)
