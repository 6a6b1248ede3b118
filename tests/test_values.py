"""sopsctl.values: the ENC[] cipher against real sops output, Go's formatting and parsing, the MAC."""

from __future__ import annotations

import ast
import hashlib
import math
import re
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sopsctl import tree
from sopsctl import values as v
from sopsctl.datakey import recover
from sopsctl.formats import read_metadata
from sopsctl.identities import load_identities

KEY = bytes(range(32))
ENC_SHAPE = re.compile(r"ENC\[AES256_GCM,data:[A-Za-z0-9+/]+=*,iv:[A-Za-z0-9+/]{43}=,tag:[A-Za-z0-9+/]{22}==,"
                       r"type:(str|int|float|bool|time|comment)\]")
TYPES = st.sampled_from(["str", "int", "float", "bool", "time", "comment"])


def _vector_key(vectors: Path, name: str) -> bytes:
    data = (vectors / name).read_bytes()
    metadata = read_metadata(data, "yaml", full=True)
    assert metadata is not None
    identities = load_identities({}, vectors / "no-home", [vectors / "identities" / "vec-admin.txt"])
    return recover(metadata, identities).key


def _stored(vectors: Path, name: str, key: str) -> str:
    line = next(x for x in (vectors / name).read_text().splitlines() if x.strip().startswith(key + ":"))
    return line.split(":", 1)[1].strip()


# --- the cipher ---------------------------------------------------------------------------------


def test_known_answer_matches_the_value_sops_wrote(vectors: Path) -> None:
    """Same key, IV, plaintext and path as sops: the exact ENC string of yaml/nested.enc.yaml."""
    key = _vector_key(vectors, "yaml/nested.enc.yaml")
    stored = _stored(vectors, "yaml/nested.enc.yaml", "password")
    enc = v.parse_enc(stored)
    assert (len(enc.iv), len(enc.tag), enc.type) == (32, 16, "str")
    assert v.decrypt_value(key, enc, "database:password:") == b"s3cr3t"
    assert v.encrypt_value(key, b"s3cr3t", "database:password:", "str", iv=enc.iv) == stored


def test_vector_values_of_every_type_decrypt_to_their_plaintext(vectors: Path) -> None:
    key = _vector_key(vectors, "yaml/nested.enc.yaml")
    expected = {"port": (b"5432", "int"), "ratio": (b"0.25", "float"), "whole_float": (b"1", "float"),
                "enabled": (b"True", "bool"), "disabled": (b"False", "bool"),
                "created": (b"2024-01-02T00:00:00Z", "time")}
    for name, (plain, kind) in expected.items():
        enc = v.parse_enc(_stored(vectors, "yaml/nested.enc.yaml", name))
        assert enc.type == kind
        assert v.decrypt_value(key, enc, f"database:{name}:") == plain
        assert v.canonical_bytes(plain, kind) == plain


@given(st.binary(max_size=300), st.text(max_size=40), TYPES)
def test_round_trip(plaintext: bytes, aad: str, kind: str) -> None:
    if not plaintext and kind not in ("str", "comment"):
        with pytest.raises(ValueError):
            v.encrypt_value(KEY, plaintext, aad, kind)
        return
    text = v.encrypt_value(KEY, plaintext, aad, kind)
    if not plaintext:
        assert text == ""  # sops never encrypts an empty string
        return
    assert ENC_SHAPE.fullmatch(text), text
    enc = v.parse_enc(text)
    assert enc.type == kind and len(enc.iv) == v.IV_BYTES and len(enc.tag) == v.TAG_BYTES
    assert v.decrypt_value(KEY, enc, aad) == plaintext


