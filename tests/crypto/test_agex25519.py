"""agex25519: the native X25519 opener answers exactly as age (pyrage) does, or not at all.

The rule under test: `open_file` returns either None ("ask pyrage") or the very payload pyrage
returns for the same bytes and identities, whatever the bytes; and for what sops and pyrage write
it does answer, so the fast path is really taken.
"""

from __future__ import annotations

import base64
import hmac
import os
from pathlib import Path

import pyrage
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from sopsctl.crypto import agewrap, agex25519, bech32
from sopsctl.formats import read_metadata

from ..formats.test_write import SOPS_FILES, _fmt
from .test_agewrap import _identity

IDENTITIES = [pyrage.x25519.Identity.generate() for _ in range(4)]
REAL_FILE = pyrage.encrypt(b"r" * 33, [IDENTITIES[0].to_public()])  # fixed: hypothesis replays its edits


def _pyrage_answer(binary: bytes, identities: list) -> bytes | None:
    """What age itself gives: the payload, or None for any refusal."""
    try:
        return pyrage.decrypt(binary, identities)
    except pyrage.DecryptError:
        return None


def _agrees(binary: bytes, identities: list) -> bytes | None:
    """The native answer, checked against age's: None, or exactly age's payload."""
    native = agex25519.open_file(binary, identities)
    if native is not None:
        assert native == _pyrage_answer(binary, identities), "the fast path opened what age does not"
    return native


# --- an age writer for crafted files (tests only: sopsctl never writes age itself) -----------------


def _hkdf(secret: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(hashes.SHA256(), 32, salt, info).derive(secret)


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _public(identity) -> bytes:  # type: ignore[no-untyped-def]
    return bech32.decode(str(identity.to_public()))[1]


def x25519_stanza(identity, file_key: bytes) -> tuple[list[bytes], bytes]:  # type: ignore[no-untyped-def]
    ephemeral = X25519PrivateKey.generate()
    share = ephemeral.public_key().public_bytes_raw()
    recipient = _public(identity)
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
    body = ChaCha20Poly1305(_hkdf(shared, share + recipient, agex25519.X25519_LABEL)).encrypt(bytes(12), file_key,
                                                                                             None)
    return [b"X25519", _b64(share)], body


def build(stanzas: list[tuple[list[bytes], bytes]], file_key: bytes, payload: bytes, *,
          mac_key: bytes | None = None, chunks: list[tuple[bytes, bool]] | None = None, columns: int = 64) -> bytes:
    """An age v1 file as the specification lays it out; `mac_key`/`chunks` let a test break one part."""
    header = b"age-encryption.org/v1\n"
    for arguments, body in stanzas:
        encoded = _b64(body)
        lines = [encoded[i:i + columns] for i in range(0, len(encoded), columns)]
        if not lines or len(lines[-1]) == columns:
            lines.append(b"")
        header += b"-> " + b" ".join(arguments) + b"\n" + b"\n".join(lines) + b"\n"
    header += b"---"
    mac = hmac.digest(_hkdf(mac_key or file_key, b"", b"header"), header, "sha256")
    nonce = os.urandom(16)
    stream = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
    sealed = b"".join(stream.encrypt((index).to_bytes(11, "big") + (b"\x01" if last else b"\x00"), chunk, None)
                      for index, (chunk, last) in enumerate(chunks or [(payload, True)]))
    return header + b" " + _b64(mac) + b"\n" + nonce + sealed


def test_the_crafting_writer_writes_what_age_reads() -> None:
    file_key, payload = os.urandom(16), os.urandom(32)
    binary = build([x25519_stanza(IDENTITIES[0], file_key)], file_key, payload)
    assert pyrage.decrypt(binary, [IDENTITIES[0]]) == payload
    assert _agrees(binary, [IDENTITIES[0]]) == payload


# --- what pyrage and sops write: the fast path answers ---------------------------------------------


@settings(max_examples=60, deadline=None)
@given(payload=st.binary(min_size=1, max_size=70), others=st.integers(0, 2), position=st.integers(0, 2),
       order=st.permutations(range(4)))
def test_pyrage_files_open_natively_with_the_payload_age_gives(payload: bytes, others: int, position: int,
                                                                order: list[int]) -> None:
    """Any number of other recipients, ours anywhere among them, identities held in any order."""
    recipients = [IDENTITIES[1 + i].to_public() for i in range(others)]
    recipients.insert(min(position, len(recipients)), IDENTITIES[0].to_public())
    binary = pyrage.encrypt(payload, recipients)  # rage adds a random grease stanza too
    assert _agrees(binary, [IDENTITIES[i] for i in order]) == payload
    assert _agrees(binary, [IDENTITIES[3]]) is None  # never a recipient here


def test_a_stranger_gets_none_and_pyrage_decides() -> None:
    binary = pyrage.encrypt(b"k" * 32, [IDENTITIES[0].to_public()])
    stranger = pyrage.x25519.Identity.generate()
    assert agex25519.open_file(binary, [stranger]) is None
    assert agewrap.unwrap(agewrap.armor(binary), [stranger]) is None  # pyrage: no matching key


def test_every_age_entry_sops_wrote_in_the_vectors_opens_natively(vectors: Path) -> None:
    identities = [_identity(vectors, name) for name in ("admin", "host1", "host2", "user", "ssh-as-age")]
    opened = 0
    for path in SOPS_FILES:
        metadata = read_metadata(path.read_bytes(), _fmt(path), full=True)
        for group in metadata.groups if metadata is not None else ():
            for entry in group:
                if entry.kind != "age" or not entry.enc:
                    continue
                binary = agewrap.dearmor(entry.enc)
                expected = _pyrage_answer(binary, identities)
                assert agex25519.open_file(binary, identities) == expected, path
                opened += expected is not None
    assert opened >= 20, f"only {opened} entries opened: the vectors did not exercise the fast path"


def test_unwrap_takes_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """With pyrage's decrypt out of the way, an ordinary entry still opens: the native path did it."""
    enc = agewrap.wrap(b"d" * 32, str(IDENTITIES[0].to_public()))

    def refuse(*_args):  # type: ignore[no-untyped-def]
        raise AssertionError("pyrage.decrypt was called for an ordinary X25519 entry")

    monkeypatch.setattr(agewrap.pyrage, "decrypt", refuse)
    assert agewrap.unwrap(enc, [IDENTITIES[0]]) == b"d" * 32


# --- what age refuses, or answers differently: the fast path steps aside ------------------------


def test_tampered_files_never_open_to_something_age_would_not_give() -> None:
    """Every single-byte change, every truncation of a real file: None, or age's own answer."""
    binary = pyrage.encrypt(b"s" * 32, [IDENTITIES[1].to_public(), IDENTITIES[0].to_public()])
    for index in range(len(binary)):
        for flip in (0x01, 0x80):
            changed = binary[:index] + bytes([binary[index] ^ flip]) + binary[index + 1:]
            _agrees(changed, [IDENTITIES[0]])
        _agrees(binary[:index], [IDENTITIES[0]])
    _agrees(binary + b"\x00", [IDENTITIES[0]])


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_random_edits_of_a_real_file_never_open_to_something_age_would_not_give(data: st.DataObject) -> None:
    binary = bytearray(REAL_FILE)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(binary)))
        kind = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        byte = data.draw(st.sampled_from(b" \n-=>A/+0\x00\xff"))
        if kind == "insert":
            binary[at:at] = bytes([byte])
        elif at < len(binary):
            binary[at:at + 1] = b"" if kind == "delete" else bytes([byte])
    _agrees(bytes(binary), [IDENTITIES[0]])


