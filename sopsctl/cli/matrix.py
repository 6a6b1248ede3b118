"""`sopsctl matrix`: readers × files, as a text grid, CSV, JSON or one self-contained HTML page."""

from pathlib import Path
from typing import Annotated

import typer

from . import app
from .common import PolicyOption, RootOption, choice, err, out, progress_bar

MATRIX_FORMATS = ("text", "csv", "json", "html")


@app.command()
def matrix(
    output_format: Annotated[str, typer.Option(
        "--format", callback=choice(MATRIX_FORMATS),
        help="text (files as rows), csv (long: path,subject,access), json, or html (one page).")] = "text",
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", metavar="FILE", help="Write to FILE (atomically) instead of stdout; '-' for stdout.")] = None,
    root: RootOption = None,
    policy: PolicyOption = None,
) -> None:
    """Who reads each secrets file: directly, by Shamir share, transitively, or against the policy."""
    from .. import ops, render
    from ..fsutil import atomic_write
    from ..matrix import build_matrix

    repo = ops.open_repo(Path.cwd(), root, policy)
    run = ops.audit_tree(repo, progress=progress_bar("read"))
    result = build_matrix(run.policy, run.report, run.scanned)
    text = render.MATRIX_RENDERERS[output_format](result)
    if output is None or str(output) == "-":
        out(text)
        return
    atomic_write(output, text.encode("utf-8"))
    err(f"sopsctl: wrote {output} ({len(result.subjects)} subjects × {len(result.files)} files)")
