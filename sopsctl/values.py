"""SOPS value crypto (pure): the `ENC[AES256_GCM,…]` cipher, Go's value formatting and parsing, and the MAC."""

from __future__ import annotations

import binascii
import calendar
import contextlib
import hashlib
import math
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

IV_BYTES = 32  # sops's nonce size: GCM with a non-96-bit nonce
TAG_BYTES = 16
KEY_BYTES = 32
TYPES = ("str", "int", "float", "bool", "time", "comment", "bytes")
# sops.go MACOnlyEncryptedInitialization: SHA-256("sops"), so the two MAC kinds never coincide.
MAC_ONLY_ENCRYPTED_INIT = hashlib.sha256(b"sops").digest()
# aes/cipher.go `encre`, verbatim: unanchored at the end, `.` stops at a newline, greedy groups.
ENC_RE = re.compile(r"^ENC\[AES256_GCM,data:(.+),iv:(.+),tag:(.+),type:(.+)\]")
# A token as sops writes it, matched without ENC_RE's backtracking (its greedy groups retry splits of
# the whole token: 1.1 µs a match, 0.35 µs here; a rotation matches each value four times). On a
# string this matches whole, ENC_RE's groups are the same (base64 and the type hold no `,`, `:` or
# `]`); any other string is ENC_RE's to judge.
_AS_WRITTEN = re.compile(r"ENC\[AES256_GCM,data:([A-Za-z0-9+/=]+),iv:([A-Za-z0-9+/=]+),tag:([A-Za-z0-9+/=]+),"
                         r"type:([a-z]+)\]\Z")
_INT64 = (-(1 << 63), (1 << 63) - 1)
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


class DecryptError(ValueError):
    """A value did not authenticate: wrong key, wrong path (AAD) or altered ciphertext. Never says more."""


class EncValue(NamedTuple):
    """The parts of an `ENC[…]` string (ciphertext, IV and tag are not secret)."""

    data: bytes
    iv: bytes
    tag: bytes
    type: str


def go_base64(text: str) -> bytes:
    """Go's base64.StdEncoding.DecodeString: CR and LF skipped, padding required; ValueError otherwise."""
    if "\n" in text or "\r" in text:  # rare: every value of a batch comes through here, so no copies
        text = text.replace("\r", "").replace("\n", "")
    try:
        return binascii.a2b_base64(text, strict_mode=True)  # a str with anything but ASCII is a ValueError
    except ValueError:
        raise ValueError("not standard padded base64") from None


def match_enc(text: str) -> re.Match[str] | None:
    """ENC_RE's match of `text`: sops's own test for an encrypted value (aes/cipher.go), made fast."""
    return _AS_WRITTEN.match(text) or ENC_RE.match(text)


def is_enc(text: object) -> bool:
    """Whether sops would parse `text` as an encrypted value (its regex only; base64 is not checked)."""
    return isinstance(text, str) and match_enc(text) is not None


