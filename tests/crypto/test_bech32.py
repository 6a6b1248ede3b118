"""bech32: BIP-173 vectors, age's key strings, round trips, and every kind of corruption rejected."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sopsctl.crypto import bech32
from sopsctl.errors import KeyFormatError

# BIP-173's own valid test vectors (bech32, constant 1).
BIP173_VALID = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "11" + "q" * 82 + "c8247j",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]

# BIP-173's invalid vectors, minus the one rejected only for exceeding 90 characters (age has no limit).
BIP173_INVALID = [
    ("\x201nwldj5", "invalid character"),
    ("\x7f1axkwrx", "invalid character"),
    ("\x801eym55h", "invalid character"),
    ("pzry9x0s0muk", "no '1' separator"),
    ("1pzry9x0s0muk", "empty human-readable part"),
    ("x1b4n0q5v", "invalid character 'b'"),
    ("li1dgmt3", "too short"),
    ("de1lg7wt\xff", "invalid character"),
    ("A1G7SGD8", "checksum"),  # checksum made with the upper-case HRP
    ("10a06t8", "empty human-readable part"),
    ("1qzzfhee", "empty human-readable part"),
]

# A real age recipient and the identity behind it (the shared test vectors' vec-admin).
ADMIN_RECIPIENT = "age192jp2xpg3gnlgr89mrt2pxv8g97dcgaz9zee52czdufnrf6trajqgfvvzt"
ADMIN_IDENTITY = "AGE-SECRET-KEY-1MZ0KSDTD4HLTC9PZT8M8GV4PVMLJ0JDXER65ZJHHQW3Q5VRNFLHSSDZ08A"


def _reference_polymod(hrp: str, values: list[int]) -> int:
    """BIP-173's reference bech32_polymod, written out again so the test does not trust the module."""
    generator = [0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3]
    chk = 1
    for value in [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp] + values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i in range(5):
            chk ^= generator[i] if (top >> i) & 1 else 0
    return chk


def _reference_checksum_ok(text: str) -> bool:
    lower = text.lower()
    separator = lower.rfind("1")
    return _reference_polymod(lower[:separator], [bech32.CHARSET.find(c) for c in lower[separator + 1 :]]) == 1


def _with_checksum(hrp: str, values: list[int]) -> str:
    """A string with a valid checksum over arbitrary 5-bit values (to build bad paddings)."""
    polymod = _reference_polymod(hrp, values + [0] * 6) ^ 1
    tail = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(bech32.CHARSET[v] for v in values + tail)


@pytest.mark.parametrize("text", BIP173_VALID)
def test_bip173_valid_vectors_decode_and_reencode(text: str) -> None:
    hrp, data = bech32.decode(text)
    assert hrp == text[: text.rfind("1")].lower()
    assert bech32.encode(hrp, data) == text.lower()


@pytest.mark.parametrize(("text", "reason"), BIP173_INVALID)
def test_bip173_invalid_vectors_are_rejected_with_a_reason(text: str, reason: str) -> None:
    with pytest.raises(KeyFormatError, match=reason):
        bech32.decode(text)


def test_no_90_character_limit() -> None:
    data = bytes(range(200))
    text = bech32.encode("age1test", data)
    assert len(text) > 300
    assert bech32.decode(text) == ("age1test", data)


def test_age_recipient_and_identity_strings() -> None:
    hrp, public = bech32.decode(ADMIN_RECIPIENT)
    assert (hrp, len(public)) == ("age", 32)
    assert bech32.encode("age", public) == ADMIN_RECIPIENT
    hrp, secret = bech32.decode(ADMIN_IDENTITY)
    assert (hrp, len(secret)) == ("age-secret-key-", 32)
    # An upper-case HRP gives an all upper-case string, as age writes identities.
    assert bech32.encode("AGE-SECRET-KEY-", secret) == ADMIN_IDENTITY
    assert bech32.encode("age-secret-key-", secret) == ADMIN_IDENTITY.lower()


def test_mixed_case_is_rejected() -> None:
    mixed = ADMIN_RECIPIENT[:10] + ADMIN_RECIPIENT[10:].upper()
    with pytest.raises(KeyFormatError, match="mixed upper and lower case"):
        bech32.decode(mixed)
    assert bech32.decode(ADMIN_RECIPIENT.upper()) == bech32.decode(ADMIN_RECIPIENT)


def test_bech32m_checksum_is_not_accepted() -> None:
    # BIP-350's bech32m vector: valid bech32m, therefore not valid bech32.
    with pytest.raises(KeyFormatError, match="checksum"):
        bech32.decode("a1lqfn3a")


def test_nonzero_or_overlong_padding_is_rejected() -> None:
    # 32 bytes = 256 bits = 51 five-bit values + 1 padding bit, which must be 0.
    values = [bech32.CHARSET.index(c) for c in ADMIN_RECIPIENT[4:-6]]
    assert len(values) == 52
    values[-1] |= 1
    with pytest.raises(KeyFormatError, match="padding"):
        bech32.decode(_with_checksum("age", values))
    # One byte is two 5-bit groups; a third (all-zero) group is more padding than any encoder writes.
    assert bech32.decode(_with_checksum("age", [3, 4])) == ("age", bytes([3 << 3 | 4 >> 2]))
    with pytest.raises(KeyFormatError, match="padding"):
        bech32.decode(_with_checksum("age", [3, 4, 0]))


@pytest.mark.parametrize("hrp", ["", "Age", "a b", "é"])
def test_encode_rejects_bad_hrp(hrp: str) -> None:
    with pytest.raises(ValueError, match="bech32"):
        bech32.encode(hrp, b"\x00")


hrps = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=20).map(
    str.lower
)


@given(hrp=hrps, data=st.binary(max_size=80))
def test_encode_decode_round_trip(hrp: str, data: bytes) -> None:
    text = bech32.encode(hrp, data)
    assert _reference_checksum_ok(text)
    assert bech32.decode(text) == (hrp, data)
    assert bech32.decode(text.upper()) == (hrp, data)


@given(data=st.binary(min_size=32, max_size=32), position=st.integers(min_value=0, max_value=57),
       shift=st.integers(min_value=1, max_value=31))
def test_any_single_substitution_is_caught(data: bytes, position: int, shift: int) -> None:
    text = bech32.encode("age", data)
    index = 4 + position  # inside the data part, checksum included
    wrong = bech32.CHARSET[(bech32.CHARSET.index(text[index]) + shift) % 32]
    corrupted = text[:index] + wrong + text[index + 1 :]
    with pytest.raises(KeyFormatError, match="checksum"):
        bech32.decode(corrupted)


@given(data=st.binary(min_size=32, max_size=32), cut=st.integers(min_value=1, max_value=20))
def test_truncation_is_caught(data: bytes, cut: int) -> None:
    with pytest.raises(KeyFormatError):
        bech32.decode(bech32.encode("age", data)[:-cut])
