"""age recipients and identities: checking, generating, and converting ssh-ed25519 keys to age (pure)."""

from __future__ import annotations

import binascii
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from ..errors import KeyFormatError
from . import bech32

RECIPIENT_HRP = "age"
IDENTITY_HRP = "AGE-SECRET-KEY-"  # upper case: bech32.encode then upper-cases the whole identity
SSH_ED25519 = "ssh-ed25519"
X25519_KEY_LENGTH = 32

# Curve25519 / edwards25519 constants (RFC 7748, RFC 8032).
_P = 2**255 - 19
_D = -121665 * pow(121666, -1, _P) % _P

# age's own rule for plugin names (plugin/client.go validPluginName); bech32 input is lower-cased first.
_PLUGIN_NAME = re.compile(r"[a-z0-9+\-._]+")
_SSH_KEY_TYPE = re.compile(r"(ssh|ecdsa|sk)-[A-Za-z0-9@.\-]+")
_SHOWN_MAX = 100


class RecipientKind(StrEnum):
    X25519 = "x25519"  # native age1…: sopsctl can wrap data keys for it
    PLUGIN = "plugin"  # age1<name>1…: only the age-plugin-<name> binary can wrap for it


@dataclass(frozen=True)
class AgeRecipient:
    """A checked age recipient: the normalized string, its kind, and the plugin name for plugin recipients."""

    recipient: str
    kind: RecipientKind
    plugin: str | None = None


@dataclass(frozen=True)
class SshPublicKey:
    """A checked ssh-ed25519 public key: `key` is the form sops stores verbatim (no comment)."""

    key: str
    comment: str
    raw: bytes


def _looks_secret(text: str) -> bool:
    upper = text.lstrip().upper()
    return upper.startswith(("AGE-SECRET-KEY-", "AGE-PLUGIN-")) or "PRIVATE KEY" in upper


def _shown(text: str) -> str:
    """The input as an error message may quote it: never a secret, never a screenful."""
    if _looks_secret(text):
        return "(a secret key, not shown)"
    text = text.strip()
    return repr(text if len(text) <= _SHOWN_MAX else text[: _SHOWN_MAX - 1] + "…")


def _shown_ssh(line: str) -> str:
    """An ssh key line shortened to what identifies it: type, the ends of the base64, the comment."""
    fields = line.split(None, 2)
    if len(fields) >= 2 and len(fields[1]) > 24:
        fields[1] = f"{fields[1][:12]}…{fields[1][-8:]}"
    return _shown(" ".join(fields))


# --- age recipients -------------------------------------------------------------------------


def parse_age_recipient(text: str) -> AgeRecipient:
    """Check an age recipient (checksum, HRP, length) and say which kind it is; KeyFormatError if bad.

    Surrounding whitespace is dropped and an all upper-case string is lower-cased (bech32 is
    case-insensitive; sops and age accept only the lower-case form, which is what this returns).
    """
    if not isinstance(text, str):
        raise KeyFormatError(f"age recipient must be a string, got {type(text).__name__}")
    candidate = text.strip()
    if not candidate:
        raise KeyFormatError("empty age recipient")
    if candidate.upper() == candidate:
        candidate = candidate.lower()

    def fail(reason: str) -> KeyFormatError:
        return KeyFormatError(f"age recipient {_shown(text)}: {reason}")

    if candidate.startswith(("age-secret-key-", "age-plugin-")):
        raise fail("this is a secret identity, not a recipient; use its '# public key:' line "
                   "(age-keygen -y prints it) and keep the secret out of the policy")
    if candidate.startswith("ssh-"):
        raise fail("this is an ssh public key, not an age recipient; give it as an ssh key "
                   "(its age form is derived) or convert it with `sopsctl keys from-ssh`")
    try:
        hrp, payload = bech32.decode(candidate)
    except KeyFormatError as exc:
        raise fail(str(exc)) from None
    if hrp == RECIPIENT_HRP:
        if len(payload) != X25519_KEY_LENGTH:
            raise fail(f"decodes to {len(payload)} bytes, an X25519 recipient has {X25519_KEY_LENGTH} "
                       "(truncated or padded copy?)")
        return AgeRecipient(candidate, RecipientKind.X25519)
    if hrp.startswith(RECIPIENT_HRP + "1"):
        plugin = hrp[len(RECIPIENT_HRP) + 1 :]
        if not _PLUGIN_NAME.fullmatch(plugin):
            raise fail(f"plugin recipient with an invalid plugin name {plugin!r}")
        return AgeRecipient(candidate, RecipientKind.PLUGIN, plugin)
    raise fail(f"wrong prefix {hrp!r}: an age recipient starts with 'age1'")


def validate_age_recipient(text: str) -> str:
    """The normalized recipient (x25519 or plugin), or KeyFormatError saying what is wrong."""
    return parse_age_recipient(text).recipient


def recipient_kind(text: str) -> RecipientKind:
    """x25519 or plugin, after the same checks as validate_age_recipient."""
    return parse_age_recipient(text).kind