def parse_enc(text: str, match: re.Match[str] | None = None) -> EncValue:
    """The parts of an `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]` string; ValueError when malformed.

    `match`: match_enc's match of `text`, when the caller has just made it (is_enc's question)."""
    if match is None:
        match = match_enc(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError("not an ENC[AES256_GCM,…] value")
    data, iv, tag, kind = match.groups()
    try:
        return EncValue(go_base64(data), go_base64(iv), go_base64(tag), kind)
    except ValueError as exc:
        raise ValueError(f"an ENC[…] value whose data, iv or tag is {exc}") from None


_AEADS: dict[bytes, object] = {}  # the cipher of the last data keys used: a file's values share one


def _aead(key: bytes):  # type: ignore[no-untyped-def]
    """AESGCM for `key`, made once per key rather than once per value (a file has tens of values)."""
    aead = _AEADS.get(key)
    if aead is None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if len(_AEADS) >= 4:
            _AEADS.clear()  # a batch goes file by file: keep only the last few keys in memory
        aead = _AEADS[key] = AESGCM(key)
    return aead


def decrypt_value(key: bytes, enc: EncValue, aad: str) -> bytes:
    """The plaintext bytes of `enc`, authenticated with `aad` (the value's path, or lastmodified for the MAC)."""
    from cryptography.exceptions import InvalidTag

    if len(key) != KEY_BYTES:
        raise DecryptError(f"the data key has {len(key)} bytes, expected {KEY_BYTES}")
    try:
        # Go's gcm.Open takes data+tag as one buffer and splits off the last 16 bytes itself.
        return _aead(key).decrypt(enc.iv, enc.data + enc.tag, aad.encode("utf-8", "surrogateescape"))  # type: ignore[attr-defined]
    except InvalidTag:
        raise DecryptError("authentication failed (wrong key, value moved to another path, or altered)") from None
    except (ValueError, OverflowError):
        raise DecryptError("unusable iv or tag length") from None


def encrypt_value(key: bytes, plaintext: bytes, aad: str, type: str, iv: bytes | None = None) -> str:
    """`plaintext` as sops writes it: `ENC[AES256_GCM,data:…,iv:…,tag:…,type:…]`, standard padded base64.

    Like sops's cipher, an empty `str` or `comment` is not encrypted: the result is "". `iv` defaults
    to 32 fresh random bytes; pass the old one to keep an unchanged value's ciphertext (sops does).
    """
    if type not in TYPES or type == "bytes":
        raise ValueError(f"sops does not write values of type {type!r}")
    if not plaintext:
        if type in ("str", "comment"):
            return ""
        raise ValueError(f"an empty {type} has no encrypted form sops can read (its data would be empty)")
    if len(key) != KEY_BYTES:
        raise ValueError(f"the data key has {len(key)} bytes, expected {KEY_BYTES}")
    nonce = secrets.token_bytes(IV_BYTES) if iv is None else iv
    sealed = _aead(key).encrypt(nonce, plaintext, aad.encode("utf-8", "surrogateescape"))  # type: ignore[attr-defined]
    parts = (sealed[:-TAG_BYTES], nonce, sealed[-TAG_BYTES:])
    data, iv_text, tag = (binascii.b2a_base64(p, newline=False).decode("ascii") for p in parts)
    return f"ENC[AES256_GCM,data:{data},iv:{iv_text},tag:{tag},type:{type}]"


# --- Go's formatting -----------------------------------------------------------------------------


def format_float(value: float) -> str:
    """Go `strconv.FormatFloat(v, 'f', -1, 64)`: the shortest round-trip digits, never an exponent."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    # repr is the shortest round-trip form too (both pick the closest of the shortest candidates).
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    text = "".join(map(str, digits)).rstrip("0")
    exponent += len(digits) - len(text)
    if not text:
        body = "0"
    elif exponent >= 0:
        body = text + "0" * exponent
    elif -exponent < len(text):
        body = f"{text[:exponent]}.{text[exponent:]}"
    else:
        body = "0." + "0" * (-exponent - len(text)) + text
    return ("-" if sign else "") + body


def format_bool(value: bool) -> str:
    return "True" if value else "False"


@dataclass(frozen=True)
class GoTime:
    """A Go time.Time as sops sees it: wall clock in its own UTC offset, nanoseconds kept (datetime has µs)."""

    year: int
    month: int
    day: int
    hour: int
    minute: int
    second: int
    nanosecond: int = 0
    offset: int = 0  # seconds east of UTC

    def marshal_text(self) -> str:
        """Go `Time.MarshalText`: RFC 3339 with trimmed nanoseconds, `Z` for a zero offset."""
        if not 0 <= self.year <= 9999:
            raise ValueError("year outside of range [0,9999]")
        text = (f"{self.year:04d}-{self.month:02d}-{self.day:02d}T"
                f"{self.hour:02d}:{self.minute:02d}:{self.second:02d}")
        if self.nanosecond:
            text += "." + f"{self.nanosecond:09d}".rstrip("0")
        if self.offset == 0:
            return text + "Z"
        minutes = abs(self.offset) // 60
        if minutes // 60 >= 24:
            raise ValueError("timezone hour outside of range [0,23]")
        return f"{text}{'-' if self.offset < 0 else '+'}{minutes // 60:02d}:{minutes % 60:02d}"


# go-yaml v3's timestamp layouts (resolve.go allowedTimestampFormats), then RFC 3339 as Go's lenient
# time.Parse reads it (what Time.UnmarshalText falls back to): fields, fraction ('.' or ','), zone.
_YAML_TIMES = (
    re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})[T](\d{1,2}):(\d{1,2}):(\d{1,2})(?:[.,](\d+))?(Z|[+-]\d\d:\d\d)"),
    re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})[t](\d{1,2}):(\d{1,2}):(\d{1,2})(?:[.,](\d+))?(Z|[+-]\d\d:\d\d)"),
    re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2}) (\d{1,2}):(\d{1,2}):(\d{1,2})(?:[.,](\d+))?()"),
    re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})()()()()()"),
)
_RFC3339 = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d{1,2}):(\d\d):(\d\d)(?:[.,](\d+))?(Z|[+-]\d\d:\d\d)")


def _days_in(year: int, month: int) -> int:
    if month == 2:
        return 29 if calendar.isleap(year) else 28  # proleptic Gregorian, year 0 included, as Go
    return 30 if month in (4, 6, 9, 11) else 31


def _go_time(match: re.Match[str]) -> GoTime:
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    fields = [int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0)]
    if not 1 <= fields[1] <= 12 or not 1 <= fields[2] <= _days_in(fields[0], fields[1]):
        raise ValueError("date out of range")
    if fields[3] >= 24 or fields[4] >= 60 or fields[5] >= 60:
        raise ValueError("time out of range")
    nanosecond = int((fraction or "0")[:9].ljust(9, "0"))  # Go keeps 9 digits and drops the rest
    offset = 0
    if zone and zone != "Z":
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 24 or minutes > 60:  # time.Parse's own (loose) bounds
            raise ValueError("time zone offset out of range")
        offset = (hours * 60 + minutes) * 60 * (-1 if zone[0] == "-" else 1)
    return GoTime(*fields, nanosecond, offset)


def parse_yaml_timestamp(text: str) -> GoTime | None:
    """go-yaml v3's parseTimestamp: the time a plain scalar means, or None when it is not one."""
    if len(text) < 5 or not text[:4].isascii() or not text[:4].isdigit() or text[4] != "-":
        return None
    for layout in _YAML_TIMES:
        match = layout.fullmatch(text)
        if match is not None:
            try:
                return _go_time(match)
            except ValueError:
                continue
    return None


def parse_time(text: str) -> GoTime:
    """Go `Time.UnmarshalText` (RFC 3339); ValueError when it would fail."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError("not an RFC 3339 time")
    return _go_time(match)


# --- Go's parsing (what sops does to a decrypted value before hashing it) --------------------------


def go_parse_bool(text: str) -> bool:
    """Go `strconv.ParseBool`."""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("not a Go bool")


def go_atoi(text: str) -> int:
    """Go `strconv.Atoi` on 64 bits: optional sign, ASCII decimal digits, int64 range."""
    if not re.fullmatch(r"[+-]?[0-9]+", text):
        raise ValueError("not a decimal integer")
    value = int(text)
    if not _INT64[0] <= value <= _INT64[1]:
        raise ValueError("integer out of int64 range")
    return value


def _underscore_ok(text: str) -> bool:
    """Go strconv's underscoreOK: `_` only between digits, or between a base prefix and a digit."""
    saw = "^"
    body = text[1:] if text[:1] in "+-" else text
    index = 0
    hexa = False
    if len(body) >= 2 and body[0] == "0" and body[1].lower() in "box":
        index, saw, hexa = 2, "0", body[1].lower() == "x"
    for char in body[index:]:
        if char.isdigit() or (hexa and char.lower() in "abcdef"):
            saw = "0"
        elif char == "_":
            if saw != "0":
                return False
            saw = "_"
        else:
            if saw == "_":
                return False
            saw = "!"
    return saw != "_"


_DEC_FLOAT = re.compile(r"[+-]?(?P<m>[0-9_]+\.?[0-9_]*|\.[0-9_]+)(?:[eE][+-]?[0-9_]+)?")
_HEX_FLOAT = re.compile(r"[+-]?0[xX](?P<m>[0-9a-fA-F_]+\.?[0-9a-fA-F_]*|\.[0-9a-fA-F_]+)[pP][+-]?[0-9_]+")
_SPECIAL_FLOAT = re.compile(r"(?i)nan|[+-]?inf(?:inity)?")


def go_parse_float(text: str) -> float:
    """Go `strconv.ParseFloat(s, 64)`: decimal or hex (`p` exponent), inf/infinity/nan in any case.

    ValueError for bad syntax and, as Go's ErrRange, for a finite number too large for a float64.
    """
    if _SPECIAL_FLOAT.fullmatch(text):
        return float(text)
    match = _DEC_FLOAT.fullmatch(text) or _HEX_FLOAT.fullmatch(text)
    if match is None or match.group("m").strip("_.") == "":
        raise ValueError("not a Go float")
    if "_" in text:
        if not _underscore_ok(text):
            raise ValueError("misplaced underscore")
        text = text.replace("_", "")
    hexa = text.lstrip("+-")[:2].lower() == "0x"
    try:
        value = float.fromhex(text) if hexa else float(text)
    except (OverflowError, ValueError):
        raise ValueError("float out of range") from None
    if math.isinf(value):
        raise ValueError("float out of range")
    return value


def parse_go_int_base0(text: str) -> int | None:
    """Go `strconv.ParseInt(s, 0, 64)`, then ParseUint: an int, or None when neither parses (uint64 included)."""
    body = text[1:] if text[:1] in "+-" else text
    if not body:
        return None
    base, digits = 10, body
    if body[0] == "0":
        prefix = body[1:2].lower()
        if len(body) >= 3 and prefix in ("b", "o", "x"):
            base, digits = {"b": 2, "o": 8, "x": 16}[prefix], body[2:]
        else:
            base, digits = 8, body[1:]
    allowed = "0123456789abcdef"[:base]
    if not all(c.lower() in allowed for c in digits) or (not digits and base != 8):
        return None
    value = int(digits, base) if digits else 0
    if text[0] == "-":
        value = -value
    if _INT64[0] <= value <= _INT64[1] or (text[0] != "+" and text[0] != "-" and value < 1 << 64):
        return value
    return None


# --- go-yaml v3 scalars (resolve.go), as sops reads a YAML document -------------------------------

_NAMED: dict[str, object] = {"": None, "~": None, "null": None, "Null": None, "NULL": None}
for _spellings, _value in (("true True TRUE", True), ("false False FALSE", False), (".nan .NaN .NAN", float("nan")),
                           (".inf .Inf .INF +.inf +.Inf +.INF", float("inf")), ("-.inf -.Inf -.INF", float("-inf"))):
    _NAMED.update(dict.fromkeys(_spellings.split(), _value))
_HINTED = frozenset("+-0123456789yYnNtTfFoO~.")
_YAML_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_TAGS = {"bool": "!!bool", "int": "!!int", "float": "!!float", "time": "!!timestamp", "str": "!!str"}


def go_yaml_resolve(text: str, tag: str = "") -> object:
    """go-yaml v3 `resolve` + decode into interface{}: the Go value of a plain (or tagged) scalar.

    ValueError for an integer beyond int64 (sops cannot walk uint64) or a tag the text does not fit.
    """
    result: object = text
    if text[:1] in _HINTED or not text:
        if text in _NAMED:
            result = _NAMED[text]
        elif text[0] == ".":
            with contextlib.suppress(ValueError):  # not a float: a string
                result = go_parse_float(text)
        elif text[0] not in "yYnNtTfFoO~":
            stamp = parse_yaml_timestamp(text) if tag in ("", "!!timestamp") else None
            plain = text.replace("_", "")
            number = parse_go_int_base0(plain) if stamp is None else None
            if stamp is not None:
                result = stamp
            elif number is not None:
                if number > (1 << 63) - 1:
                    raise ValueError("an integer beyond int64 (sops: unknown type uint64)")
                result = number
            elif _YAML_FLOAT.fullmatch(plain):
                with contextlib.suppress(ValueError):  # out of range: a string
                    result = go_parse_float(plain)
    if tag and tag != ("!!null" if result is None else _TAGS[value_type(result)]):
        if tag == "!!float" and isinstance(result, int) and not isinstance(result, bool):
            return float(result)
        raise ValueError(f"a {tag} value that go-yaml cannot decode as one")
    return result


# --- MAC bytes ---------------------------------------------------------------------------------


def go_bytes(text: str) -> bytes:
    """A string's bytes as Go holds them: UTF-8, raw bytes kept by surrogateescape, other surrogates U+FFFD."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF and not 0xDC80 <= ord(c) <= 0xDCFF else c
                       for c in text).encode("utf-8", "surrogateescape")


def to_bytes(value: object) -> bytes:
    """sops.go ToBytes: the bytes a value adds to the MAC (and the plaintext it encrypts to)."""
    if isinstance(value, bool):
        return format_bool(value).encode()
    if isinstance(value, int):
        return str(value).encode()
    if isinstance(value, float):
        return format_float(value).encode()
    if isinstance(value, str):
        return go_bytes(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, GoTime):
        return value.marshal_text().encode()
    raise ValueError(f"sops cannot hash a value of type {type(value).__name__}")


def value_type(value: object) -> str:
    """The `type:` sops writes for a value it encrypts (aes/cipher.go Encrypt)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str | bytes | bytearray):
        return "str"
    if isinstance(value, GoTime):
        return "time"
    raise ValueError(f"sops cannot encrypt a value of type {type(value).__name__}")


