"""`sopsctl schema`: print the JSON Schema of one policy file (for editors and CI validators)."""

from . import app
from .common import out


@app.command()
def schema() -> None:
    """Print the JSON Schema (draft 2020-12) of a policy file; save it for yaml-language-server."""
    from importlib import resources

    out(resources.files("sopsctl").joinpath("schema/policy.schema.json").read_text(encoding="utf-8"))
