"""Ed25519 token-signing keys, their JWKS, and rotation without logging anyone out.

Keys live in the key directory: one PEM per key and ``keys.json`` naming the active one. Rotation adds
a new key and makes it active; older keys keep verifying (and stay in the JWKS) until ``prune`` removes
them after the longest token lifetime. Workers share the directory and re-read it when they meet a
``kid`` they do not know, so a rotation on one machine reaches every worker without a restart.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MANIFEST = "keys.json"
_RELOAD_INTERVAL_S = 1.0


class KeyStoreError(RuntimeError):
    pass


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey
    created_at: datetime
    demo: bool

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    def public_raw(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def jwk(self) -> dict[str, str]:
        x = base64.urlsafe_b64encode(self.public_raw()).rstrip(b"=").decode()
        return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA", "use": "sig"}


def _write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    tmp = path.with_suffix(path.suffix + f".{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _read_manifest(key_dir: Path) -> dict[str, Any]:
    path = key_dir / MANIFEST
    if not path.exists():
        return {"active": None, "keys": []}
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def rotate(key_dir: Path, *, demo: bool = False, now: datetime | None = None) -> str:
    """Create a new signing key and make it the active one; returns its kid."""
    key_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(key_dir, 0o700)
    now = now or datetime.now(UTC)
    kid = now.strftime("%Y%m%d") + "-" + secrets.token_hex(4)
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_atomic(key_dir / f"ed25519-{kid}.pem", pem)
    manifest = _read_manifest(key_dir)
    for entry in manifest["keys"]:
        if entry["kid"] == manifest["active"]:
            entry["retired_at"] = now.isoformat()
    manifest["keys"].append({"kid": kid, "created_at": now.isoformat(), "retired_at": None, "demo": demo})
    manifest["active"] = kid
    _write_atomic(key_dir / MANIFEST, json.dumps(manifest, indent=2).encode())
    return kid


def prune(key_dir: Path, *, keep_for: timedelta, now: datetime | None = None) -> list[str]:
    """Drop keys retired longer ago than ``keep_for`` (the longest token lifetime); returns their kids."""
    now = now or datetime.now(UTC)
    manifest = _read_manifest(key_dir)
    kept, dropped = [], []
    for entry in manifest["keys"]:
        retired = entry.get("retired_at")
        if (
            retired
            and datetime.fromisoformat(retired) + keep_for < now
            and entry["kid"] != manifest["active"]
        ):
            dropped.append(entry["kid"])
        else:
            kept.append(entry)
    manifest["keys"] = kept
    _write_atomic(key_dir / MANIFEST, json.dumps(manifest, indent=2).encode())
    for kid in dropped:
        (key_dir / f"ed25519-{kid}.pem").unlink(missing_ok=True)
    return dropped


class KeyRing:
    def __init__(self, key_dir: Path) -> None:
        self.key_dir = key_dir
        self._keys: dict[str, SigningKey] = {}
        self._active: str | None = None
        self._mtime = -1.0
        self._checked_at = 0.0
        self.reload()

    @classmethod
    def open(cls, key_dir: Path, *, allow_demo: bool) -> KeyRing:
        """Open the key ring; outside production a missing one is created and marked as demo keys."""
        if not (key_dir / MANIFEST).exists():
            if not allow_demo:
                raise KeyStoreError(f"no signing keys in {key_dir}: run `yibao keys rotate` first")
            rotate(key_dir, demo=True)
        ring = cls(key_dir)
        if not allow_demo and ring.active.demo:
            raise KeyStoreError("the active signing key is a demo key: run `yibao keys rotate`")
        return ring

    def reload(self) -> None:
        path = self.key_dir / MANIFEST
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError as exc:
            raise KeyStoreError(f"no key manifest at {path}") from exc
        if mtime == self._mtime:
            return
        manifest = _read_manifest(self.key_dir)
        keys: dict[str, SigningKey] = {}
        for entry in manifest["keys"]:
            kid = entry["kid"]
            known = self._keys.get(kid)
            if known is None:
                pem = (self.key_dir / f"ed25519-{kid}.pem").read_bytes()
                private_key = serialization.load_pem_private_key(pem, password=None)
                if not isinstance(private_key, Ed25519PrivateKey):
                    raise KeyStoreError(f"key {kid} is not an Ed25519 key")
                known = SigningKey(
                    kid, private_key, datetime.fromisoformat(entry["created_at"]), entry["demo"]
                )
            keys[kid] = known
        if manifest["active"] not in keys:
            raise KeyStoreError("the key manifest names no active key")
        self._keys, self._active, self._mtime = keys, manifest["active"], mtime

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        if now - self._checked_at >= _RELOAD_INTERVAL_S:
            self._checked_at = now
            self.reload()

    @property
    def active(self) -> SigningKey:
        self._maybe_reload()
        assert self._active is not None
        return self._keys[self._active]

    def public_key(self, kid: str) -> Ed25519PublicKey | None:
        key = self._keys.get(kid)
        if key is None:
            # Maybe another machine just rotated. A stat() is cheap, and the manifest is re-read only
            # when it changed, so unknown kids cannot make us do real work.
            self.reload()
            key = self._keys.get(kid)
        return key.public_key if key else None

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        self._maybe_reload()
        return {"keys": [key.jwk() for key in self._keys.values()]}
