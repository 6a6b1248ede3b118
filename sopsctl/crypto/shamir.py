"""Shamir secret sharing over GF(2^8) (AES polynomial 0x11B), share for share compatible with sops (pure)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

MAX_PARTS = 255  # x is one byte and 0 is reserved: evaluating there gives the secret itself
_AES_POLYNOMIAL = 0x11B
_GENERATOR = 0x03  # a primitive element of GF(2^8) mod 0x11B: its powers reach all 255 non-zero bytes


def _tables() -> tuple[list[int], list[int]]:
    """exp[i] = 3^i (doubled in length so a sum of two logs needs no reduction) and log, its inverse."""
    exp = [0] * 510
    log = [0] * 256
    value = 1
    for power in range(255):
        exp[power] = exp[power + 255] = value
        log[value] = power
        # value * 3 = value * 2 + value, reducing by the polynomial when the product overflows a byte
        doubled = value << 1
        if doubled & 0x100:
            doubled ^= _AES_POLYNOMIAL
        value = doubled ^ value
    return exp, log


_EXP, _LOG = _tables()


def _mul(a: int, b: int) -> int:
    # Table look-ups leak timing in theory; CPython offers nothing constant-time anyway, and the
    # shares are already in memory in the clear by the time they are split or combined.
    if a == 0 or b == 0:
        return 0
    return _EXP[_LOG[a] + _LOG[b]]


def _div(a: int, b: int) -> int:
    if b == 0:
        raise ZeroDivisionError("division by zero in GF(2^8)")
    if a == 0:
        return 0
    return _EXP[_LOG[a] - _LOG[b] + 255]


def _evaluate(coefficients: Sequence[int], x: int) -> int:
    """Horner's rule; coefficients[0] is the constant term (the secret byte)."""
    result = 0
    for coefficient in reversed(coefficients):
        result = _mul(result, x) ^ coefficient
    return result


def split(
    secret: bytes, parts: int, threshold: int, randbytes: Callable[[int], bytes] = os.urandom
) -> list[bytes]:
    """`parts` shares of which any `threshold` give `secret` back.

    Share i (0-based) is one y byte per secret byte followed by its x byte, i + 1: sops 3.11
    numbers groups this way (upstream Vault picks random x values; combine accepts either).
    """
    if not isinstance(secret, bytes | bytearray) or not secret:
        raise ValueError("cannot split an empty secret")
    if threshold < 2:
        raise ValueError(f"threshold must be at least 2, got {threshold}")
    if parts < threshold:
        raise ValueError(f"parts ({parts}) cannot be less than the threshold ({threshold})")
    if parts > MAX_PARTS:
        raise ValueError(f"parts cannot exceed {MAX_PARTS}, got {parts}")
    degree = threshold - 1
    needed = len(secret) * degree
    randomness = randbytes(needed)
    if len(randomness) != needed:
        raise ValueError(f"randbytes({needed}) returned {len(randomness)} bytes")
    shares = [bytearray(len(secret) + 1) for _ in range(parts)]
    for index, byte in enumerate(secret):
        coefficients = [byte, *randomness[index * degree : (index + 1) * degree]]
        for part, share in enumerate(shares):
            share[index] = _evaluate(coefficients, part + 1)
    for part, share in enumerate(shares):
        share[-1] = part + 1
    return [bytes(share) for share in shares]


def combine(shares: Sequence[bytes]) -> bytes:
    """The secret at x = 0 by Lagrange interpolation over every share given (x is each last byte).

    With fewer shares than the split's threshold this returns a wrong value, not an error:
    nothing in a share says how many are needed.
    """
    if len(shares) < 2:
        raise ValueError("at least two shares are needed to combine")
    length = len(shares[0])
    if length < 2:
        raise ValueError("a share has at least two bytes (one y value and its x)")
    if any(len(share) != length for share in shares):
        raise ValueError("all shares must have the same length")
    xs = [share[-1] for share in shares]
    if len(set(xs)) != len(xs):
        raise ValueError("two shares have the same x coordinate (a share given twice?)")
    # The Lagrange basis at 0 depends only on the x values: compute it once for every byte.
    basis = []
    for i, xi in enumerate(xs):
        weight = 1
        for j, xj in enumerate(xs):
            if i != j:
                weight = _mul(weight, _div(xj, xi ^ xj))  # (0 - xj) / (xi - xj); minus is xor
        basis.append(weight)
    secret = bytearray(length - 1)
    for index in range(length - 1):
        value = 0
        for share, weight in zip(shares, basis, strict=True):
            value ^= _mul(share[index], weight)
        secret[index] = value
    return bytes(secret)
