"""Making codes: the server issues online codes and device certificates; the phone composes offline codes.

The phone side is here as the reference implementation the mini-program's JS port is tested against
(through test_vectors.json) and for tests of the verifier.
"""

from __future__ import annotations

import secrets
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .format import (
    CTX_CERT,
    CTX_OFFLINE,
    CTX_ONLINE,
    DEFAULT_ONLINE_LIFETIME_S,
    MAX_CERT_VALIDITY_S,
    MAX_COUNTER,
    MAX_ONLINE_LIFETIME_S,
    NONCE_BYTES,
    OFFLINE_PREFIX,
    ONLINE_PREFIX,
    VoucherFormatError,
    check_ref,
    encode_cert_unsigned,
    encode_online_unsigned,
    epoch_seconds,
    new_ref,
    parse_device_certificate,
    to_text,
)
from .keys import PublicKeyLike, kid_to_bytes, public_key_raw


def issue_online_code(
    private_key: Ed25519PrivateKey,
    kid: str,
    person_ref: bytes,
    link_ref: bytes | None,
    now: datetime | int,
    lifetime_s: int = DEFAULT_ONLINE_LIFETIME_S,
    nonce: bytes | None = None,
) -> str:
    """A server-signed code naming `person_ref` (shown through `link_ref` when a relative shows it)."""
    check_ref(person_ref, "person_ref")
    check_ref(link_ref, "link_ref", optional=True)
    if not 1 <= lifetime_s <= MAX_ONLINE_LIFETIME_S:
        raise ValueError(f"lifetime_s must be within 1..{MAX_ONLINE_LIFETIME_S}")
    if nonce is None:
        nonce = secrets.token_bytes(NONCE_BYTES)
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
    issued_at = epoch_seconds(now)
    epoch_seconds(issued_at + lifetime_s)  # the expiry must stay representable
    signed = encode_online_unsigned(kid_to_bytes(kid), person_ref, link_ref, issued_at, lifetime_s, nonce)
    return to_text(ONLINE_PREFIX, signed + private_key.sign(CTX_ONLINE + signed))


def issue_device_certificate(
    private_key: Ed25519PrivateKey,
    kid: str,
    device_public_key: PublicKeyLike,
    person_ref: bytes,
    link_ref: bytes | None,
    now: datetime | int,
    validity_s: int = MAX_CERT_VALIDITY_S,
    serial: bytes | None = None,
) -> bytes:
    """Certify a phone's device key for one person (through one family link, if given).

    Validity starts at `now`, lasts `validity_s` (a whole number of minutes, at most 30 days), and the
    serial (8 bytes, random unless given) is what a revocation names.
    """
    check_ref(person_ref, "person_ref")
    check_ref(link_ref, "link_ref", optional=True)
    if serial is None:
        serial = new_ref()
    check_ref(serial, "serial")
    if not 60 <= validity_s <= MAX_CERT_VALIDITY_S or validity_s % 60:
        raise ValueError("validity_s must be a whole number of minutes between 1 minute and 30 days")
    not_before = epoch_seconds(now)
    epoch_seconds(not_before + validity_s)
    signed = encode_cert_unsigned(
        kid_to_bytes(kid),
        serial,
        public_key_raw(device_public_key),
        person_ref,
        link_ref,
        not_before,
        validity_s // 60,
    )
    return signed + private_key.sign(CTX_CERT + signed)


def compose_offline_code(
    certificate_bytes: bytes, device_private_key: Ed25519PrivateKey, now: datetime | int, counter: int
) -> str:
    """What the phone does without signal: certificate || time || counter, signed by the device key.

    The code names no person of its own: person and link come only from the certificate, so a code
    claiming someone else than its certificate cannot even be expressed.
    """
    try:
        cert = parse_device_certificate(certificate_bytes)
    except VoucherFormatError as exc:
        raise ValueError(f"not a device certificate: {exc}") from None
    if device_private_key.public_key().public_bytes_raw() != cert.device_public_key:
        raise ValueError("the device key does not match the certificate")
    if not 0 <= counter <= MAX_COUNTER:
        raise ValueError(f"counter must be within 0..{MAX_COUNTER} (wrap it)")
    time = epoch_seconds(now)
    signed = cert.raw + time.to_bytes(4, "big") + counter.to_bytes(2, "big")
    return to_text(OFFLINE_PREFIX, signed + device_private_key.sign(CTX_OFFLINE + signed))
