"""The terminal's own Ed25519 key: made once at enrolment, kept in the home as ``terminal.key``
(PKCS#8 PEM, file mode 0600, written to a temporary file, synced and renamed, so a power cut leaves
either no key or a whole one). It signs every client assertion; the server holds only its public half.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from terminal.errors import NotReady, StorageError
from terminal.store import _storage_error

KEY_FILE = "terminal.key"


def key_path(home: Path) -> Path:
    return home / KEY_FILE


def load_key(home: Path) -> Ed25519PrivateKey:
    path = key_path(home)
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            # Readable by others: tighten it rather than refuse the clinic its work, and say so.
            os.chmod(path, 0o600)
            print(f"警告：私钥文件 {path} 的权限过宽（{mode:o}），已改为 600。", file=sys.stderr)
        data = path.read_bytes()
    except FileNotFoundError:
        raise NotReady("找不到本终端的私钥文件，请重新登记。", reason="no_key", path=str(path)) from None
    except OSError as exc:
        raise _storage_error(exc, home) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None  # empty, truncated or not a key at all: the same answer as a key of the wrong kind
    if not isinstance(key, Ed25519PrivateKey):
        raise StorageError(
            "本终端的私钥文件已损坏或不是 Ed25519 私钥：终端无法向服务器证明身份。请勿删除该目录，并联系运维人员。",
            reason="bad_key",
            path=str(path),
        )
    return key


def load_or_create_key(home: Path) -> Ed25519PrivateKey:
    """The home's key, made now if there is none (an interrupted enrolment keeps the key it made)."""
    if key_path(home).exists():
        return load_key(home)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = key_path(home)
    tmp = path.with_suffix(".tmp")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        directory = os.open(home, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _storage_error(exc, home) from None
    return key
