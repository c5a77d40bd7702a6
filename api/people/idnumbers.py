"""Resident ID numbers (居民身份证号码, GB 11643-1999): validation, masking, encryption at rest.

An ID number is sensitive personal information under PIPL: it is stored only as AES-GCM ciphertext,
found through a keyed hash, and never leaves the server unmasked.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from datetime import date

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from api.secrets import DataKeys

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"
_PATTERN = re.compile(r"^\d{17}[\dX]$")
_NONCE_BYTES = 12


class InvalidIdNumber(ValueError):
    pass


def check_digit(first17: str) -> str:
    return _CHECK[sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True)) % 11]


def normalize(id_number: str) -> str:
    """Upper-cases the check letter and validates format, birth date and check digit."""
    value = id_number.strip().upper()
    if not _PATTERN.match(value):
        raise InvalidIdNumber("an ID number has 17 digits and a digit or X")
    try:
        date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError as exc:
        raise InvalidIdNumber("the birth date in the ID number is not a date") from exc
    if check_digit(value[:17]) != value[17]:
        raise InvalidIdNumber("the ID number's check digit does not match")
    return value


def birth_date(id_number: str) -> date:
    return date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))


def gender(id_number: str) -> str:
    return "M" if int(id_number[16]) % 2 else "F"


def mask(id_number: str) -> str:
    """Keeps the region prefix and the last two characters: 3404**************2X."""
    return id_number[:4] + "*" * (len(id_number) - 6) + id_number[-2:]


class IdNumberVault:
    def __init__(self, keys: DataKeys) -> None:
        self._aead = AESGCM(keys.id_number_encryption)
        self._lookup_key = keys.id_number_lookup

    def encrypt(self, id_number: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, id_number.encode(), b"id-number")

    def decrypt(self, blob: bytes) -> str:
        return self._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], b"id-number").decode()

    def lookup_hash(self, id_number: str) -> str:
        return hmac.new(self._lookup_key, normalize(id_number).encode(), hashlib.sha256).hexdigest()
