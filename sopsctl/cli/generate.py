"""`sopsctl generate`: write `.sops.yaml` from the policy, or check that it is current."""

from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import PolicyOption, RootOption, err, out


@app.command()
def generate(
    output: Annotated[str | None, typer.Option("--output", "-o", help="Write here instead of <root>/.sops.yaml; '-' for stdout.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Change nothing; exit 1 and show a diff if .sops.yaml is stale.")] = False,
    root: RootOption = None,
    policy: PolicyOption = None,
) -> None:
    """Generate .sops.yaml (creation rules and key groups) from the policy."""
    from .. import ops

    repo = ops.open_repo(Path.cwd(), root, policy)
    loaded = ops.load(repo)
    text, generated = ops.generated_config(repo, loaded)
    for problem in generated.problems:  # warnings only: errors stopped generation above
        err(f"sopsctl: {problem}")
    if check:
        result = ops.check_config(repo, text)
        if result.up_to_date:
            err(f"sopsctl: {repo.display(repo.config_path)} is up to date")
            return
        out(result.diff)
        if repo.config_path.exists():  # say what the regeneration would do to who can read what
            from .diff import access_text

            out("\naccess changes:\n" + access_text(*ops.diff(repo)))
        err(f"sopsctl: {repo.display(repo.config_path)} is stale; run `sopsctl generate` to update it")
        raise typer.Exit(1)
    if output == "-":
        out(text)
        return
    from ..fsutil import repo_lock

    with repo_lock(repo.root):
        target = ops.write_config(repo, text, Path(output) if output else None)
    err(f"sopsctl: wrote {repo.display(target)} ({len(generated.rules)} creation rules)")