@given(st.binary(min_size=4, max_size=64), st.integers(min_value=0), st.data())
def test_any_flipped_bit_is_caught(plaintext: bytes, bit: int, data: st.DataObject) -> None:
    enc = v.parse_enc(v.encrypt_value(KEY, plaintext, "a:b:", "str"))
    part = data.draw(st.sampled_from(["data", "iv", "tag"]))
    raw = bytearray(getattr(enc, part))
    raw[(bit // 8) % len(raw)] ^= 1 << (bit % 8)
    with pytest.raises(v.DecryptError) as caught:
        v.decrypt_value(KEY, enc._replace(**{part: bytes(raw)}), "a:b:")
    assert plaintext.hex() not in str(caught.value) and str(plaintext)[2:-1] not in str(caught.value)


def test_wrong_path_or_key_fails_without_saying_more() -> None:
    enc = v.parse_enc(v.encrypt_value(KEY, b"hunter2", "db:password:", "str"))
    for key, aad in ((KEY, "db:user:"), (KEY, "db:password"), (bytes(32), "db:password:")):
        with pytest.raises(v.DecryptError) as caught:
            v.decrypt_value(key, enc, aad)
        assert "hunter2" not in str(caught.value)
    assert isinstance(caught.value, ValueError)
    with pytest.raises(v.DecryptError):
        v.decrypt_value(KEY[:16], enc, "db:password:")


def test_fixed_iv_gives_the_same_ciphertext() -> None:
    iv = bytes(32)
    first = v.encrypt_value(KEY, b"x", "k:", "str", iv=iv)
    assert first == v.encrypt_value(KEY, b"x", "k:", "str", iv=iv)
    assert first != v.encrypt_value(KEY, b"x", "k:", "str")


@pytest.mark.parametrize("text", [
    "", "plain", "ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==]", "enc[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str]",
    "ENC[AES256_GCM,data:A,iv:AAAA,tag:AAAA,type:str]", "ENC[AES256_GCM,data:AA==,iv:AA=,tag:AA==,type:str]",
    "ENC[AES256_GCM,data:AA==,iv:A A=,tag:AA==,type:str]", "ENC[AES256_GCM,data:\nAA==,iv:AA==,tag:AA==,type:str]",
    "ENC[AES256_GCM,data:AA==,iv:AA==,tag:AA==,type:str",
])
def test_malformed_enc_values(text: str) -> None:
    with pytest.raises(ValueError):
        v.parse_enc(text)


def test_enc_regex_is_sops_own() -> None:
    # Not anchored at the end (Go's encre): trailing text after `]` still parses.
    assert v.parse_enc("ENC[AES256_GCM,data:AA==,iv:AAAA,tag:AAAA,type:str] trailing").type == "str"
    assert v.is_enc("ENC[AES256_GCM,data:x,iv:y,tag:z,type:w]") and not v.is_enc(42)


# --- Go formatting ------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "text"), [
    (1e20, "100000000000000000000"), (0.0000001, "0.0000001"), (1.0, "1"), (0.5, "0.5"), (0.25, "0.25"),
    (3.14159, "3.14159"), (1234567.0, "1234567"), (1e-7, "0.0000001"), (-2.5, "-2.5"), (-0.0, "-0"),
    (0.0, "0"), (12345678901234567890.0, "12345678901234567000"), (0.1 + 0.2, "0.30000000000000004"),
    (123.456, "123.456"), (1e21, "1000000000000000000000"), (5e-324, "0." + "0" * 323 + "5"),
    (math.inf, "+Inf"), (-math.inf, "-Inf"), (math.nan, "NaN"),
])
def test_format_float_table(value: float, text: str) -> None:
    assert v.format_float(value) == text
    assert v.to_bytes(value) == text.encode()


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_format_float_is_shortest_round_trip_without_exponent(value: float) -> None:
    text = v.format_float(value)
    assert "e" not in text and "E" not in text
    assert float(text) == value and math.copysign(1, float(text)) == math.copysign(1, value)
    digits = Decimal(text).normalize().as_tuple().digits
    assert len(digits) <= len(Decimal(repr(value)).normalize().as_tuple().digits)
    assert v.go_parse_float(text) == value


def test_bool_int_and_str_bytes() -> None:
    assert (v.to_bytes(True), v.to_bytes(False)) == (b"True", b"False")
    assert v.value_type(True) == "bool" and v.value_type(1) == "int" and v.value_type(1.0) == "float"
    assert v.to_bytes(-42) == b"-42" and v.to_bytes("é") == "é".encode()
    assert v.to_bytes(b"\xff\x00") == b"\xff\x00" and v.to_bytes("\udcff") == b"\xff"  # raw bytes survive
    assert v.go_bytes("\ud800") == "\ufffd".encode()  # a lone surrogate becomes U+FFFD, as in Go


@pytest.mark.parametrize(("text", "value"), [
    ("1", True), ("t", True), ("T", True), ("TRUE", True), ("true", True), ("True", True),
    ("0", False), ("f", False), ("F", False), ("FALSE", False), ("false", False), ("False", False),
])
def test_go_parse_bool(text: str, value: bool) -> None:
    assert v.go_parse_bool(text) is value
    assert v.canonical_bytes(text.encode(), "bool") == (b"True" if value else b"False")


@pytest.mark.parametrize("text", ["yes", "on", "tRUE", "", " true"])
def test_go_parse_bool_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        v.go_parse_bool(text)


