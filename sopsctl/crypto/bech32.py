"""BIP-173 bech32 (constant 1, not bech32m, no length limit) as age uses it for keys and identities."""

from __future__ import annotations

from ..errors import KeyFormatError

CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_INDEX = {char: value for value, char in enumerate(CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_CHECKSUM_LENGTH = 6
_BECH32_CONSTANT = 1  # bech32m would be 0x2BC830A3; age never switched


def _polymod(values: list[int]) -> int:
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for bit, generator in enumerate(_GENERATOR):
            if (top >> bit) & 1:
                checksum ^= generator
    return checksum


def _expand_hrp(hrp: str) -> list[int]:
    # The checksum covers the lower-case HRP, so "AGE-SECRET-KEY-1…" and its lower-case twin agree.
    lower = hrp.lower()
    return [ord(char) >> 5 for char in lower] + [0] + [ord(char) & 31 for char in lower]


def _checksum(hrp: str, values: list[int]) -> list[int]:
    polymod = _polymod(_expand_hrp(hrp) + values + [0] * _CHECKSUM_LENGTH) ^ _BECH32_CONSTANT
    return [(polymod >> 5 * (5 - i)) & 31 for i in range(_CHECKSUM_LENGTH)]


def _to_5bit(data: bytes) -> list[int]:
    accumulator = bits = 0
    values: list[int] = []
    for byte in data:
        accumulator = (accumulator << 8) | byte
        bits += 8
        while bits >= 5:
            bits -= 5
            values.append((accumulator >> bits) & 31)
    if bits:
        values.append((accumulator << (5 - bits)) & 31)  # zero padding, as BIP-173 encoders do
    return values


def _from_5bit(values: list[int]) -> bytes:
    accumulator = bits = 0
    out = bytearray()
    for value in values:
        accumulator = (accumulator << 5) | value
        bits += 5
        if bits >= 8:
            bits -= 8
            out.append((accumulator >> bits) & 0xFF)
    # Leftover bits are padding: fewer than 5 and all zero, else another encoder made this string.
    if bits >= 5 or accumulator & ((1 << bits) - 1):
        raise KeyFormatError("invalid padding in the data part (not a whole number of bytes)")
    return bytes(out)


def _check_hrp(hrp: str) -> None:
    if not hrp:
        raise KeyFormatError("empty human-readable part before the '1' separator")
    for position, char in enumerate(hrp):
        if not 33 <= ord(char) <= 126:
            raise KeyFormatError(
                f"invalid character {char!r} at position {position} of the human-readable part"
            )


def encode(hrp: str, data: bytes) -> str:
    """`hrp` + "1" + data + checksum; an upper-case `hrp` gives an all upper-case string (age identities).

    A bad `hrp` is a programming error here (callers pass constants), so it raises ValueError.
    """
    try:
        _check_hrp(hrp)
    except KeyFormatError as exc:
        raise ValueError(f"bech32: {exc}") from None
    if hrp.lower() != hrp and hrp.upper() != hrp:
        raise ValueError(f"bech32: mixed-case human-readable part {hrp!r}")
    values = _to_5bit(data)
    lower_hrp = hrp.lower()
    text = lower_hrp + "1" + "".join(CHARSET[v] for v in values + _checksum(lower_hrp, values))
    return text if hrp == lower_hrp else text.upper()


def decode(text: str) -> tuple[str, bytes]:
    """Split and verify a bech32 string; returns (lower-case hrp, data bytes) or raises KeyFormatError."""
    if text.lower() != text and text.upper() != text:
        raise KeyFormatError("mixed upper and lower case (a valid key is all one case)")
    separator = text.rfind("1")
    if separator < 0:
        raise KeyFormatError("no '1' separator")
    if separator == 0:
        raise KeyFormatError("empty human-readable part before the '1' separator")
    if len(text) - separator - 1 < _CHECKSUM_LENGTH:
        raise KeyFormatError("too short after the '1' separator to hold a checksum (truncated?)")
    hrp = text[:separator]
    _check_hrp(hrp)
    lower = text.lower()
    values: list[int] = []
    for position, char in enumerate(lower[separator + 1 :], start=separator + 1):
        value = _CHARSET_INDEX.get(char)
        if value is None:
            raise KeyFormatError(f"invalid character {char!r} at position {position}")
        values.append(value)
    if _polymod(_expand_hrp(hrp) + values) != _BECH32_CONSTANT:
        raise KeyFormatError("bad bech32 checksum (a typo, or a truncated or edited copy)")
    return hrp.lower(), _from_5bit(values[:-_CHECKSUM_LENGTH])
