"""Offline verification of both code forms, for terminals (offline) and the server alike."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .format import (
    CTX_CERT,
    CTX_OFFLINE,
    CTX_ONLINE,
    ONLINE_PREFIX,
    VoucherFormatError,
    epoch_seconds,
    from_text,
    parse_offline_payload,
    parse_online_payload,
    replay_key,
)
from .keys import PublicKeyLike, load_public_key, strict_signature_encoding, weak_point_encoding
from .replay import ReplayGuard
from .revocation import RevocationView

DEFAULT_SKEW_S = 30


class Reason(StrEnum):
    """Stable reason codes: terminals show them and push them; never rename one."""

    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    CERTIFICATE_NOT_YET_VALID = "certificate_not_yet_valid"
    CERTIFICATE_EXPIRED = "certificate_expired"
    REVOKED = "revoked"
    REPLAYED = "replayed"


class Form(StrEnum):
    ONLINE = "online"
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class VerificationResult:
    """The verdict. Fields other than `reason` are set only once the signatures have checked out
    (so for expired, revoked or replayed codes too, never for malformed, forged or unknown-key ones).

    `person_ref` is the insured person the code is for; `link_ref` is set when a family member shows
    that person's code through a link. The caller looks the person up in its roster for a summary.
    """

    reason: Reason | None
    form: Form | None = None
    kid: str | None = None
    person_ref: bytes | None = None
    link_ref: bytes | None = None
    issued_at: int | None = None  # online: issue time; offline: the time the device signed
    expires_at: int | None = None  # without the skew allowance
    cert_serial: bytes | None = None
    cert_not_after: int | None = None
    counter: int | None = None
    replay_key: bytes | None = None
    detail: str | None = None  # for revoked: "certificate", "link" or "person"

    @property
    def valid(self) -> bool:
        return self.reason is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: bytes as lowercase hex, enums as their string values."""
        out: dict[str, Any] = {"valid": self.valid}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.hex() if isinstance(value, bytes) else value
        return out


_Key = tuple[Ed25519PublicKey, bytes]  # a loaded public key and its raw 32 bytes


def _public_key(issuer_keys: Mapping[str, PublicKeyLike], kid: str) -> _Key | None:
    key = issuer_keys.get(kid)
    if key is None:
        return None
    try:
        loaded = load_public_key(key)
    except (ValueError, TypeError):
        return None  # unusable key material counts as no key
    return loaded, key if isinstance(key, bytes) else loaded.public_bytes_raw()


def _signature_ok(key: _Key, signature: bytes, message: bytes) -> bool:
    """Strict Ed25519 (SPEC.md section 7, step 3): before the library's check, refuse a
    non-canonical S (S >= L) and an R or A that is non-canonical or of small order. OpenSSL alone
    accepts a small-order A: with the identity as A, R = identity and S = 0 verify any message."""
    public_key, raw = key
    if weak_point_encoding(raw) or not strict_signature_encoding(signature):
        return False
    try:
        public_key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def signature_ok(public_key: PublicKeyLike, signature: bytes, message: bytes) -> bool:
    """One signature checked exactly as `verify_code` checks each of its signatures."""
    try:
        loaded = load_public_key(public_key)
    except (ValueError, TypeError):
        return False
    return _signature_ok((loaded, loaded.public_bytes_raw()), signature, message)


def _revocation(
    revocations: RevocationView, person_ref: bytes, link_ref: bytes | None, serial: bytes | None
) -> str | None:
    if serial is not None and serial in revocations.cert_serials:
        return "certificate"
    if link_ref is not None and link_ref in revocations.link_refs:
        return "link"
    if person_ref in revocations.person_refs:
        return "person"
    return None


def verify_code(
    code: str,
    *,
    issuer_keys: Mapping[str, PublicKeyLike],
    revocations: RevocationView,
    now: datetime | int,
    skew_s: int = DEFAULT_SKEW_S,
    replay_guard: ReplayGuard | None = None,
) -> VerificationResult:
    """Verify an online or offline code. Bad codes give a reason, never an exception.

    Order: size and syntax → key id → signatures → validity windows → revocation → replay, so that
    nothing unauthenticated costs more than the signature checks, and only codes that are otherwise
    valid are written to the replay store (garbage cannot fill it, and an expired code does not burn
    a slot). `skew_s` widens every time window on both sides for clocks that disagree.
    """
    if skew_s < 0:
        raise ValueError("skew_s must not be negative")
    t = epoch_seconds(now)
    try:
        prefix, payload = from_text(code)
        if prefix == ONLINE_PREFIX:
            return _verify_online(payload, issuer_keys, revocations, t, skew_s, replay_guard)
        return _verify_offline(payload, issuer_keys, revocations, t, skew_s, replay_guard)
    except VoucherFormatError:
        return VerificationResult(Reason.MALFORMED)