# --- age identities -------------------------------------------------------------------------


def identity_scalar(identity: str) -> bytes:
    """The 32 secret bytes of an AGE-SECRET-KEY-1… string; errors never quote the secret."""
    if not isinstance(identity, str):
        raise KeyFormatError(f"age identity must be a string, got {type(identity).__name__}")
    candidate = identity.strip()
    if candidate.upper().startswith("AGE-PLUGIN-"):
        raise KeyFormatError("age identity: a plugin identity; only its plugin knows its recipient")
    if not candidate.upper().startswith(IDENTITY_HRP + "1"):
        raise KeyFormatError("age identity: must start with AGE-SECRET-KEY-1")
    try:
        hrp, scalar = bech32.decode(candidate)
    except KeyFormatError as exc:
        raise KeyFormatError(f"age identity (not shown): {exc}") from None
    if hrp != IDENTITY_HRP.lower():
        raise KeyFormatError("age identity: must start with AGE-SECRET-KEY-1")
    if len(scalar) != X25519_KEY_LENGTH:
        raise KeyFormatError(
            f"age identity (not shown): decodes to {len(scalar)} bytes, expected {X25519_KEY_LENGTH}"
        )
    return scalar


def identity_to_recipient(identity: str) -> str:
    """The age1… recipient of an AGE-SECRET-KEY-1… identity (clamped or not, as age-keygen -y)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    # X25519 clamps the scalar itself, so ssh-to-age's unclamped identities give the right key.
    private = X25519PrivateKey.from_private_bytes(identity_scalar(identity))
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return bech32.encode(RECIPIENT_HRP, public)


def generate_identity() -> tuple[str, str]:
    """A new (AGE-SECRET-KEY-1…, age1…) pair: 32 random bytes, unclamped, like age-keygen."""
    secret = bech32.encode(IDENTITY_HRP, secrets.token_bytes(X25519_KEY_LENGTH))
    return secret, identity_to_recipient(secret)


def format_identity_file(secret: str, recipient: str, created: datetime) -> str:
    """The age-keygen file layout: `# created:` (RFC 3339), `# public key:`, then the secret line."""
    if created.tzinfo is None:
        raise ValueError("created must carry a time zone (RFC 3339 needs an offset)")
    stamp = created.isoformat(timespec="seconds")
    if stamp.endswith("+00:00"):  # Go's RFC3339 layout writes UTC as Z
        stamp = stamp[: -len("+00:00")] + "Z"
    return f"# created: {stamp}\n# public key: {recipient}\n{secret}\n"


# --- ssh-ed25519 → age ----------------------------------------------------------------------


def _edwards_y(raw: bytes, shown: str) -> int:
    """y of an Ed25519 public point after checking that it decompresses, as ssh-to-age requires."""
    if len(raw) != 32:
        raise KeyFormatError(f"ssh public key {shown}: the ed25519 point is {len(raw)} bytes, expected 32")
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)  # bit 255 is the sign of x
    if y >= _P:
        raise KeyFormatError(f"ssh public key {shown}: not a canonical ed25519 point (y ≥ 2^255−19)")
    y_squared = y * y % _P
    x_squared = (y_squared - 1) * pow(_D * y_squared + 1, -1, _P) % _P
    if x_squared == 0:
        # y = ±1: the neutral element or the point of order 2, whose Montgomery form is useless.
        raise KeyFormatError(f"ssh public key {shown}: a degenerate ed25519 point (x = 0), not a real key")
    if pow(x_squared, (_P - 1) // 2, _P) != 1:
        raise KeyFormatError(
            f"ssh public key {shown}: not a point on the ed25519 curve (corrupted or edited key)"
        )
    return y


def _read_ssh_string(blob: bytes, offset: int, shown: str) -> tuple[bytes, int]:
    if offset + 4 > len(blob):
        raise KeyFormatError(f"ssh public key {shown}: the key blob is truncated")
    length = int.from_bytes(blob[offset : offset + 4], "big")
    end = offset + 4 + length
    if end > len(blob):
        raise KeyFormatError(f"ssh public key {shown}: the key blob is truncated")
    return blob[offset + 4 : end], end


def parse_ssh_public_key(text: str) -> SshPublicKey:
    """Check one `ssh-ed25519 AAAA… [comment]` line: type, base64, wire blob, point on the curve.

    A known_hosts / ssh-keyscan line (`host ssh-ed25519 AAAA…`) is accepted too: the host
    field is dropped. Blank and `#` lines around the key are ignored.
    """
    if not isinstance(text, str):
        raise KeyFormatError(f"ssh public key must be a string, got {type(text).__name__}")
    if "PRIVATE KEY" in text:
        raise KeyFormatError("ssh public key: this is a private key; give its public half "
                             "(the .pub file, or `ssh-keygen -y -f KEY`)")
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not lines:
        raise KeyFormatError("ssh public key: empty")
    if len(lines) > 1:
        raise KeyFormatError(f"ssh public key: expected one key line, found {len(lines)}")
    line = lines[0]
    shown = _shown_ssh(line)
    fields = line.split(None, 2)
    if len(fields) >= 3 and not _SSH_KEY_TYPE.fullmatch(fields[0]) and _SSH_KEY_TYPE.fullmatch(fields[1]):
        line = line.split(None, 1)[1]  # known_hosts form: the first field names hosts
        fields = line.split(None, 2)
    key_type = fields[0]
    if key_type != SSH_ED25519:
        if _SSH_KEY_TYPE.fullmatch(key_type):
            raise KeyFormatError(
                f"ssh public key {shown}: key type {key_type}; only ssh-ed25519 host keys convert to age "
                "(use the ed25519 one, e.g. /etc/ssh/ssh_host_ed25519_key.pub)"
            )
        raise KeyFormatError(f"ssh public key {shown}: must start with a key type such as ssh-ed25519")
    if len(fields) < 2:
        raise KeyFormatError(f"ssh public key {shown}: the base64 key after ssh-ed25519 is missing")
    encoded = fields[1]
    try:
        blob = binascii.a2b_base64(encoded, strict_mode=True)
    except (binascii.Error, ValueError):
        raise KeyFormatError(f"ssh public key {shown}: the key is not valid base64 (truncated or edited?)") from None
    name, offset = _read_ssh_string(blob, 0, shown)
    if name != SSH_ED25519.encode():
        raise KeyFormatError(
            f"ssh public key {shown}: the key data is a {name.decode('ascii', 'replace')!r} key, "
            "not ssh-ed25519 (the type and the base64 do not belong together)"
        )
    raw, offset = _read_ssh_string(blob, offset, shown)
    if offset != len(blob):
        raise KeyFormatError(f"ssh public key {shown}: extra bytes after the ed25519 point")
    _edwards_y(raw, shown)
    comment = fields[2].strip() if len(fields) > 2 else ""
    return SshPublicKey(key=f"{SSH_ED25519} {encoded}", comment=comment, raw=raw)


def ssh_to_age_recipient(key: SshPublicKey | str) -> str:
    """The age1… recipient of an ssh-ed25519 public key, byte-identical to ssh-to-age."""
    parsed = parse_ssh_public_key(key) if isinstance(key, str) else key
    y = _edwards_y(parsed.raw, _shown_ssh(parsed.key))
    # Birational map edwards25519 → Curve25519: u = (1 + y) / (1 − y).
    u = (1 + y) * pow(1 - y, -1, _P) % _P
    return bech32.encode(RECIPIENT_HRP, u.to_bytes(32, "little"))


def ssh_private_to_age_identity(pem: bytes | str) -> str:
    """The AGE-SECRET-KEY-1… identity of an unencrypted ed25519 ssh private key, as ssh-to-age writes it.

    The scalar is the first half of SHA-512(seed), left unclamped (X25519 clamps on use), so the
    string is byte-identical to ssh-to-age's. Errors never quote the key.
    """
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    data = pem.encode() if isinstance(pem, str) else pem
    stripped = data.strip()
    if not stripped:
        raise KeyFormatError("ssh private key: empty")
    if stripped.startswith(b"ssh-") or b"PRIVATE KEY-----" not in stripped:
        raise KeyFormatError(
            "ssh private key: not a private key (it must begin with -----BEGIN OPENSSH PRIVATE KEY-----; "
            "a .pub file holds the public half)"
        )
    try:
        if b"BEGIN OPENSSH PRIVATE KEY" in stripped:
            key = serialization.load_ssh_private_key(data, password=None)
        else:  # PKCS#8 PEM, e.g. from `openssl genpkey -algorithm ed25519`
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        # cryptography's way of saying "encrypted, and no password given"
        raise KeyFormatError(
            "ssh private key: passphrase-protected; convert a decrypted copy "
            "(ssh-keygen -p -N '' -f COPY) and delete the copy afterwards"
        ) from None
    except UnsupportedAlgorithm:
        raise KeyFormatError(
            "ssh private key: a key type or cipher that cannot be read; only ed25519 keys convert to age"
        ) from None
    except ValueError:
        raise KeyFormatError("ssh private key: malformed or corrupted (cannot be parsed)") from None
    if not isinstance(key, Ed25519PrivateKey):
        from cryptography.hazmat.primitives.asymmetric import dsa, ec, rsa

        kinds = {rsa.RSAPrivateKey: "ssh-rsa", ec.EllipticCurvePrivateKey: "ecdsa", dsa.DSAPrivateKey: "ssh-dss"}
        kind = next((name for cls, name in kinds.items() if isinstance(key, cls)), type(key).__name__)
        raise KeyFormatError(f"ssh private key: key type {kind}; only ed25519 keys convert to age")
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    scalar = hashlib.sha512(seed).digest()[:32]
    return bech32.encode(IDENTITY_HRP, scalar)
