"""Payout bank-account numbers: stored only as AES-GCM ciphertext, answered only masked."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12
_AAD = b"bank-account"


def mask(number: str) -> str:
    """Only the last four digits: ************1234."""
    return "*" * max(len(number) - 4, 4) + number[-4:]


class BankAccountVault:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def encrypt(self, number: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, number.encode(), _AAD)

    def decrypt(self, blob: bytes) -> str:
        return self._aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], _AAD).decode()