def _finish(
    result: VerificationResult,
    revocations: RevocationView,
    replay_guard: ReplayGuard | None,
    skew_s: int,
) -> VerificationResult:
    """Revocation and replay, shared by both forms; `result` is authenticated and within its windows."""
    assert result.person_ref is not None and result.replay_key is not None and result.expires_at is not None
    revoked = _revocation(revocations, result.person_ref, result.link_ref, result.cert_serial)
    if revoked is not None:
        return _with(result, Reason.REVOKED, revoked)
    # Remember it as long as any verifier with our skew could still accept it.
    if replay_guard is not None and not replay_guard.check_and_remember(
        result.replay_key, result.expires_at + skew_s
    ):
        return _with(result, Reason.REPLAYED)
    return result


def _with(result: VerificationResult, reason: Reason, detail: str | None = None) -> VerificationResult:
    return replace(result, reason=reason, detail=detail)


def _verify_online(
    payload: bytes,
    issuer_keys: Mapping[str, PublicKeyLike],
    revocations: RevocationView,
    now: int,
    skew_s: int,
    replay_guard: ReplayGuard | None,
) -> VerificationResult:
    oc = parse_online_payload(payload)
    key = _public_key(issuer_keys, oc.kid)
    if key is None:
        return VerificationResult(Reason.UNKNOWN_KEY)
    if not _signature_ok(key, oc.signature, CTX_ONLINE + oc.signed):
        return VerificationResult(Reason.BAD_SIGNATURE)
    result = VerificationResult(
        None,
        Form.ONLINE,
        oc.kid,
        oc.person_ref,
        oc.link_ref,
        oc.issued_at,
        oc.expires_at,
        replay_key=replay_key(oc.signed),
    )
    if now < oc.issued_at - skew_s:
        return _with(result, Reason.NOT_YET_VALID)
    if now > oc.expires_at + skew_s:
        return _with(result, Reason.EXPIRED)
    return _finish(result, revocations, replay_guard, skew_s)


def _verify_offline(
    payload: bytes,
    issuer_keys: Mapping[str, PublicKeyLike],
    revocations: RevocationView,
    now: int,
    skew_s: int,
    replay_guard: ReplayGuard | None,
) -> VerificationResult:
    oc = parse_offline_payload(payload)
    cert = oc.certificate
    key = _public_key(issuer_keys, cert.kid)
    if key is None:
        return VerificationResult(Reason.UNKNOWN_KEY)
    if not _signature_ok(key, cert.signature, CTX_CERT + cert.signed):
        return VerificationResult(Reason.BAD_SIGNATURE)
    try:
        # Cheap checks only (in _signature_ok): the issuer refused mixed-order keys when certifying.
        device_key = (Ed25519PublicKey.from_public_bytes(cert.device_public_key), cert.device_public_key)
    except ValueError:
        return VerificationResult(Reason.BAD_SIGNATURE)
    if not _signature_ok(device_key, oc.signature, CTX_OFFLINE + oc.signed):
        return VerificationResult(Reason.BAD_SIGNATURE)
    result = VerificationResult(
        None,
        Form.OFFLINE,
        cert.kid,
        cert.person_ref,  # the code names no person of its own: only the certificate's can be meant
        cert.link_ref,
        oc.time,
        oc.expires_at,
        cert.serial,
        cert.not_after,
        oc.counter,
        replay_key(oc.signed),
    )
    if now < cert.not_before - skew_s:
        return _with(result, Reason.CERTIFICATE_NOT_YET_VALID)
    if now > cert.not_after + skew_s:
        return _with(result, Reason.CERTIFICATE_EXPIRED)
    if now < oc.time - skew_s:
        return _with(result, Reason.NOT_YET_VALID)
    if now > oc.expires_at + skew_s:
        return _with(result, Reason.EXPIRED)
    return _finish(result, revocations, replay_guard, skew_s)
