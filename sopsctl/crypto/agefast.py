"""A fast unwrap for the age file sops writes in `enc` for an X25519 recipient, on OpenSSL (cryptography).

pyrage takes 105-130 us to open such a file; the X25519 exchange in OpenSSL takes 39 us and the rest
(HKDF, ChaCha20-Poly1305, the header HMAC) a few more. Only the one layout sops writes is taken here:
the v1 header with exactly one X25519 stanza and a single-chunk payload. Anything else, and any check
that fails, gives FALLBACK: the caller then asks pyrage, which decides (and words the error).
Age v1: https://age-encryption.org/v1 (X25519 recipient stanza, header MAC, STREAM payload).
"""

from __future__ import annotations

import binascii
import hmac
from typing import Any

FALLBACK = object()  # "not for this fast path": let pyrage decide
_VERSION = b"age-encryption.org/v1\n"
_STANZA = b"-> X25519 "
_MAC_LINE = b"\n--- "
_X25519_INFO = b"age-encryption.org/v1/X25519"
_LAST_CHUNK_NONCE = bytes(11) + b"\x01"
_KEYS: dict[int, tuple[Any, Any, bytes]] = {}  # id(pyrage identity) -> (identity, private key, public bytes)


def _raw_b64(text: bytes) -> bytes:
    """age's unpadded standard base64, canonical only (so a re-encoding is the same text)."""
    decoded = binascii.a2b_base64(text + b"=" * (-len(text) % 4), strict_mode=True)
    if binascii.b2a_base64(decoded, newline=False).rstrip(b"=") != text:
        raise ValueError("not canonical base64")
    return decoded


def _hkdf(ikm: bytes, salt: bytes | None, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) for 32 bytes: one extract, one expand block (no salt: 32 zero bytes)."""
    prk = hmac.digest(salt or bytes(32), ikm, "sha256")
    return hmac.digest(prk, info + b"\x01", "sha256")


def _x25519_keys(candidates: list[Any]) -> list[tuple[Any, bytes]] | None:
    """(OpenSSL private key, public bytes) of each X25519 identity; None if any identity is of another kind."""
    import pyrage
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from .bech32 import decode

    keys: list[tuple[Any, bytes]] = []
    for identity in candidates:
        if not isinstance(identity, pyrage.x25519.Identity):
            return None  # ssh or plugin identities: pyrage knows them
        cached = _KEYS.get(id(identity))
        if cached is None or cached[0] is not identity:
            hrp, secret = decode(str(identity))
            if hrp != "age-secret-key-" or len(secret) != 32:
                return None
            private = X25519PrivateKey.from_private_bytes(secret)
            cached = _KEYS[id(identity)] = (identity, private, private.public_key().public_bytes_raw())
        keys.append(cached[1:])
    return keys


def unwrap(binary: bytes, candidates: list[Any]) -> bytes | None | object:
    """The payload, None when no identity opens the file, or FALLBACK (let pyrage decide)."""
    try:
        return _unwrap(binary, candidates)
    except (ValueError, binascii.Error):
        return FALLBACK


def _unwrap(binary: bytes, candidates: list[Any]) -> bytes | None | object:
    if not binary.startswith(_VERSION):
        return FALLBACK
    mac_at = binary.find(_MAC_LINE)
    header_end = binary.find(b"\n", mac_at + 1)
    if mac_at < 0 or header_end < 0:
        return FALLBACK
    x25519: list[tuple[bytes, bytes]] = []  # (ephemeral share, wrapped file key) of each X25519 stanza
    lines = binary[len(_VERSION):mac_at].split(b"\n")
    index = 0
    while index < len(lines):  # stanzas: "-> type args", then body lines up to the first short one
        head = lines[index]
        if not head.startswith(b"-> "):
            return FALLBACK
        body = b""
        while True:
            index += 1
            if index >= len(lines):
                return FALLBACK
            body += lines[index]
            if len(lines[index]) < 64:
                break
        index += 1
        decoded = _raw_b64(body)  # every body must be valid, grease too (age refuses the file otherwise)
        if head.startswith(_STANZA):
            share = head[len(_STANZA):]
            if b" " in share or len(decoded) != 32:
                return FALLBACK
            x25519.append((_raw_b64(share), decoded))
    mac = _raw_b64(binary[mac_at + len(_MAC_LINE):header_end])
    payload = binary[header_end + 1:]
    if len(x25519) != 1 or len(mac) != 32 or not 16 + 16 < len(payload) <= 16 + 16 + 64 * 1024:
        return FALLBACK
    (share, body), = x25519
    if len(share) != 32:
        return FALLBACK
    keys = _x25519_keys(candidates)
    if keys is None:
        return FALLBACK
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    ephemeral = X25519PublicKey.from_public_bytes(share)
    for private, public in keys:
        shared = private.exchange(ephemeral)
        if not any(shared):
            return FALLBACK
        wrap_key = _hkdf(shared, share + public, _X25519_INFO)
        try:
            file_key = ChaCha20Poly1305(wrap_key).decrypt(bytes(12), body, None)
        except InvalidTag:
            continue  # not this identity's stanza
        expected = hmac.digest(_hkdf(file_key, None, b"header"), binary[:mac_at + 4], "sha256")
        if not hmac.compare_digest(expected, mac):
            return FALLBACK
        nonce, chunk = payload[:16], payload[16:]
        try:
            return ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload")).decrypt(_LAST_CHUNK_NONCE, chunk, None)
        except InvalidTag:
            return FALLBACK
    return None
