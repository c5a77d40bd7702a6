"""The data key: encrypts ID numbers at rest and keys the hashes and cursor MACs derived from it."""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

DATA_KEY_FILE = "data.key"


def _derive(master: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(master)


@dataclass(frozen=True)
class DataKeys:
    id_number_encryption: bytes
    id_number_lookup: bytes
    cursor_mac: bytes
    bank_account_encryption: bytes

    @classmethod
    def from_master(cls, master: bytes) -> DataKeys:
        if len(master) != 32:
            raise ValueError("the data key must be 32 bytes")
        return cls(
            id_number_encryption=_derive(master, "yibao/id-number/aes-gcm"),
            id_number_lookup=_derive(master, "yibao/id-number/hmac"),
            cursor_mac=_derive(master, "yibao/cursor/hmac"),
            bank_account_encryption=_derive(master, "yibao/bank-account/aes-gcm"),
        )

    @classmethod
    def load(cls, key_dir: Path, *, explicit: str | None, allow_create: bool) -> DataKeys:
        """From YIBAO_DATA_KEY (base64) if set, else from the key directory (created outside production)."""
        if explicit:
            return cls.from_master(base64.b64decode(explicit))
        path = key_dir / DATA_KEY_FILE
        if not path.exists():
            if not allow_create:
                raise RuntimeError(f"no data key at {path} and YIBAO_DATA_KEY is not set")
            key_dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another worker created it first; read theirs
            else:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(base64.b64encode(secrets.token_bytes(32)))
        return cls.from_master(base64.b64decode(path.read_bytes()))