def canonical_bytes(plaintext: bytes, type: str) -> bytes | None:
    """What sops hashes for a decrypted value: parsed as its type then formatted again (None: a comment).

    ValueError when the plaintext does not parse as its type (sops fails to decrypt the file then).
    """
    if type in ("str", "bytes"):
        return plaintext
    if type == "comment":
        return None
    try:
        text = plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"not a valid {type}") from None
    if type == "int":
        return str(go_atoi(text)).encode()
    if type == "float":
        return format_float(go_parse_float(text)).encode()
    if type == "bool":
        return format_bool(go_parse_bool(text)).encode()
    if type == "time":
        return parse_time(text).marshal_text().encode()
    raise ValueError(f"unknown value type {type!r}")


def mac_hex(leaves: Iterable[bytes], mac_only_encrypted: bool) -> str:
    """The MAC sops stores (before encrypting it): SHA-512 over the leaves' bytes, 128 upper-case hex digits.

    The caller passes the leaves that count: all of them, or only the encrypted ones with
    `mac_only_encrypted`, which also starts the hash with SHA-256("sops").
    """
    digest = hashlib.sha512()
    if mac_only_encrypted:
        digest.update(MAC_ONLY_ENCRYPTED_INIT)
    for leaf in leaves:
        digest.update(leaf)
    return digest.hexdigest().upper()
