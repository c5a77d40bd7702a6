"""Issuer and device keys as data: raw bytes, base64 and JWK (RFC 8037, OKP/Ed25519).

Terminals receive issuer public keys through sync as JSON, so every key must round-trip through a
plain dict. Key ids (kid) are 4 bytes on the wire and 8 lowercase hex characters in Python and JSON.

Weak keys and signatures (SPEC.md section 7). OpenSSL's Ed25519 verification (what `cryptography`
calls) accepts small-order public keys: with the identity point as the key, R = identity and S = 0
verify for *every* message, so anyone who has seen one offline code of a certificate for such a key
could mint fresh ones. Two levels of checks, with stdlib integer arithmetic only:

- `strict_public_key`, for a key that is accepted once and then trusted (certifying a device key,
  enrolling a terminal, loading issuer keys from a JWKS): the encoding must be canonical, decode to a
  point on the curve, and the point must have prime order L (no small-order component at all, so
  mixed-order keys are refused too). The prime-order check is a scalar multiplication by L in pure
  Python (about a millisecond), affordable because it runs once per key, never per code.
- `weak_point_encoding` and `strict_signature_encoding`, for every signature check on the hot path
  (sub-microsecond): S must be canonical (S < L, no S + L malleability), and R and A must be
  canonical encodings that are not one of the 8 small-order points. A mixed-order device key cannot
  reach a verifier through a certificate issued after these checks, since the issuer refuses it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .format import KID_BYTES, PUBLIC_KEY_BYTES, SIGNATURE_BYTES

PublicKeyLike = Ed25519PublicKey | bytes

# Curve25519 in twisted Edwards form (RFC 8032 section 5.1): -x^2 + y^2 = 1 + d x^2 y^2 over GF(p).
_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493  # order of the base point (prime)
_D = -121665 * pow(121666, -1, _P) % _P
_D2 = 2 * _D % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_Y_MASK = (1 << 255) - 1

# The 8 points of the 8-torsion subgroup, canonically encoded (y little-endian, x's sign in bit 255):
# order 1 (the identity), 2, 4, 4, 8, 8, 8, 8. Tests derive them independently from the arithmetic.
SMALL_ORDER_POINTS: frozenset[bytes] = frozenset(
    bytes.fromhex(h)
    for h in (
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    )
)
# x = 0 with the sign bit set ("negative zero"): y = 1 and y = -1 have x = 0 only, so these two name
# the small-order points 0100..00 and ecff..7f non-canonically. With y < p, they are the only
# non-canonical encodings; all others (y >= p) are caught by the range check.
_NEGATIVE_ZERO_X = frozenset(
    bytes.fromhex(h)
    for h in (
        "0100000000000000000000000000000000000000000000000000000000000080",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    )
)
_REFUSED_ENCODINGS = SMALL_ORDER_POINTS | _NEGATIVE_ZERO_X


class WeakPublicKeyError(ValueError):
    """32 bytes that are no safe Ed25519 public key: non-canonical, not on the curve, or not of
    prime order. (A key of the wrong length is a plain ValueError.)"""


_Point = tuple[int, int, int, int]  # extended coordinates (X, Y, Z, T), x = X/Z, y = Y/Z, xy = T/Z
_IDENTITY: _Point = (0, 1, 1, 0)


def _point_add(p: _Point, q: _Point) -> _Point:
    """Complete addition on the curve (also right for doubling), RFC 8032 section 5.1.4."""
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = t1 * _D2 * t2 % _P
    d = 2 * z1 * z2 % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _scalar_mult(k: int, p: _Point) -> _Point:
    q = _IDENTITY
    while k:
        if k & 1:
            q = _point_add(q, p)
        p = _point_add(p, p)
        k >>= 1
    return q


def _is_identity(p: _Point) -> bool:
    x, y, z, _ = p
    return x % _P == 0 and (y - z) % _P == 0


def _decode_point(raw: bytes) -> _Point:
    """RFC 8032 section 5.1.3 decoding, strict: raises WeakPublicKeyError for y >= p, for x = 0
    with the sign bit set, and for a y with no x on the curve."""
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError("an Ed25519 point is 32 bytes")
    n = int.from_bytes(raw, "little")
    y, sign = n & _Y_MASK, n >> 255
    if y >= _P:
        raise WeakPublicKeyError("non-canonical point encoding (y >= p)")
    x2 = (y * y - 1) * pow(_D * y * y + 1, -1, _P) % _P
    if x2 == 0:
        if sign:
            raise WeakPublicKeyError("non-canonical point encoding (x = 0 with the sign bit set)")
        return (0, y, 1, 0)
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P:
        raise WeakPublicKeyError("not a point on the curve")
    if x & 1 != sign:
        x = _P - x
    return (x, y, 1, x * y % _P)


def weak_point_encoding(raw: bytes) -> bool:
    """Cheap check for a signature's R or a public key A at verification time: True when `raw` is
    not 32 bytes, is a non-canonical encoding (y >= p, or x = 0 with the sign bit set) or one of the
    8 small-order points. It does not decode the point (OpenSSL refuses bytes that are not a point)
    and does not see mixed-order points (`strict_public_key` refuses those, once per key)."""
    return (
        len(raw) != PUBLIC_KEY_BYTES
        or raw in _REFUSED_ENCODINGS
        or (int.from_bytes(raw, "little") & _Y_MASK) >= _P
    )


def strict_signature_encoding(signature: bytes) -> bool:
    """Cheap check of a signature before the library verifies it: 64 bytes, S canonical (S < L, so
    no S + L malleability) and R neither non-canonical nor of small order."""
    return (
        len(signature) == SIGNATURE_BYTES
        and int.from_bytes(signature[32:], "little") < _L
        and not weak_point_encoding(signature[:32])
    )


def strict_public_key(raw: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key that is safe to trust, or ValueError: 32 bytes, a canonical encoding of
    a point on the curve, of prime order L (small-order and mixed-order points are refused). Weak
    32-byte keys raise the subclass WeakPublicKeyError, wrong lengths a plain ValueError.

    For keys accepted once (device certification, terminal enrolment, issuer keys from a JWKS); it
    costs a scalar multiplication in pure Python (about a millisecond), too much per verification:
    verifiers use `weak_point_encoding` instead.
    """
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise ValueError("an Ed25519 public key is 32 bytes")
    raw = bytes(raw)
    if len(raw) != PUBLIC_KEY_BYTES:
        raise ValueError("an Ed25519 public key is 32 bytes")
    point = _decode_point(raw)
    if raw in SMALL_ORDER_POINTS:
        raise WeakPublicKeyError("a small-order point is not a usable public key")
    if not _is_identity(_scalar_mult(_L, point)):
        raise WeakPublicKeyError("the public key has a small-order component (not of prime order)")
    return Ed25519PublicKey.from_public_bytes(raw)


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
    """A key received as text (`certifyDevice(publicKey)`, a lost-device report): strictly checked."""
    return strict_public_key(_b64_decode(text))


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
    """(kid, key) from a JWK; raises ValueError for anything but a strict (`strict_public_key`)
    Ed25519 key with a valid kid."""
    if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
        raise ValueError("not an Ed25519 OKP key")
    if jwk.get("alg", "EdDSA") != "EdDSA":
        raise ValueError("alg must be EdDSA")
    key = strict_public_key(_b64_decode(jwk.get("x", "")))
    kid = jwk.get("kid")
    if kid is None:
        kid = derive_kid(key)
    kid_to_bytes(kid)
    return kid, key


def issuer_keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """{"keys": [jwk, ...]} → {kid: key}, skipping keys that are not Ed25519 (a JWKS may mix kinds)
    and Ed25519 keys that `strict_public_key` refuses."""
    out: dict[str, Ed25519PublicKey] = {}
    for jwk in jwks.get("keys", []):
        try:
            kid, key = public_key_from_jwk(jwk)
        except (ValueError, TypeError, AttributeError):
            continue
        out[kid] = key
    return out
