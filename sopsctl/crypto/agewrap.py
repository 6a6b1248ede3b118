"""Wrap a data key (or share) for one age recipient the way sops stores it in `enc` (pyrage), and unwrap it."""

from __future__ import annotations

import base64
import binascii
import shutil
import sys
from collections.abc import Iterable
from typing import Any

import pyrage

from ..errors import InputError, KeyFormatError, SopsctlError
from . import agekeys, agex25519

HEADER = "-----BEGIN AGE ENCRYPTED FILE-----"
FOOTER = "-----END AGE ENCRYPTED FILE-----"
COLUMNS = 64  # age's armor: 64 base64 characters (48 bytes) per line
_SSH_TYPES = ("ssh-ed25519", "ssh-rsa")  # the ssh recipient types age (and so sops) knows


class PluginMissingError(SopsctlError):
    """A plugin recipient or identity whose age-plugin-NAME binary is not on PATH."""


class ArmorError(InputError):
    """An `enc` value that is not a well-formed ASCII-armored age file."""


class UnwrapError(InputError):
    """An identity matched an `enc` value but the age file is corrupt (tampered or truncated)."""


class PluginCallbacks:
    """What a plugin may ask of sopsctl: messages go to stderr (e.g. "touch your YubiKey"); no prompts.

    sopsctl runs in batches and in CI, so it answers every question with "no answer" rather than
    blocking on a terminal; a plugin that needs a PIN then fails for that entry only.
    """

    def display_message(self, message: str) -> None:
        print(message, file=sys.stderr)

    def confirm(self, message: str, yes_string: str, no_string: str | None) -> bool | None:
        return None

    def request_public_string(self, description: str) -> str | None:
        return None

    def request_passphrase(self, description: str) -> str | None:
        return None


def plugin_binary(name: str) -> str | None:
    """Where age-plugin-NAME is on PATH (rage runs it from there), or None."""
    return shutil.which(f"age-plugin-{name}")


def plugin_missing(name: str, what: str) -> PluginMissingError:
    return PluginMissingError(
        f"{what} needs the age plugin age-plugin-{name}, which is not on PATH; "
        f"install it, or run `sops updatekeys` for this file on a machine that has it"
    )


_PARSED: dict[str, Any] = {}  # X25519 and ssh recipients already parsed: a batch wraps for the same few
_PARSED_MAX = 4096


def _recipient(recipient: str) -> Any:
    """The pyrage recipient for a string as sops stores it in `recipient` (trimmed, comment kept)."""
    parsed = _PARSED.get(recipient)
    if parsed is None:
        parsed = _parse_recipient(recipient)
        if not isinstance(parsed, pyrage.plugin.RecipientPluginV1) and len(_PARSED) < _PARSED_MAX:
            _PARSED[recipient] = parsed  # public keys only: the same string always parses the same
    return parsed


def _parse_recipient(recipient: str) -> Any:
    text = recipient.strip()
    if text.startswith("ssh-"):
        key_type = text.split(None, 1)[0]
        if key_type not in _SSH_TYPES:
            raise KeyFormatError(f"ssh recipient of type {key_type}: age wraps only for ssh-ed25519 and ssh-rsa")
        try:
            return pyrage.ssh.Recipient.from_str(text)
        except pyrage.RecipientError:
            raise KeyFormatError(f"ssh recipient {key_type} …: the key does not parse") from None
    parsed = agekeys.parse_age_recipient(text)  # KeyFormatError with a precise reason
    if parsed.kind is agekeys.RecipientKind.PLUGIN:
        name = parsed.plugin or ""
        if plugin_binary(name) is None:
            raise plugin_missing(name, f"recipient {parsed.recipient[:20]}…")
        plugin_recipient = pyrage.plugin.Recipient.from_str(parsed.recipient)
        return pyrage.plugin.RecipientPluginV1(name, [plugin_recipient], [], PluginCallbacks())
    return pyrage.x25519.Recipient.from_str(parsed.recipient)


def armor(binary: bytes) -> str:
    """age's ASCII armor: header, 64-column padded base64, footer, final newline (as age's armor.Writer)."""
    encoded = base64.b64encode(binary).decode("ascii")
    lines = [encoded[i : i + COLUMNS] for i in range(0, len(encoded), COLUMNS)]
    return "\n".join([HEADER, *lines, FOOTER]) + "\n"


def dearmor(text: str) -> bytes:
    """The binary age file inside an armor, checked as strictly as age's armor reader; ArmorError if not."""
    if not isinstance(text, str):
        raise ArmorError(f"enc must be a string, got {type(text).__name__}")
    # age trims each line, so CRLF and the indentation a YAML block may leave behind are fine.
    lines = [line.strip() for line in text.strip().split("\n")]
    if not lines or lines[0] != HEADER:
        raise ArmorError("enc does not start with -----BEGIN AGE ENCRYPTED FILE-----")
    if len(lines) < 3 or lines[-1] != FOOTER:
        raise ArmorError("enc does not end with -----END AGE ENCRYPTED FILE----- (truncated?)")
    body = lines[1:-1]
    chunks = []
    for number, line in enumerate(body, start=2):
        last = number == len(body) + 1
        if len(line) > COLUMNS or (not last and len(line) != COLUMNS) or not line:
            raise ArmorError(f"enc armor line {number}: not a {COLUMNS}-column base64 line")
        try:
            chunks.append(binascii.a2b_base64(line, strict_mode=True))
        except (binascii.Error, ValueError):
            raise ArmorError(f"enc armor line {number}: invalid base64") from None
    return b"".join(chunks)


def wrap(payload: bytes, recipient: str) -> str:
    """`payload` encrypted to one recipient, armored exactly as sops writes `enc`.

    Recipients: `age1…` (X25519), `ssh-ed25519 …` / `ssh-rsa …` (comment allowed), and plugin
    `age1NAME1…` when age-plugin-NAME is on PATH (PluginMissingError otherwise).
    """
    target = _recipient(recipient)
    try:
        binary = pyrage.encrypt(bytes(payload), [target], armored=False)
    except pyrage.EncryptError as exc:
        # Only plugins fail here (a crash, a refusal); the message is theirs and holds no secret.
        raise SopsctlError(f"age could not wrap for {recipient.strip()[:40]}…: {exc}") from None
    # Armor ourselves rather than trust pyrage's: the layout is then sops's by construction.
    return armor(binary)


def _pyrage_identities(identities: Any) -> list[Any]:
    inner = getattr(identities, "identities", identities)  # an IdentitySet or a plain sequence
    if inner is None:
        return []
    return list(inner) if isinstance(inner, Iterable) else [inner]


def unwrap(enc: str, identities: Any) -> bytes | None:
    """The payload of an `enc` value, or None when none of the identities opens it.

    ArmorError for a malformed armor, UnwrapError when an identity matches but the file is
    corrupt. `identities` is an IdentitySet or a sequence of pyrage identities. An entry for an
    X25519 identity opens natively (agex25519) when that gives age's answer; pyrage decides the rest.
    """
    binary = dearmor(enc)
    candidates = _pyrage_identities(identities)
    if not candidates:
        return None
    opened = agex25519.open_file(binary, candidates)  # the common case, without pyrage's per-call cost
    if opened is not None:
        return opened
    try:
        return pyrage.decrypt(binary, candidates)
    except pyrage.DecryptError as exc:
        reason = str(exc)
        if "No matching keys" in reason:
            return None
        # An identity matched a stanza but the rest failed: a corrupt file, or a plugin that gave up.
        raise UnwrapError(f"enc could not be decrypted: {' '.join(reason.split())}") from None  # age says it in 2 lines