@pytest.mark.parametrize(("text", "stamp"), [
    ("2024-01-02", "2024-01-02T00:00:00Z"),
    ("2024-1-2", "2024-01-02T00:00:00Z"),
    ("2024-01-02T10:20:30+02:00", "2024-01-02T10:20:30+02:00"),
    ("2024-01-02t10:20:30Z", "2024-01-02T10:20:30Z"),
    ("2024-01-02T10:20:30+00:00", "2024-01-02T10:20:30Z"),
    ("2024-01-02T10:20:30-00:00", "2024-01-02T10:20:30Z"),
    ("2024-01-02 10:20:30", "2024-01-02T10:20:30Z"),
    ("2024-01-02 1:2:3.500", "2024-01-02T01:02:03.5Z"),
    ("2024-01-02T10:20:30.1234567891Z", "2024-01-02T10:20:30.123456789Z"),
    ("2024-01-02T10:20:30,25-05:30", "2024-01-02T10:20:30.25-05:30"),
    ("2000-02-29", "2000-02-29T00:00:00Z"),
])
def test_yaml_timestamps(text: str, stamp: str) -> None:
    parsed = v.parse_yaml_timestamp(text)
    assert parsed is not None and parsed.marshal_text() == stamp
    assert v.to_bytes(parsed) == stamp.encode() and v.value_type(parsed) == "time"
    assert v.canonical_bytes(stamp.encode(), "time") == stamp.encode()  # MarshalText is a fixed point


@pytest.mark.parametrize("text", ["2023-02-29", "2024-13-01", "2024-01-02T24:00:00Z", "24-01-02",
                                  "2024-01-02 10:20:30 +01:00", "2024-01-02T10:20:30", "20240102", "2024-01-02x"])
def test_not_yaml_timestamps(text: str) -> None:
    assert v.parse_yaml_timestamp(text) is None


def test_decrypted_time_is_parsed_as_rfc3339() -> None:
    assert v.canonical_bytes(b"2024-01-02T03:04:05.000Z", "time") == b"2024-01-02T03:04:05Z"
    for bad in (b"2024-01-02", b"2024-1-02T03:04:05Z", b"2024-01-02T03:04:05"):
        with pytest.raises(ValueError):
            v.canonical_bytes(bad, "time")
    with pytest.raises(ValueError):
        v.GoTime(2024, 1, 2, 3, 4, 5, 0, 24 * 3600).marshal_text()  # Go refuses a 24-hour offset


def test_canonical_bytes_re_formats_like_sops() -> None:
    assert v.canonical_bytes(b"1.0", "float") == b"1"
    assert v.canonical_bytes(b"1e20", "float") == b"100000000000000000000"
    assert v.canonical_bytes(b"012", "int") == b"12"
    assert v.canonical_bytes(b"\xff raw", "str") == b"\xff raw"
    assert v.canonical_bytes(b"\xff raw", "bytes") == b"\xff raw"
    assert v.canonical_bytes(b" a comment", "comment") is None
    for plain, kind in ((b"x", "int"), (b"1_000", "int"), (b"9223372036854775808", "int"), (b"1e400", "float"),
                        (b"yes", "bool"), (b"\xff", "float"), (b"x", "nonsense")):
        with pytest.raises(ValueError):
            v.canonical_bytes(plain, kind)


@pytest.mark.parametrize(("text", "value"), [
    ("1.5", 1.5), ("1.", 1.0), (".5", 0.5), ("1e3", 1000.0), ("1_000.5", 1000.5), ("0x1p3", 8.0),
    ("inf", math.inf), ("-Infinity", -math.inf), ("1e-400", 0.0),
])
def test_go_parse_float(text: str, value: float) -> None:
    assert v.go_parse_float(text) == value


@pytest.mark.parametrize("text", ["", ".", "1e", "_1", "1_", "1__0", "+nan", "1e400", "0x1", " 1", "1,5", "infin"])
def test_go_parse_float_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        v.go_parse_float(text)


@pytest.mark.parametrize(("text", "value"), [
    ("0x1F", 31), ("0X1f", 31), ("0o17", 15), ("012", 10), ("0b101", 5), ("0", 0), ("00", 0), ("-0x10", -16),
    ("+5", 5), ("-9223372036854775808", -(1 << 63)), ("9223372036854775808", 1 << 63),
    ("09", None), ("0x", None), ("18446744073709551616", None), ("1.5", None), ("", None), ("+", None),
])
def test_go_parse_int_base0(text: str, value: int | None) -> None:
    assert v.parse_go_int_base0(text) == value


# --- the MAC ------------------------------------------------------------------------------------


