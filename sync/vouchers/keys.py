"""Issuer and device keys as data: raw bytes, base64 and JWK (RFC 8037, OKP/Ed25519).

Terminals receive issuer public keys through sync as JSON, so every key must round-trip through a
plain dict. Key ids (kid) are 4 bytes on the wire and 8 lowercase hex characters in Python and JSON.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .format import KID_BYTES, PUBLIC_KEY_BYTES

PublicKeyLike = Ed25519PublicKey | bytes


def derive_kid(public_key: PublicKeyLike) -> str:
    """The recommended kid: the first 4 bytes of SHA-256 over the raw public key, as hex.

    Deriving it (instead of numbering keys) needs no coordination between workers and makes a kid
    collision between two live keys astronomically unlikely; the verifier still checks the signature.
    """
    return hashlib.sha256(public_key_raw(public_key)).digest()[:KID_BYTES].hex()


def kid_to_bytes(kid: str) -> bytes:
    try:
        raw = bytes.fromhex(kid)
    except (ValueError, TypeError):
        raise ValueError(f"kid must be {KID_BYTES * 2} hex characters") from None
    if len(raw) != KID_BYTES or kid != raw.hex():
        raise ValueError(f"kid must be {KID_BYTES * 2} lowercase hex characters")
    return raw


def public_key_raw(key: PublicKeyLike) -> bytes:
    if isinstance(key, Ed25519PublicKey):
        return key.public_bytes_raw()
    raw = bytes(key)
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return raw


def load_public_key(key: PublicKeyLike) -> Ed25519PublicKey:
    if isinstance(key, Ed25519PublicKey):
        return key
    return Ed25519PublicKey.from_public_bytes(public_key_raw(key))


def private_key_from_seed(seed: bytes) -> Ed25519PrivateKey:
    """RFC 8032 key from a 32-byte seed (what the test vectors and the JS port use)."""
    return Ed25519PrivateKey.from_private_bytes(seed)


def _b64url_encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64_decode(text: str) -> bytes:
    """Accepts standard or URL-safe base64, padded or not (keys come from JSON written by anyone)."""
    if not isinstance(text, str):
        raise ValueError("base64 text expected")
    s = text.strip().replace("-", "+").replace("_", "/")
    s += "=" * (-len(s) % 4)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("invalid base64") from None


def public_key_to_b64(key: PublicKeyLike) -> str:
    """Raw public key as unpadded base64url (the form `certifyDevice(publicKey)` takes)."""
    return _b64url_encode(public_key_raw(key))


def public_key_from_b64(text: str) -> Ed25519PublicKey:
    return load_public_key(_b64_decode(text))


def public_key_to_jwk(key: PublicKeyLike, kid: str | None = None) -> dict[str, str]:
    """An RFC 8037 JWK; the kid defaults to `derive_kid`."""
    raw = public_key_raw(key)
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "alg": "EdDSA",
        "use": "sig",
        "kid": kid if kid is not None else derive_kid(raw),
        "x": _b64url_encode(raw),
    }


def public_key_from_jwk(jwk: Mapping[str, Any]) -> tuple[str, Ed25519PublicKey]:
    """(kid, key) from a JWK; raises ValueError for anything but an Ed25519 key with a valid kid."""
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError("not an Ed25519 OKP key")
    if jwk.get("alg", "EdDSA") != "EdDSA":
        raise ValueError("alg must be EdDSA")
    key = load_public_key(_b64_decode(jwk.get("x", "")))
    kid = jwk.get("kid")
    if kid is None:
        kid = derive_kid(key)
    kid_to_bytes(kid)
    return kid, key


def issuer_keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """{"keys": [jwk, ...]} → {kid: key}, skipping keys that are not Ed25519 (a JWKS may mix kinds)."""
    out: dict[str, Ed25519PublicKey] = {}
    for jwk in jwks.get("keys", []):
        try:
            kid, key = public_key_from_jwk(jwk)
        except (ValueError, TypeError, AttributeError):
            continue
        out[kid] = key
    return out
