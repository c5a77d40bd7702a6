"""Ed25519 edge cases (issue 8): small-order and non-canonical keys and R, malleable S, published vectors.

OpenSSL's verification (what `cryptography` calls) is cofactorless and accepts small-order public
keys: with the identity point as the device key, R = identity and S = 0 verify for any message, so a
certificate for such a key would let anyone who has seen one offline code mint fresh ones. The
checks in sync.vouchers.keys refuse these; every test below builds the attack and checks, with an
independent reference implementation of the curve arithmetic (affine coordinates, checked against
the library first), that the forgery really satisfies the verification equation [S]B = R + [k]A.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.vouchers import (
    OFFLINE_PREFIX,
    ONLINE_PREFIX,
    Reason,
    RevocationList,
    compose_offline_code,
    derive_kid,
    issue_device_certificate,
    issue_online_code,
    issuer_keys_from_jwks,
    public_key_from_b64,
    public_key_from_jwk,
    public_key_to_b64,
    public_key_to_jwk,
    verify_code,
)
from sync.vouchers.format import CTX_CERT, CTX_OFFLINE, CTX_ONLINE, from_text, to_text
from sync.vouchers.keys import (
    SMALL_ORDER_POINTS,
    WeakPublicKeyError,
    strict_public_key,
    strict_signature_encoding,
    weak_point_encoding,
)
from sync.vouchers.verify import signature_ok

# --- reference arithmetic, independent of sync.vouchers.keys (affine twisted Edwards, a = -1) ---

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, -1, P) % P
SQRT_M1 = pow(2, (P - 1) // 4, P)
Point = tuple[int, int]
ZERO: Point = (0, 1)


def add(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    return ((x1 * y2 + x2 * y1) * pow(1 + t, -1, P) % P, (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P)


def mul(k: int, a: Point) -> Point:
    out = ZERO
    while k:
        if k & 1:
            out = add(out, a)
        a = add(a, a)
        k >>= 1
    return out


def neg(a: Point) -> Point:
    return (-a[0] % P, a[1])


def decode_lenient(raw: bytes) -> Point | None:
    """Decoding as a lax library does: y taken mod p, a sign bit on x = 0 ignored."""
    n = int.from_bytes(raw, "little")
    y, sign = (n & ((1 << 255) - 1)) % P, n >> 255
    x2 = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    x = pow(x2, (P + 3) // 8, P)
    if (x * x - x2) % P:
        x = x * SQRT_M1 % P
    if (x * x - x2) % P:
        return None
    if x and x & 1 != sign:
        x = P - x
    return (x, y)


def encode(a: Point) -> bytes:
    return (a[1] | ((a[0] & 1) << 255)).to_bytes(32, "little")


def is_canonical(raw: bytes) -> bool:
    point = decode_lenient(raw)
    return point is not None and encode(point) == raw


def order_kind(raw: bytes) -> str:
    point = decode_lenient(raw)
    assert point is not None
    if mul(8, point) == ZERO:
        return "small"
    return "prime" if mul(L, point) == ZERO else "mixed"


B: Point = decode_lenient((4 * pow(5, -1, P) % P).to_bytes(32, "little")) or ZERO


def challenge(r: bytes, a: bytes, message: bytes) -> int:
    return int.from_bytes(hashlib.sha512(r + a + message).digest(), "little") % L


def equation_holds(a: bytes, signature: bytes, message: bytes) -> bool:
    """The cofactorless RFC 8032 check [S]B = R + [k]A on the points as encoded (S unreduced)."""
    point_a, point_r = decode_lenient(a), decode_lenient(signature[:32])
    assert point_a is not None and point_r is not None
    s = int.from_bytes(signature[32:], "little")
    return mul(s, B) == add(point_r, mul(challenge(signature[:32], a, message), point_a))


def torsion_generator() -> Point:
    """An order-8 point found from [L]P of points hashed to the curve (no list of known points)."""
    for i in range(100):
        point = decode_lenient(hashlib.sha256(b"torsion %d" % i).digest())
        if point is None:
            continue
        t = mul(L, point)  # kills the prime-order part, keeps the 8-torsion part
        if mul(4, t) != ZERO:
            return t
    raise AssertionError("no order-8 point found")


TORSION = [mul(k, torsion_generator()) for k in range(8)]
IDENTITY = encode(ZERO)
NON_CANONICAL_SMALL_ORDER = [
    bytes.fromhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),  # y = p ≡ 0
    bytes.fromhex("edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),  # y = p, x < 0
    bytes.fromhex("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),  # y = p + 1 ≡ 1
    bytes.fromhex("eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),  # y = p + 1, "-0"
    bytes.fromhex("0100000000000000000000000000000000000000000000000000000000000080"),  # identity, x = -0
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),  # y = -1, x = -0
]

# --- the voucher world ---

NOW = 1_780_000_000
ISSUER = Ed25519PrivateKey.generate()
KID = derive_kid(ISSUER.public_key())
KEYS = {KID: ISSUER.public_key()}
PERSON = bytes.fromhex("0011223344556677")
EMPTY = RevocationList()


def verdict(code: str, keys: Mapping[str, Ed25519PublicKey | bytes] | None = None) -> Reason | None:
    return verify_code(code, issuer_keys=keys or KEYS, revocations=EMPTY, now=NOW).reason


def offline_code(certificate: bytes, time: int, counter: int, signature: bytes) -> str:
    signed = certificate + time.to_bytes(4, "big") + counter.to_bytes(2, "big")
    return to_text(OFFLINE_PREFIX, signed + signature)


def forge_with_small_order_key(device_key: bytes, attempts: int = 400) -> Iterator[tuple[str, bytes, bytes]]:
    """Offline codes for a certificate of a small-order device key, signed without any secret: S = 0
    and R a small-order point with R = -[k]A, found by trying counters. Yields (code, R || S, message)."""
    certificate = issue_device_certificate(ISSUER, KID, device_key, PERSON, None, NOW - 3600)
    point_a = decode_lenient(device_key)
    assert point_a is not None
    for counter in range(attempts):
        signed = certificate + NOW.to_bytes(4, "big") + counter.to_bytes(2, "big")
        for r in TORSION:
            r_raw = encode(r)
            if add(r, mul(challenge(r_raw, device_key, CTX_OFFLINE + signed) % 8, point_a)) == ZERO:
                yield (
                    offline_code(certificate, NOW, counter, r_raw + bytes(32)),
                    r_raw + bytes(32),
                    CTX_OFFLINE + signed,
                )
                break


# --- the tests ---


def test_reference_arithmetic_agrees_with_the_library() -> None:
    for seed in (bytes(32), bytes(range(32)), hashlib.sha256(b"seed").digest()):
        h = hashlib.sha512(seed).digest()
        a = (int.from_bytes(h[:32], "little") & ((1 << 254) - 8)) | (1 << 254)
        public = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
        assert encode(mul(a, B)) == public
        signature = Ed25519PrivateKey.from_private_bytes(seed).sign(b"message")
        assert equation_holds(public, signature, b"message")
    assert mul(L, B) == ZERO and B != ZERO


def test_the_small_order_points_are_the_eight_torsion_points() -> None:
    encodings = {encode(t) for t in TORSION}
    assert len(encodings) == 8 and encodings == SMALL_ORDER_POINTS
    assert sorted(next(n for n in (1, 2, 4, 8) if mul(n, t) == ZERO) for t in TORSION) == [
        1,
        2,
        4,
        4,
        8,
        8,
        8,
        8,
    ]
    for raw in SMALL_ORDER_POINTS:
        assert weak_point_encoding(raw)
        with pytest.raises(WeakPublicKeyError):
            strict_public_key(raw)


def test_non_canonical_encodings_are_refused() -> None:
    # Every y in [p, 2^255) with either sign, whether or not it decodes to a point, ...
    for y in range(P, 2**255):
        for sign in (0, 1):
            raw = (y | (sign << 255)).to_bytes(32, "little")
            assert not is_canonical(raw) and weak_point_encoding(raw)
            with pytest.raises(WeakPublicKeyError):
                strict_public_key(raw)
    # ... among them the alternative encodings of small-order points, and "negative zero" x.
    for raw in NON_CANONICAL_SMALL_ORDER:
        point = decode_lenient(raw)
        assert point is not None and encode(point) in SMALL_ORDER_POINTS and not is_canonical(raw)
        assert weak_point_encoding(raw)
        with pytest.raises(WeakPublicKeyError):
            strict_public_key(raw)


def test_mixed_order_keys_are_refused_when_a_key_is_accepted() -> None:
    for _ in range(3):
        genuine = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
        assert strict_public_key(genuine).public_bytes_raw() == genuine
        assert not weak_point_encoding(genuine)
        point = decode_lenient(genuine)
        assert point is not None
        for t in TORSION[1:]:
            mixed = encode(add(point, t))
            assert order_kind(mixed) == "mixed"
            with pytest.raises(WeakPublicKeyError, match="small-order component"):
                strict_public_key(mixed)
            # Too costly to see per verification; certification is where it is refused.
            assert not weak_point_encoding(mixed)


def test_lengths_and_bytes_that_are_not_a_point() -> None:
    for raw in (b"", IDENTITY[:31], IDENTITY + b"\x00"):
        with pytest.raises(ValueError) as info:
            strict_public_key(raw)
        assert not isinstance(info.value, WeakPublicKeyError)
        assert weak_point_encoding(raw)
    not_a_point = next(
        raw for raw in (i.to_bytes(32, "little") for i in range(2, 100)) if decode_lenient(raw) is None
    )
    with pytest.raises(WeakPublicKeyError, match="not a point"):
        strict_public_key(not_a_point)


def test_keys_from_text_and_jwks_are_strict() -> None:
    genuine = ISSUER.public_key()
    for weak in (IDENTITY, *sorted(SMALL_ORDER_POINTS), *NON_CANONICAL_SMALL_ORDER):
        with pytest.raises(WeakPublicKeyError):
            public_key_from_b64(public_key_to_b64(weak))
        jwk = public_key_to_jwk(weak, kid="0badc0de")
        with pytest.raises(WeakPublicKeyError):
            public_key_from_jwk(jwk)
        jwks = {"keys": [jwk, public_key_to_jwk(genuine)]}
        assert list(issuer_keys_from_jwks(jwks)) == [KID]


def test_identity_key_certificate_forgery_is_refused() -> None:
    """The attack of issue 8: R = identity, S = 0 under an identity-key certificate, any message."""
    certificate = issue_device_certificate(ISSUER, KID, IDENTITY, PERSON, None, NOW - 3600)
    forged_signature = IDENTITY + bytes(32)
    for counter in (0, 1, 4242):
        code = offline_code(certificate, NOW, counter, forged_signature)
        message = CTX_OFFLINE + from_text(code)[1][:-64]
        assert equation_holds(IDENTITY, forged_signature, message)  # a real forgery, for every message
        assert verdict(code) is Reason.BAD_SIGNATURE


@pytest.mark.parametrize(
    "device_key",
    sorted(SMALL_ORDER_POINTS) + NON_CANONICAL_SMALL_ORDER,
    ids=lambda raw: raw.hex()[:4] + ".." + raw.hex()[-2:],
)
def test_forgeries_under_any_small_order_device_key_are_refused(device_key: bytes) -> None:
    forgeries = forge_with_small_order_key(device_key)
    for _ in range(3):
        code, signature, message = next(forgeries)
        assert equation_holds(device_key, signature, message)
        assert verdict(code) is Reason.BAD_SIGNATURE


def test_a_small_order_issuer_key_certifies_nothing() -> None:
    """A terminal handed a weak issuer key (corrupt sync data) accepts none of its 'signatures'."""
    forged = IDENTITY + bytes(32)
    as_bytes: dict[str, Ed25519PublicKey | bytes] = {KID: IDENTITY}
    as_key: dict[str, Ed25519PublicKey | bytes] = {KID: Ed25519PublicKey.from_public_bytes(IDENTITY)}
    for keys in (as_bytes, as_key):
        online = issue_online_code(ISSUER, KID, PERSON, None, NOW)
        payload = from_text(online)[1]
        forged_online = to_text(ONLINE_PREFIX, payload[:-64] + forged)
        assert equation_holds(IDENTITY, forged, CTX_ONLINE + payload[:-64])
        assert verdict(forged_online, keys) is Reason.BAD_SIGNATURE
        device = Ed25519PrivateKey.generate()
        certificate = issue_device_certificate(ISSUER, KID, device.public_key(), PERSON, None, NOW - 3600)
        forged_certificate = certificate[:-64] + forged
        assert equation_holds(IDENTITY, forged, CTX_CERT + certificate[:-64])
        assert verdict(compose_offline_code(forged_certificate, device, NOW, 1), keys) is Reason.BAD_SIGNATURE


def _plus_l(signature: bytes) -> bytes:
    s = int.from_bytes(signature[32:], "little")
    return signature[:32] + (s + L).to_bytes(32, "little")


def test_s_plus_l_is_refused_everywhere() -> None:
    """S and S + L satisfy the same equation: accepting both would make every code malleable."""
    device = Ed25519PrivateKey.generate()
    online = issue_online_code(ISSUER, KID, PERSON, None, NOW)
    payload = from_text(online)[1]
    certificate = issue_device_certificate(ISSUER, KID, device.public_key(), PERSON, None, NOW - 3600)
    offline = compose_offline_code(certificate, device, NOW, 7)
    offline_payload = from_text(offline)[1]
    issuer_raw = ISSUER.public_key().public_bytes_raw()
    device_raw = device.public_key().public_bytes_raw()
    assert verdict(online) is None and verdict(offline) is None

    malleated_online = payload[:-64] + _plus_l(payload[-64:])
    assert equation_holds(issuer_raw, malleated_online[-64:], CTX_ONLINE + payload[:-64])
    assert verdict(to_text(ONLINE_PREFIX, malleated_online)) is Reason.BAD_SIGNATURE

    malleated_certificate = certificate[:-64] + _plus_l(certificate[-64:])
    assert equation_holds(issuer_raw, malleated_certificate[-64:], CTX_CERT + certificate[:-64])
    assert verdict(compose_offline_code(malleated_certificate, device, NOW, 8)) is Reason.BAD_SIGNATURE

    malleated_offline = offline_payload[:-64] + _plus_l(offline_payload[-64:])
    assert equation_holds(device_raw, malleated_offline[-64:], CTX_OFFLINE + offline_payload[:-64])
    assert verdict(to_text(OFFLINE_PREFIX, malleated_offline)) is Reason.BAD_SIGNATURE


def test_signature_encoding_checks() -> None:
    signature = ISSUER.sign(b"m")
    assert strict_signature_encoding(signature)
    assert not strict_signature_encoding(signature[:63]) and not strict_signature_encoding(signature + b"\0")
    assert not strict_signature_encoding(_plus_l(signature))
    assert not strict_signature_encoding(signature[:32] + L.to_bytes(32, "little"))
    assert strict_signature_encoding(signature[:32] + (L - 1).to_bytes(32, "little"))
    for r in (*SMALL_ORDER_POINTS, *NON_CANONICAL_SMALL_ORDER):
        assert not strict_signature_encoding(r + signature[32:])


# Published edge-case vectors. SPECCHECK: the 15 vectors of "Taming the many EdDSAs" (Chalkias,
# Garillot, Nikolaenko, SSR 2020), cases.json of github.com/novifinancial/ed25519-speccheck, indexed
# as there; messages are hex. CCTV: a selection of C2SP/CCTV ed25519/ed25519vectors.json (by
# "number"), messages are ASCII. Each entry: (name, public key, signature, message, expected kinds of
# A and R as computed by the reference arithmetic: small/mixed/prime, "!" for a non-canonical
# encoding, and whether S >= L), matching the flags those sources give.
VECTORS: list[tuple[str, str, str, bytes, str, str, bool]] = [
    (
        "speccheck-0",  # S = 0, small A, small R; fails cofactorless (needs R = -kA)
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a" + "00" * 32,
        bytes.fromhex("2a66241a42a9ee12994d8068dcf1bb7dfc6637b45450acd43711f637fa5080fc"),
        "small",
        "small",
        False,
    ),
    (
        "speccheck-1",  # S = 0, small A, small R, R = -kA: passes a plain cofactorless verifier
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a" + "00" * 32,
        bytes.fromhex("8c93255d71dcab10e8f379c26200f3c7bd5f09d9bc3068d3ef4edeb4853022b6"),
        "small",
        "small",
        False,
    ),
    (
        "speccheck-2",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43"
        "a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
        bytes.fromhex("9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41"),
        "small",
        "mixed",
        False,
    ),
    (
        "speccheck-3",  # small A, mixed R: passes a plain cofactorless verifier
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43"
        "a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
        bytes.fromhex("9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79"),
        "small",
        "mixed",
        False,
    ),
    (
        "speccheck-4",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"
        "182ef1a5b928da07fec769cc8a12db6bcf70dab3f3227fa315e9d5e3e01a3405",
        bytes.fromhex("9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41"),
        "mixed",
        "small",
        False,
    ),
    (
        "speccheck-5",  # mixed A, small R: passes a plain cofactorless verifier
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"
        "8c4bd45aecaca5b24fb97bc10ac27ac8751a7dfe1baff8b953ec9f5833ca260e",
        bytes.fromhex("aebf3f2601a0c8c5d39cc7d8911642f740b78168218da8471772b35f9d35b9ab"),
        "mixed",
        "small",
        False,
    ),
    (
        "speccheck-6",  # mixed A, mixed R, passes every verifier: only the key check can refuse A
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "9046a64750444938de19f227bb80485e92b83fdb4b6506c160484c016cc1852f"
        "87909e14428a7a1d62e9f22f3d3ad7802db02eb2e688b6c52fcd6648a98bd009",
        bytes.fromhex("9bd9f44f4dcc75bd531b56b2cd280b0bb38fc1cd6d1230e14861d861de092e79"),
        "mixed",
        "mixed",
        False,
    ),
    (
        "speccheck-7",  # mixed A, mixed R, passes only cofactored verifiers
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "160a1cb0dc9c0258cd0a7d23e94d8fa878bcb1925f2c64246b2dee1796bed512"
        "5ec6bc982a269b723e0668e540911a9a6a58921d6925e434ab10aa7940551a09",
        bytes.fromhex("e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c"),
        "mixed",
        "mixed",
        False,
    ),
    (
        "speccheck-8",  # "pre-reduced" scalar
        "cdb267ce40c5cd45306fa5d2f29731459387dbf9eb933b7bd5aed9a765b88d4d",
        "21122a84e0b5fca4052f5b1235c80a537878b38f3142356b2c2384ebad4668b7"
        "e40bc836dac0f71076f9abe3a53f9c03c1ceeeddb658d0030494ace586687405",
        bytes.fromhex("e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec4011eaccd55b53f56c"),
        "mixed",
        "prime",
        False,
    ),
    (
        "speccheck-9",  # S > L
        "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623",
        "e96f66be976d82e60150baecff9906684aebb1ef181f67a7189ac78ea23b6c0e"
        "547f7690a0e2ddcd04d87dbc3490dc19b3b3052f7ff0538cb68afb369ba3a514",
        bytes.fromhex("85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40"),
        "prime",
        "prime",
        True,
    ),
    (
        "speccheck-10",  # S >> L (not even below 2^253)
        "442aad9f089ad9e14647b1ef9099a1ff4798d78589e66f28eca69c11f582a623",
        "8ce5b96c8f26d0ab6c47958c9e68b937104cd36e13c33566acd2fe8d38aa1942"
        "7e71f98a473474f2f13f06f97c20d58cc3f54b8bd0d272f42b695dd7e89a8c22",
        bytes.fromhex("85e241a07d148b41e47d62c63f830dc7a6851a0b1f33ae4bb2f507fb6cffec40"),
        "prime",
        "prime",
        True,
    ),
    (
        "speccheck-11",  # non-canonical small R ("negative zero" x)
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
        "03be9678ac102edcd92b0210bb34d7428d12ffc5df5f37e359941266a4e35f0f",
        bytes.fromhex("9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41"),
        "mixed",
        "small!",
        False,
    ),
    (
        "speccheck-12",
        "f7badec5b8abeaf699583992219b7b223f1df3fbbea919844e3f7c554a43dd43",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
        "ca8c5b64cd208982aa38d4936621a4775aa233aa0505711d8fdcfdaa943d4908",
        bytes.fromhex("9bedc267423725d473888631ebf45988bad3db83851ee85c85e241a07d148b41"),
        "mixed",
        "small!",
        False,
    ),
    (
        "speccheck-13",  # non-canonical small A
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dc"
        "a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
        bytes.fromhex("e96b7021eb39c1a163b6da4e3093dcd3f21387da4cc4572be588fafae23c155b"),
        "small!",
        "mixed",
        False,
    ),
    (
        "speccheck-14",  # non-canonical small A, k from the raw bytes: passes OpenSSL alone
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "a9d55260f765261eb9b84e106f665e00b867287a761990d7135963ee0a7d59dc"
        "a5bb704786be79fc476f91d3f3f89b03984d8068dcf1bb7dfc6637b45450ac04",
        bytes.fromhex("39a591f5321bbe07fd5a23dc2f39d025d74526615746727ceefd6e82ae65c06f"),
        "small!",
        "mixed",
        False,
    ),
    (
        "cctv-1",  # A = R = 0000..00 (order 4), S = 0, no residue
        "00" * 32,
        "00" * 64,
        b"ed25519vectors 11",
        "small",
        "small",
        False,
    ),
    (
        "cctv-7",  # low-order components in A and R that cancel: passes cofactorless verifiers
        "10eb7c3acfb2bed3e0d6ab89bf5a3d6afddd1176ce4812e38d9fd485058fdb1f",
        "36684ea91032ba5b1dbab2d02f4debc74c3327f2b3802e2e4d371aa42b12b56b"
        "bbfd00bd9c259d8d222d15e67a3d8228585050dbb9b9585be20d8fadc721da03",
        b"ed25519vectors",
        "mixed",
        "mixed",
        False,
    ),
    (
        "cctv-9",  # non-canonical A (y = p), R = 0000..00, S = 0
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "00" * 64,
        b"ed25519vectors 6",
        "small!",
        "small",
        False,
    ),
    (
        "cctv-17",  # non-canonical R (y = p)
        "10eb7c3acfb2bed3e0d6ab89bf5a3d6afddd1176ce4812e38d9fd485058fdb1f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"
        "ad7a355469b5c87e550469f6b2de409ee723acd584bf35f86b80c384e8ceb702",
        b"ed25519vectors 3",
        "mixed",
        "small!",
        False,
    ),
    (
        "cctv-21",  # non-canonical A and R
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f" + "00" * 32,
        b"ed25519vectors 15",
        "small!",
        "small!",
        False,
    ),
    (
        "cctv-23",  # R = 0000..80 (the other order-4 point), A = 0000..00
        "00" * 32,
        "00" * 31 + "80" + "00" * 32,
        b"ed25519vectors 3",
        "small",
        "small",
        False,
    ),
    (
        "cctv-29",
        "10eb7c3acfb2bed3e0d6ab89bf5a3d6afddd1176ce4812e38d9fd485058fdb1f",
        "b797b156efcd45a4e2454d2fd0b21438b3ccd80d4c7fd1d1b2c8e55bd4ed4a94"
        "732d9e0279fe001d90327efa319816e3e4506b78432b8b4e1f2fdc4b960d700f",
        b"ed25519vectors 2",
        "mixed",
        "mixed",
        False,
    ),
]


def kind(raw: bytes) -> str:
    return order_kind(raw) + ("" if is_canonical(raw) else "!")


@pytest.mark.parametrize(
    ("name", "key", "sig", "message", "a_kind", "r_kind", "s_too_big"), VECTORS, ids=[v[0] for v in VECTORS]
)
def test_published_vectors(
    name: str, key: str, sig: str, message: bytes, a_kind: str, r_kind: str, s_too_big: bool
) -> None:
    public, signature = bytes.fromhex(key), bytes.fromhex(sig)
    assert (kind(public), kind(signature[:32])) == (a_kind, r_kind)
    assert (int.from_bytes(signature[32:], "little") >= L) is s_too_big
    accepted = signature_ok(public, signature, message)
    # Only A and R of mixed or prime order with a canonical S get through to the library ...
    if a_kind == "small" or a_kind.endswith("!") or r_kind == "small" or r_kind.endswith("!") or s_too_big:
        assert not accepted
    # ... and no mixed-order key gets certified (or trusted as an issuer key) in the first place.
    if a_kind != "prime":
        with pytest.raises(WeakPublicKeyError):
            strict_public_key(public)
    if name in ("speccheck-6", "cctv-7", "cctv-29"):
        assert accepted  # valid signatures under mixed-order keys: harmless once such keys are refused