def test_mac_hex() -> None:
    assert v.MAC_ONLY_ENCRYPTED_INIT.hex().startswith("8a3fd2ad") and v.MAC_ONLY_ENCRYPTED_INIT.hex().endswith("f27d69")
    assert v.mac_hex([], False) == hashlib.sha512().hexdigest().upper()
    assert v.mac_hex([b"ab", b"c"], False) == hashlib.sha512(b"abc").hexdigest().upper()
    assert v.mac_hex([b"ab"], True) == hashlib.sha512(v.MAC_ONLY_ENCRYPTED_INIT + b"ab").hexdigest().upper()
    digest = v.mac_hex([b"x"], False)
    assert len(digest) == 128 and digest == digest.upper()


@given(st.lists(st.binary(min_size=1, max_size=8), min_size=2, max_size=5, unique=True))
def test_mac_depends_on_order(leaves: list[bytes]) -> None:
    swapped = [leaves[1], leaves[0], *leaves[2:]]
    if b"".join(swapped) != b"".join(leaves):
        assert v.mac_hex(swapped, False) != v.mac_hex(leaves, False)
    assert v.mac_hex(leaves, True) != v.mac_hex(leaves, False)


@pytest.mark.parametrize("module", [v, tree])
def test_value_crypto_and_tree_walk_do_no_io(module: object) -> None:
    parsed = ast.parse(Path(module.__file__).read_text())  # type: ignore[attr-defined]
    imported = {alias.name.split(".")[0] for node in ast.walk(parsed) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(parsed)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"os", "io", "pathlib", "subprocess", "shutil", "sys", "tempfile"}
    called = {node.func.id for node in ast.walk(parsed)
              if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not called & {"open", "print", "input"}


# --- match_enc: sops's ENC_RE, with the common case found without backtracking -----------------

_FIELD_NEAR_MISSES = ("", "A,iv:B", "A,tag:B", "A]B", "A:B", "A\nB", "é", "A B", "QQ=", "str")
# A token as sops writes it, part by part, each with its near misses.
_TOKEN_PARTS = (
    ("ENC[AES256_GCM,data:", ("ENC[AES256_GCM,data", "enc[AES256_GCM,data:", " ENC[AES256_GCM,data:")),
    ("QUJD", _FIELD_NEAR_MISSES), (",iv:", (",iv", ",tag:")), ("QQ==", _FIELD_NEAR_MISSES),
    (",tag:", (",tag", ",iv:")), ("+/9=", _FIELD_NEAR_MISSES), (",type:", (",type", ",tag:")),
    ("str", ("comment", "", "Str", "str]x", "st r", "s\nr")), ("]", ("]]", "", "]x", "]\n", "] ,iv:Q]")),
)


def _near_tokens() -> list[str]:
    """The token, every token with one part missed, and every one with two parts missed."""
    good = [right for right, _ in _TOKEN_PARTS]
    found = ["".join(good)]
    for first, (_, misses) in enumerate(_TOKEN_PARTS):
        for miss in misses:
            one = [*good[:first], miss, *good[first + 1:]]
            found.append("".join(one))
            for second in range(first + 1, len(_TOKEN_PARTS)):
                found += ["".join([*one[:second], other, *one[second + 1:]]) for other in _TOKEN_PARTS[second][1]]
    return found


def _same_as_enc_re(text: str) -> None:
    fast, reference = v.match_enc(text), v.ENC_RE.match(text)
    assert (fast is None) == (reference is None), text
    if fast is not None and reference is not None:
        assert fast.groups() == reference.groups(), text


def test_match_enc_is_enc_re_on_every_near_miss_of_a_token() -> None:
    """Same verdict and same groups as sops's regex for a token with any one or two parts wrong."""
    tokens = _near_tokens()
    assert len(tokens) > 1000
    for text in tokens:
        _same_as_enc_re(text)


@given(st.text(max_size=40) | st.sampled_from(_near_tokens()).flatmap(
    lambda token: st.integers(0, len(token)).map(lambda cut: token[:cut])))
def test_match_enc_is_enc_re_on_any_text_or_cut_token(text: str) -> None:
    _same_as_enc_re(text)


@given(st.binary(min_size=1, max_size=40), st.sampled_from(["str", "int", "float", "bool", "comment", "time"]))
def test_match_enc_takes_the_fast_path_for_what_sops_writes(plaintext: bytes, kind: str) -> None:
    token = v.encrypt_value(b"k" * 32, plaintext, "a:b:", kind)
    assert v._AS_WRITTEN.match(token) is not None  # the fast path is taken, not just ENC_RE again
    assert v.match_enc(token).groups() == v.ENC_RE.match(token).groups()  # type: ignore[union-attr]
