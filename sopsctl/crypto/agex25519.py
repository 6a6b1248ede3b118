"""Open age files addressed to X25519 identities natively (read only); anything unusual is left to pyrage.

Why: opening one sops key entry through pyrage costs about 100 µs, half of it deriving the
identity's public key again (the X25519 key-wrap salt needs it) on every call. Here it is derived
once per identity, and an entry opens in about 50 µs: one X25519 exchange, three HKDFs and two
ChaCha20-Poly1305 opens, all from `cryptography`. This only ever decrypts; every key sopsctl wraps
is still wrapped by pyrage.

The format is age v1 (age-encryption.org/v1, the C2SP age specification). The fast path answers
only when it can answer exactly as age (the Rust crate pyrage wraps) would: a header parsed as
strictly as age parses it, no `scrypt` stanza, a single payload chunk, identities tried in the
caller's order with the stanzas in file order, the header MAC and the payload authenticated. In
every other case, including a stanza that does not open, it returns None and the caller asks
pyrage, which then decides (and words any error) as before.
"""

from __future__ import annotations

import binascii
import hmac
from collections.abc import Sequence
from typing import Any

import pyrage
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import KeyFormatError
from .agekeys import identity_scalar

VERSION_LINE = b"age-encryption.org/v1"
X25519_LABEL = b"age-encryption.org/v1/X25519"
COLUMNS = 64  # a stanza body's base64 lines: full lines of 64 characters, then one shorter (maybe empty)
FILE_KEY_BYTES = 16
PAYLOAD_NONCE_BYTES = 16
CHUNK_BYTES = 64 * 1024  # plaintext per STREAM chunk; the fast path opens files of one partial chunk only
TAG_BYTES = 16
_ZERO_NONCE = bytes(12)
_LAST_CHUNK_NONCE = bytes(11) + b"\x01"  # STREAM: counter 0, last-chunk flag set
_BASE64 = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_VCHAR = frozenset(range(33, 127))  # what a stanza argument may hold (age: 1 or more visible ASCII)


class _Unusual(Exception):
    """Not the plain layout the fast path reads exactly as age: pyrage decides."""


