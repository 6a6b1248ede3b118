"""agefast: the OpenSSL unwrap of the age file sops writes agrees with pyrage, or steps aside for it."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pyrage
import pytest

from sopsctl.crypto import agefast, agewrap
from sopsctl.formats import detect_format, read_metadata

POOL = [pyrage.x25519.Identity.generate() for _ in range(3)]


def _pyrage(binary: bytes, identities: list) -> bytes | None | str:
    try:
        return pyrage.decrypt(binary, identities)
    except pyrage.DecryptError as exc:
        return None if "No matching keys" in str(exc) else "error"


def test_opens_what_pyrage_opens_and_nothing_else() -> None:
    rng = random.Random(5)
    for index in range(120):
        payload = os.urandom(rng.choice([32, 33, 1, 200]))
        owner = POOL[index % 3]
        binary = pyrage.encrypt(payload, [owner.to_public()])  # rage adds a grease stanza
        assert agefast.unwrap(binary, POOL) == payload
        assert agefast.unwrap(binary, [owner]) == payload
        others = [i for i in POOL if i is not owner]
        assert agefast.unwrap(binary, others) is None
        assert _pyrage(binary, others) is None


def test_several_x25519_stanzas_and_other_identities_go_to_pyrage() -> None:
    payload = os.urandom(32)
    both = pyrage.encrypt(payload, [POOL[0].to_public(), POOL[1].to_public()])
    assert agefast.unwrap(both, POOL) is agefast.FALLBACK
    assert agewrap.unwrap(agewrap.armor(both), POOL) == payload
    ssh = pyrage.ssh.Identity.from_buffer(_ssh_key())  # not X25519: pyrage's to judge
    single = pyrage.encrypt(payload, [POOL[0].to_public()])
    assert agefast.unwrap(single, [ssh, POOL[0]]) is agefast.FALLBACK


def _ssh_key() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())


def test_every_change_to_the_file_is_refused_or_judged_by_pyrage() -> None:
    """Flip each byte: the fast path never returns a payload pyrage would not, nor None where pyrage errs."""
    payload = os.urandom(32)
    binary = pyrage.encrypt(payload, [POOL[0].to_public()])
    for position in range(len(binary)):
        for flip in (0x01, 0x80):
            changed = bytearray(binary)
            changed[position] ^= flip
            fast = agefast.unwrap(bytes(changed), POOL)
            if fast is agefast.FALLBACK:
                continue
            assert fast == _pyrage(bytes(changed), POOL), position


def _sops_entries(vectors: Path) -> list[str]:
    encs = []
    for path in sorted(vectors.rglob("*.enc*")):
        try:
            meta = read_metadata(path.read_bytes(), detect_format(str(path)), full=True)
        except ValueError:
            continue
        encs += [e.enc for g in (meta.groups if meta else ()) for e in g if e.kind == "age" and e.enc]
    return encs


def test_entries_sops_wrote_open_as_with_pyrage(vectors: Path) -> None:
    identities = []
    for path in sorted((vectors / "identities").glob("vec-*.txt")):
        identities += [pyrage.x25519.Identity.from_str(line.strip()) for line in path.read_text().splitlines()
                       if line.startswith("AGE-SECRET-KEY-")]
    encs = _sops_entries(vectors)
    assert len(encs) > 10 and identities
    fast_opened = 0
    for enc in encs:
        binary = agewrap.dearmor(enc)
        fast = agefast.unwrap(binary, identities)
        if fast is agefast.FALLBACK:
            continue
        assert fast == _pyrage(binary, identities)
        fast_opened += isinstance(fast, bytes)
    assert fast_opened > 5  # the fast path is taken for what sops (Go age) writes


@pytest.mark.parametrize("text", [b"", b"age-encryption.org/v1\n", b"age-encryption.org/v1\n-> X25519 !!\nx\n--- y\n"])
def test_garbage_steps_aside(text: bytes) -> None:
    assert agefast.unwrap(text, POOL) is agefast.FALLBACK
