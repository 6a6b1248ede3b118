"""`sopsctl import`: turn an existing hand-written `.sops.yaml` into a policy."""

from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import err, out


@app.command("import")
def import_config(
    source: Annotated[Path, typer.Argument(metavar="[.sops.yaml]", help="The .sops.yaml to import.")] = Path(".sops.yaml"),
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the policy here (never overwrites); stdout by default.")] = None,
) -> None:
    """Write a policy that regenerates the same creation rules as an existing .sops.yaml; what was guessed goes to stderr."""
    from ..clan import read_tree
    from ..clanaudit import holders
    from ..fsutil import atomic_write, read_bytes
    from ..importer import import_sops_yaml

    data = read_bytes(source, what=".sops.yaml", limit=16 * 1024 * 1024)
    tree = read_tree(source.resolve().parent, None)  # a clan tree next to the config names its keys
    result = import_sops_yaml(data, str(source), holders(tree) if tree is not None else None)
    if output is None:
        out(result.text)
    else:
        atomic_write(output, result.text.encode(), exclusive=True)
        err(f"sopsctl: wrote {output}")
    for line in result.report:
        err(f"sopsctl: import: {line}")