class X25519Opener:
    """One X25519 identity's secret scalar and public key, derived once; repr never shows either."""

    __slots__ = ("_private", "public")

    def __init__(self, private: X25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key().public_bytes_raw()

    def __repr__(self) -> str:
        return "X25519Opener(<secret>)"

    def file_key(self, share: bytes, body: bytes) -> bytes | None:
        """The file key of one X25519 stanza, or None when it is not addressed to this identity.

        _Unusual for a share age refuses outright (a low-order point makes age fail the file)."""
        try:
            shared = self._private.exchange(X25519PublicKey.from_public_bytes(share))
        except ValueError:  # an all-zero shared secret: age returns an error, not "not mine"
            raise _Unusual from None
        wrapping = _hkdf(shared, share + self.public, X25519_LABEL)
        try:
            return ChaCha20Poly1305(wrapping).decrypt(_ZERO_NONCE, body, None)
        except InvalidTag:
            return None


_OPENERS: dict[int, tuple[Any, X25519Opener]] = {}  # id(pyrage identity) -> (that identity, its opener)
_OPENERS_MAX = 1024


def opener(identity: Any) -> X25519Opener | None:
    """The opener of a pyrage X25519 identity (made once, kept while the identity is), None for any other."""
    if not isinstance(identity, pyrage.x25519.Identity):
        return None
    found = _OPENERS.get(id(identity))
    if found is not None and found[0] is identity:  # the identity is held, so its id is not reused
        return found[1]
    try:
        made = X25519Opener(X25519PrivateKey.from_private_bytes(identity_scalar(str(identity))))
    except (KeyFormatError, ValueError):
        return None
    if len(_OPENERS) >= _OPENERS_MAX:
        _OPENERS.clear()
    _OPENERS[id(identity)] = (identity, made)
    return made


def _hkdf(secret: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt, info).derive(secret)


def _raw_base64(text: bytes) -> bytes:
    """age's base64: standard alphabet, no padding, canonical (no stray bits); _Unusual otherwise."""
    if not _BASE64.issuperset(text) or len(text) % 4 == 1:
        raise _Unusual
    decoded = binascii.a2b_base64(text + b"=" * (-len(text) % 4), strict_mode=True)
    if binascii.b2a_base64(decoded, newline=False).rstrip(b"=") != text:
        raise _Unusual  # non-zero trailing bits: age's decoder refuses them
    return decoded


def _parse(binary: bytes) -> tuple[list[tuple[list[bytes], bytes]], bytes, bytes, bytes]:
    """(stanzas as (arguments, body), the header the MAC covers, the MAC, the payload); _Unusual if odd."""
    end = binary.find(b"\n--- ")
    if end < 0 or not binary.startswith(VERSION_LINE + b"\n"):
        raise _Unusual
    mac_end = binary.find(b"\n", end + 5)
    if mac_end < 0:
        raise _Unusual
    header, mac = binary[:end + 4], _raw_base64(binary[end + 5:mac_end])
    lines = binary[len(VERSION_LINE) + 1:end + 1].split(b"\n")[:-1]  # every line after the version one
    stanzas: list[tuple[list[bytes], bytes]] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        if not line.startswith(b"-> "):
            raise _Unusual
        arguments = line[3:].split(b" ")
        if not all(argument and _VCHAR.issuperset(argument) for argument in arguments):
            raise _Unusual
        body = []
        while True:  # full 64-column lines, then one shorter line (possibly empty) ends the body
            index += 1
            if index >= len(lines):
                raise _Unusual
            body.append(lines[index])
            if len(lines[index]) > COLUMNS:
                raise _Unusual
            if len(lines[index]) < COLUMNS:
                break
        stanzas.append((arguments, _raw_base64(b"".join(body))))
        index += 1
    if not stanzas or len(mac) != 32:
        raise _Unusual
    return stanzas, header, mac, binary[mac_end + 1:]


def open_file(binary: bytes, identities: Sequence[Any]) -> bytes | None:
    """The payload of the binary age file `binary` when the fast path can open it exactly as age would.

    `identities` are tried in order, as pyrage tries them: the first one that is not an X25519
    identity ends the fast path (it might open a stanza first), as does any stanza, header or payload
    that is not plainly well formed, or a file key the header MAC or payload does not authenticate.
    None means "ask pyrage", never "this file is not for you".
    """
    try:
        stanzas, header, mac, payload = _parse(binary)
        if any(arguments[0] == b"scrypt" for arguments, _ in stanzas):
            return None  # age refuses scrypt next to other stanzas and asks a passphrase otherwise
        x25519 = []
        for arguments, body in stanzas:
            if arguments[0] == b"X25519":
                if len(arguments) != 2 or len(body) != FILE_KEY_BYTES + TAG_BYTES:
                    return None  # age fails the file on a malformed X25519 stanza
                share = _raw_base64(arguments[1])
                if len(share) != 32:
                    return None
                x25519.append((share, body))
        # One chunk, neither empty nor full: a data key or share (32-65 bytes) always is.
        if not x25519 or not (PAYLOAD_NONCE_BYTES + TAG_BYTES < len(payload)
                              < PAYLOAD_NONCE_BYTES + CHUNK_BYTES + TAG_BYTES):
            return None
        for identity in identities:
            made = opener(identity)
            if made is None:
                return None
            for share, body in x25519:
                file_key = made.file_key(share, body)
                if file_key is not None:
                    return _authenticated(file_key, header, mac, payload)
        return None
    except (_Unusual, ValueError):  # binascii.Error is a ValueError
        return None


def _authenticated(file_key: bytes, header: bytes, mac: bytes, payload: bytes) -> bytes | None:
    """The payload, when the header MAC and the single last chunk authenticate under `file_key`."""
    if not hmac.compare_digest(hmac.digest(_hkdf(file_key, b"", b"header"), header, "sha256"), mac):
        return None
    nonce, sealed = payload[:PAYLOAD_NONCE_BYTES], payload[PAYLOAD_NONCE_BYTES:]
    try:
        return ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload")).decrypt(_LAST_CHUNK_NONCE, sealed, None)
    except InvalidTag:
        return None
