"""shamir: split/combine round trips, a reference GF(2^8) evaluation, errors, and the sops-made Shamir vector."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pyrage
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from sopsctl.crypto import shamir
from sopsctl.datakey import verify_key
from sopsctl.formats import metadata_from_mapping


def _gf_mul_reference(a: int, b: int) -> int:
    """Shift-and-add multiplication mod x^8+x^4+x^3+x+1: independent of the module's log tables."""
    product = 0
    while b:
        if b & 1:
            product ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11B
        b >>= 1
    return product


def _evaluate_reference(coefficients: list[int], x: int) -> int:
    result, power = 0, 1
    for coefficient in coefficients:
        result ^= _gf_mul_reference(coefficient, power)
        power = _gf_mul_reference(power, x)
    return result


class _Counter:
    """A deterministic randbytes that records what it handed out."""

    def __init__(self, seed: int = 7) -> None:
        self.value = seed
        self.given = b""

    def __call__(self, n: int) -> bytes:
        out = bytes((self.value + i * 37) % 256 for i in range(n))
        self.value += n
        self.given += out
        return out


def test_known_products_in_the_aes_field() -> None:
    # FIPS-197 §4.2: {57} • {83} = {c1}, {57} • {13} = {fe}
    assert shamir._mul(0x57, 0x83) == 0xC1
    assert shamir._mul(0x57, 0x13) == 0xFE
    for a in range(256):
        for b in (0, 1, 2, 3, 0x53, 0xCA, 0xFF):
            assert shamir._mul(a, b) == _gf_mul_reference(a, b)
    for a in range(1, 256):
        for b in range(1, 256, 17):
            assert shamir._mul(shamir._div(a, b), b) == a


def test_split_layout_matches_a_reference_evaluation() -> None:
    secret = bytes(range(32))
    rand = _Counter()
    shares = shamir.split(secret, 5, 3, randbytes=rand)
    assert [len(share) for share in shares] == [33] * 5
    assert [share[-1] for share in shares] == [1, 2, 3, 4, 5]
    degree = 2
    for index, byte in enumerate(secret):
        coefficients = [byte, *rand.given[index * degree : (index + 1) * degree]]
        for part, share in enumerate(shares):
            assert share[index] == _evaluate_reference(coefficients, part + 1)


@settings(max_examples=60, deadline=None)
@given(
    secret=st.binary(min_size=1, max_size=40),
    parts=st.integers(min_value=2, max_value=7),
    data=st.data(),
)
def test_every_subset_of_at_least_threshold_shares_combines(secret: bytes, parts: int, data) -> None:
    threshold = data.draw(st.integers(min_value=2, max_value=parts), label="threshold")
    shares = shamir.split(secret, parts, threshold)
    for size in range(threshold, parts + 1):
        for subset in itertools.combinations(shares, size):
            assert shamir.combine(list(subset)) == secret
    # order does not matter
    assert shamir.combine(list(reversed(shares))) == secret


@settings(max_examples=40, deadline=None)
@given(secret=st.binary(min_size=16, max_size=40), parts=st.integers(min_value=3, max_value=8), data=st.data())
def test_fewer_than_threshold_shares_give_something_else(secret: bytes, parts: int, data) -> None:
    threshold = data.draw(st.integers(min_value=3, max_value=parts), label="threshold")
    shares = shamir.split(secret, parts, threshold)
    subset = data.draw(st.lists(st.sampled_from(shares), min_size=2, max_size=threshold - 1, unique=True))
    # 16+ random bytes: the chance of an accidental match is 2^-128
    assert shamir.combine(subset) != secret


def test_the_largest_split() -> None:
    secret = os.urandom(32)
    shares = shamir.split(secret, 255, 255)
    assert [share[-1] for share in shares] == list(range(1, 256))
    assert shamir.combine(shares) == secret
    assert shamir.combine(shares[:254]) != secret


@pytest.mark.parametrize(
    ("secret", "parts", "threshold", "message"),
    [
        (b"k", 3, 1, "at least 2"),
        (b"k", 3, 0, "at least 2"),
        (b"k", 2, 3, "less than the threshold"),
        (b"k", 256, 2, "cannot exceed 255"),
        (b"", 3, 2, "empty"),
    ],
)
def test_split_rejects(secret: bytes, parts: int, threshold: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        shamir.split(secret, parts, threshold)


def test_split_rejects_a_short_random_source() -> None:
    with pytest.raises(ValueError, match="returned"):
        shamir.split(b"abc", 3, 2, randbytes=lambda n: b"\0" * (n - 1))


def test_combine_rejects() -> None:
    a, b, c = shamir.split(b"secret", 3, 2)
    with pytest.raises(ValueError, match="same x"):
        shamir.combine([a, b, a])
    with pytest.raises(ValueError, match="same length"):
        shamir.combine([a, b + b"\0"])
    with pytest.raises(ValueError, match="at least two"):
        shamir.combine([a])
    with pytest.raises(ValueError, match="at least two bytes"):
        shamir.combine([b"\1", b"\2"])
    assert shamir.combine([c, a]) == b"secret"


# --- the sops-made vector ---------------------------------------------------------------------


def _identity(vectors: Path, name: str):
    text = (vectors / "identities" / f"vec-{name}.txt").read_text()
    return pyrage.x25519.Identity.from_str(next(line for line in text.splitlines() if line.startswith("AGE-")))


def test_combining_two_groups_of_the_sops_vector_gives_its_data_key(vectors: Path) -> None:
    document = yaml.safe_load((vectors / "shamir" / "three-groups.enc.yaml").read_text())
    metadata = metadata_from_mapping(document["sops"])
    groups = document["sops"]["key_groups"]
    host1 = pyrage.decrypt(groups[1]["age"][0]["enc"].encode(), [_identity(vectors, "host1")])
    host2 = pyrage.decrypt(groups[2]["age"][0]["enc"].encode(), [_identity(vectors, "host2")])
    admin = pyrage.decrypt(groups[0]["age"][0]["enc"].encode(), [_identity(vectors, "admin")])
    user = pyrage.decrypt(groups[0]["age"][1]["enc"].encode(), [_identity(vectors, "user")])
    # sops 3.11 numbers the shares by group: x = group index + 1
    assert [len(s) for s in (admin, user, host1, host2)] == [33] * 4
    assert (admin[-1], user[-1], host1[-1], host2[-1]) == (1, 1, 2, 3)
    key = shamir.combine([host1, host2])
    assert len(key) == 32
    assert verify_key(key, metadata)
    assert shamir.combine([admin, host2]) == key
    assert shamir.combine([admin, host1, host2]) == key
    # two keys of one group carry the same share: not a second point
    assert admin == user
    with pytest.raises(ValueError, match="same x"):
        shamir.combine([admin, user])
    # a fresh split of that key decrypts the MAC again through any two of its shares
    fresh = shamir.split(key, 3, 2)
    assert verify_key(shamir.combine([fresh[0], fresh[2]]), metadata)
