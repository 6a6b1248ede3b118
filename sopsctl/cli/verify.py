"""`sopsctl verify`: decrypt every value natively and check every MAC, printing verdicts and never a value."""

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import FormatOption, PolicyOption, RootOption, err, identity_notes, out
from .rekey import IdentityOption


def _walk_plain(paths: list[Path]) -> list[tuple[str, Path]]:
    """PATH… outside a repository with a policy: files as given, folders walked (links not followed)."""
    from ..policy import ALWAYS_SKIPPED

    found: list[tuple[str, Path]] = []
    for base in paths:
        if not base.is_dir():
            found.append((str(base), base))  # a missing file becomes an `unreadable` line
            continue
        for directory, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in sorted(filenames):
                full = Path(directory, name)
                if name not in ALWAYS_SKIPPED and not full.is_symlink():
                    found.append((full.as_posix(), full))
    return list(dict.fromkeys(found))


def _files(paths: list[Path] | None, root: Path | None, policy: Path | None) -> list[tuple[str, Path]]:
    """(display path, file): the secrets dirs by default; PATH… through the repo's ignore rules if it has a policy."""
    from .. import ops
    from ..errors import RootNotFoundError

    try:
        repo = ops.open_repo(Path.cwd(), root, policy)
    except RootNotFoundError:
        if not paths:
            raise
        return _walk_plain(paths)
    if paths and not repo.policy_path.exists():
        return _walk_plain(paths)
    relatives = ops.selected_files(repo, ops.load(repo), paths or None)
    return [(relative, repo.root / relative) for relative in relatives]


def _line(path: str, status: str, message: str) -> str:
    return f"{path}: ok\n" if status == "ok" else f"{path}: {status}: {message}\n"


@app.command("verify")
def verify_command(
    paths: Annotated[list[Path] | None,
                     typer.Argument(help="Files or folders (default: settings.secrets_dirs).")] = None,
    identity: IdentityOption = None,
    root: RootOption = None,
    policy: PolicyOption = None,
    output_format: FormatOption = "text",
) -> None:
    """Unwrap each file's data key, decrypt every value with its path and check the MAC; never prints a value."""
    from ..identities import load_identities
    from ..verify import FAILED, verify_paths

    files = _files(paths, root, policy)
    identities = load_identities(os.environ, Path.home(), identity or [])
    identity_notes(identities)
    results = verify_paths(files, identities)
    if output_format == "json":
        out(json.dumps({"files": [{"path": p, "status": r.status, "message": r.message} for p, r in results]},
                       indent=2) + "\n")
    else:
        out("".join(_line(p, r.status, r.message) for p, r in results))
        bad = sum(1 for _, r in results if not r.ok)
        out(f"{len(results) - bad} of {len(results)} file(s) verified, {bad} with problems\n")
    unreadable = [(p, r) for p, r in results if r.status == "unreadable"]
    for path, result in unreadable:
        err(f"sopsctl: error: {path}: {result.message}")
    if not identities:
        problems = "; ".join(identities.errors)
        err(f"sopsctl: error: no age identity could be loaded ({identities.describe()}"
            + (f"; {problems}" if problems else "") + "); pass --identity FILE or set SOPS_AGE_KEY_FILE")
    if unreadable or not identities:
        raise typer.Exit(3)
    if any(r.status in FAILED for _, r in results):
        raise typer.Exit(1)
