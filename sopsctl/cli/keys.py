"""The `keys` command group: convert ssh-ed25519 keys to age, generate age identities."""

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from ..errors import InputError, KeyFormatError, UsageError
from . import app
from .common import err, out

STDIN = "-"

keys_app = typer.Typer(
    name="keys",
    help="age keys: convert ssh-ed25519 keys to age, generate new age identities.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


def _read_input(source: Path | None, *, what: str) -> bytes:
    """The bytes of FILE, or of stdin for `-` or no FILE (a terminal on stdin is a usage error)."""
    if source is not None and str(source) != STDIN:
        from ..fsutil import read_bytes

        return read_bytes(source, what=what, limit=1024 * 1024)
    if source is None and sys.stdin.isatty():
        raise UsageError(f"no FILE given and stdin is a terminal: pass the {what} file, or `-` to paste it")
    return sys.stdin.buffer.read()


def _key_lines(text: str) -> list[tuple[int, str]]:
    """Numbered key lines of a public-key input; blank and `#` lines are not keys."""
    return [(number, line) for number, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.lstrip().startswith("#")]


@keys_app.command("from-ssh")
def from_ssh(
    source: Annotated[Path | None, typer.Argument(
        metavar="[FILE|-]", help="ssh key file; stdin when `-` or absent.", show_default=False)] = None,
    private: Annotated[bool, typer.Option(
        "--private", help="Convert an OpenSSH ed25519 private key to an AGE-SECRET-KEY-1… identity.")] = False,
) -> None:
    """Print the age form of ssh-ed25519 keys, exactly as ssh-to-age does.

    Public keys (one per line, e.g. a .pub or authorized_keys file) give one age1… recipient per line; with --private the key gives an AGE-SECRET-KEY-1… identity.
    """
    data = _read_input(source, what="ssh private key" if private else "ssh public key")
    try:
        _convert(data, private)
    except InputError as exc:  # name the file, as every other input error does
        if source is None or str(source) == STDIN:
            raise
        raise type(exc)(f"{source}: {exc}") from None


def _convert(data: bytes, private: bool) -> None:
    """Print the age form of the ssh key(s) in `data`; InputError (one line) when they do not convert."""
    from ..crypto import agekeys

    if private:
        out(agekeys.ssh_private_to_age_identity(data) + "\n")
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError("ssh public key: not text (is this a binary file?)") from None
    lines = _key_lines(text)
    if not lines:
        raise InputError("ssh public key: the input holds no key line")
    if "PRIVATE KEY-----" in text:
        raise InputError("ssh public key: the input is a private key; add --private to convert it")
    recipients: list[str] = []
    for number, line in lines:
        try:
            recipients.append(agekeys.ssh_to_age_recipient(line))
        except KeyFormatError as exc:
            # All or nothing: a pipeline never gets a partial list.
            raise KeyFormatError(f"line {number}: {exc}" if len(lines) > 1 else str(exc)) from None
    out("".join(f"{recipient}\n" for recipient in recipients))


@keys_app.command("generate")
def generate(
    output: Annotated[Path | None, typer.Option(
        "-o", "--output", help="Write the identity to FILE (mode 0600, never overwritten); default stdout.",
        metavar="FILE", show_default=False)] = None,
) -> None:
    """Make a new age identity in the age-keygen file format."""
    from ..crypto import agekeys
    from ..fsutil import atomic_write

    secret, recipient = agekeys.generate_identity()
    content = agekeys.format_identity_file(secret, recipient, datetime.now().astimezone())
    if output is None or str(output) == STDIN:
        out(content)
        # Like age-keygen: the public key goes to stderr when the secret is not shown on a terminal.
        if not sys.stdout.isatty():
            err(f"Public key: {recipient}")
        return
    atomic_write(output, content.encode(), mode=0o600, exclusive=True)  # its errors are one clear line
    err(f"Public key: {recipient}")