def _ours() -> tuple[bytes, tuple[list[bytes], bytes]]:
    file_key = os.urandom(16)
    return file_key, x25519_stanza(IDENTITIES[0], file_key)


def _grease(body: bytes = b"g" * 20) -> tuple[list[bytes], bytes]:
    return [b"anything-grease", b"x(y"], body


@pytest.mark.parametrize("case", [
    "scrypt stanza beside ours",
    "malformed X25519 stanza before ours",
    "X25519 stanza with a short body before ours",
    "MAC made with another key",
    "two chunks",
    "empty payload",
    "non-canonical share",
    "a stanza body line over 64 columns",
])
def test_files_age_refuses_are_left_to_pyrage(case: str) -> None:
    file_key, ours = _ours()
    payload = os.urandom(32)
    stanzas, options = [ours], {}
    if case == "scrypt stanza beside ours":
        stanzas = [ours, ([b"scrypt", _b64(os.urandom(16)), b"10"], os.urandom(32))]
    elif case == "malformed X25519 stanza before ours":
        other = x25519_stanza(IDENTITIES[1], file_key)
        stanzas = [(other[0] + [b"extra"], other[1]), ours]
    elif case == "X25519 stanza with a short body before ours":
        other = x25519_stanza(IDENTITIES[1], file_key)
        stanzas = [(other[0], other[1][:-1]), ours]
    elif case == "MAC made with another key":
        options = {"mac_key": os.urandom(16)}
    elif case == "two chunks":
        options = {"chunks": [(b"a" * 64 * 1024, False), (payload, True)]}
    elif case == "empty payload":
        payload = b""
    elif case == "non-canonical share":
        alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
        text = bytearray(ours[0][1])  # 43 characters for 32 bytes: the last one has 2 unused bits
        text[-1] = alphabet[alphabet.index(text[-1]) | 1]  # the same bytes, spelled non-canonically
        stanzas = [([b"X25519", bytes(text)], ours[1])]
    elif case == "a stanza body line over 64 columns":
        stanzas, options = [_grease(os.urandom(90)), ours], {"columns": 80}
    binary = build(stanzas, file_key, payload, **options)  # type: ignore[arg-type]
    assert agex25519.open_file(binary, [IDENTITIES[0]]) is None
    _agrees(binary, [IDENTITIES[0]])


def test_well_formed_files_with_odd_but_valid_stanzas_open_as_age_opens_them() -> None:
    """Grease with arguments and bodies of every length (64-column lines, an empty last line)."""
    for length in (0, 1, 47, 48, 49, 96):
        file_key, ours = _ours()
        binary = build([_grease(os.urandom(length)), ours, _grease()], file_key, b"p" * 32)
        assert _agrees(binary, [IDENTITIES[0]]) == b"p" * 32, length


def test_a_non_x25519_identity_first_hands_the_file_to_pyrage(vectors: Path) -> None:
    """pyrage tries identities in order; an ssh identity first might open another stanza first."""
    ssh = pyrage.ssh.Identity.from_buffer((vectors / "identities" / "vec-ssh_ed25519").read_bytes())
    binary = pyrage.encrypt(b"k" * 32, [IDENTITIES[0].to_public()])
    assert agex25519.open_file(binary, [ssh, IDENTITIES[0]]) is None
    assert agex25519.open_file(binary, [IDENTITIES[0], ssh]) == b"k" * 32


def test_an_opener_is_made_once_per_identity_and_never_shows_its_key() -> None:
    first = agex25519.opener(IDENTITIES[0])
    assert first is agex25519.opener(IDENTITIES[0])
    assert first is not None and "AGE-SECRET" not in repr(first) and "<secret>" in repr(first)
    assert first.public == _public(IDENTITIES[0])
    assert agex25519.opener("AGE-SECRET-KEY-1…") is None  # only pyrage X25519 identities
