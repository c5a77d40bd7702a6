"""Base45 (RFC 9285): bytes as text in the QR alphanumeric alphabet.

Two bytes become three characters (one byte at the end becomes two), so a QR code in alphanumeric
mode (5.5 bits per character) carries 8 bits per 1.5 characters: ~3% denser than byte mode and, unlike
base64, uses only characters every scanner returns unchanged. The decoder is strict (RFC 9285 §6:
values out of range and characters outside the alphabet are errors), which makes the encoding a
bijection: two different valid strings never decode to the same bytes.
"""

from __future__ import annotations

import struct

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:"
_INVALID = 0xFF
# ASCII code -> digit value, _INVALID for characters outside the alphabet.
_DECODE = bytes(ALPHABET.index(chr(i)) if chr(i) in ALPHABET else _INVALID for i in range(256))


class Base45Error(ValueError):
    """The text is not valid Base45."""


def b45encode(data: bytes) -> str:
    out: list[str] = []
    for i in range(0, len(data) - 1, 2):
        n = data[i] * 256 + data[i + 1]
        e, n = divmod(n, 45 * 45)
        d, c = divmod(n, 45)
        out += (ALPHABET[c], ALPHABET[d], ALPHABET[e])
    if len(data) % 2:
        d, c = divmod(data[-1], 45)
        out += (ALPHABET[c], ALPHABET[d])
    return "".join(out)


def b45decode(text: str) -> bytes:
    # Table lookups and one struct.pack instead of a per-character loop: decoding is on the
    # verifier's hot path (about half the non-cryptographic cost of a verification).
    if len(text) % 3 == 1:
        raise Base45Error("length leaves a single character")
    try:
        values = text.encode("ascii").translate(_DECODE)
    except UnicodeEncodeError:
        raise Base45Error("character outside the Base45 alphabet") from None
    if _INVALID in values:
        raise Base45Error("character outside the Base45 alphabet")
    full = len(values) - len(values) % 3
    words = [
        c + d * 45 + e * 2025
        for c, d, e in zip(values[0:full:3], values[1:full:3], values[2:full:3], strict=True)
    ]
    if words and max(words) > 0xFFFF:
        raise Base45Error("triple out of range")
    out = struct.pack(f">{len(words)}H", *words)
    if full != len(values):
        n = values[full] + values[full + 1] * 45
        if n > 0xFF:
            raise Base45Error("final pair out of range")
        out += bytes((n,))
    return out
