"""Wire format of e-voucher codes and device certificates (see SPEC.md, which is normative).

Everything here is parsing and serialising only: no signature is checked and no clock is read.
Parsers are strict (exact lengths, reserved bits zero) so that every byte of a code is either
covered by a signature or rejected, and a changed code can never verify as the original.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass
from datetime import datetime

from .base45 import Base45Error, b45decode, b45encode

# Text prefixes (QR alphanumeric characters): tell the two forms apart, and ours from foreign QR codes.
ONLINE_PREFIX = "YBS:"  # server-signed, online form
OFFLINE_PREFIX = "YBD:"  # device-signed, offline form
MAX_CODE_CHARS = 512  # anything longer is rejected before decoding

TYPE_ONLINE_V1 = 0x01
TYPE_CERT_V1 = 0x02
FLAG_LINK = 0x01
_KNOWN_FLAGS = FLAG_LINK

KID_BYTES = 4
REF_BYTES = 8  # person refs, link refs and certificate serials
NONCE_BYTES = 8
PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64
REPLAY_KEY_BYTES = 16

DEFAULT_ONLINE_LIFETIME_S = 60
MAX_ONLINE_LIFETIME_S = 600
OFFLINE_CODE_LIFETIME_S = 60  # fixed by the spec: an offline code carries no lifetime of its own
MAX_CERT_VALIDITY_S = 30 * 86400
MAX_COUNTER = 0xFFFF
MAX_TIME = 0xFFFFFFFF

# Signatures are over context || bytes, so a signature made for one structure can never be
# accepted for another (Ed25519 has no built-in context in `cryptography`).
CTX_ONLINE = b"yibao/voucher/v1/online\x00"
CTX_CERT = b"yibao/voucher/v1/device-cert\x00"
CTX_OFFLINE = b"yibao/voucher/v1/offline\x00"
CTX_REPLAY = b"yibao/voucher/v1/replay\x00"

_ONLINE_HEAD = struct.Struct(">BB4s8s")  # type, flags, kid, person_ref
_ONLINE_TAIL = struct.Struct(">IH8s")  # issued_at, lifetime_s, nonce
_CERT_HEAD = struct.Struct(">BB4s8s32s8s")  # type, flags, kid, serial, device key, person_ref
_CERT_TAIL = struct.Struct(">IH")  # not_before, validity_min
_OFFLINE_TAIL = struct.Struct(">IH")  # time, counter


class VoucherFormatError(ValueError):
    """Bytes or text that are not a well-formed code or certificate."""


def epoch_seconds(value: datetime | int) -> int:
    """Unix seconds (UTC) as the unsigned 32-bit integer the wire uses; naive datetimes are refused."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: pass an aware datetime (times are UTC)")
        seconds = int(value.timestamp() // 1)
    elif isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    else:
        raise TypeError("time must be an aware datetime or Unix seconds")
    if not 0 <= seconds <= MAX_TIME:
        raise ValueError("time out of the uint32 range")
    return seconds


def new_ref() -> bytes:
    """A fresh random 8-byte opaque reference (person ref, link ref or certificate serial)."""
    return secrets.token_bytes(REF_BYTES)


def derive_ref(secret: bytes, namespace: str, internal_id: str) -> bytes:
    """A stable opaque 8-byte ref for a server-side id, without storing a mapping.

    HMAC-SHA-256 under a server secret, so a ref reveals nothing about the id (never pass an ID
    number: an ID number's small keyspace would still be guessable by whoever holds the secret).
    """
    msg = namespace.encode() + b"\x00" + internal_id.encode()
    return hmac.new(secret, msg, hashlib.sha256).digest()[:REF_BYTES]


def check_ref(value: bytes | None, name: str, *, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, bytes) or len(value) != REF_BYTES:
        raise ValueError(f"{name} must be {REF_BYTES} bytes")


def replay_key(signed_part: bytes) -> bytes:
    """Identity of a code for replay detection: a hash of everything the last signature covers."""
    return hashlib.sha256(CTX_REPLAY + signed_part).digest()[:REPLAY_KEY_BYTES]


def _flags(link_ref: bytes | None) -> int:
    return FLAG_LINK if link_ref is not None else 0


def _check_flags(flags: int) -> None:
    if flags & ~_KNOWN_FLAGS:
        raise VoucherFormatError("reserved flag bits set")


@dataclass(frozen=True, slots=True)
class OnlineCode:
    kid: str
    person_ref: bytes
    link_ref: bytes | None
    issued_at: int
    lifetime_s: int
    nonce: bytes
    signature: bytes
    signed: bytes  # the bytes the issuer signature covers (without the context)

    @property
    def expires_at(self) -> int:
        return self.issued_at + self.lifetime_s


@dataclass(frozen=True, slots=True)
class DeviceCertificate:
    kid: str
    serial: bytes
    device_public_key: bytes
    person_ref: bytes
    link_ref: bytes | None
    not_before: int
    validity_min: int
    signature: bytes
    signed: bytes

    @property
    def not_after(self) -> int:
        return self.not_before + self.validity_min * 60

    @property
    def raw(self) -> bytes:
        return self.signed + self.signature


@dataclass(frozen=True, slots=True)
class OfflineCode:
    certificate: DeviceCertificate
    time: int
    counter: int
    signature: bytes
    signed: bytes  # certificate bytes || time || counter: what the device signature covers

    @property
    def expires_at(self) -> int:
        return self.time + OFFLINE_CODE_LIFETIME_S


def encode_online_unsigned(
    kid: bytes, person_ref: bytes, link_ref: bytes | None, issued_at: int, lifetime_s: int, nonce: bytes
) -> bytes:
    return b"".join(
        (
            _ONLINE_HEAD.pack(TYPE_ONLINE_V1, _flags(link_ref), kid, person_ref),
            link_ref or b"",
            _ONLINE_TAIL.pack(issued_at, lifetime_s, nonce),
        )
    )


def encode_cert_unsigned(
    kid: bytes,
    serial: bytes,
    device_public_key: bytes,
    person_ref: bytes,
    link_ref: bytes | None,
    not_before: int,
    validity_min: int,
) -> bytes:
    return b"".join(
        (
            _CERT_HEAD.pack(TYPE_CERT_V1, _flags(link_ref), kid, serial, device_public_key, person_ref),
            link_ref or b"",
            _CERT_TAIL.pack(not_before, validity_min),
        )
    )


def online_length(flags: int) -> int:
    link = REF_BYTES if flags & FLAG_LINK else 0
    return _ONLINE_HEAD.size + link + _ONLINE_TAIL.size + SIGNATURE_BYTES


def cert_length(flags: int) -> int:
    link = REF_BYTES if flags & FLAG_LINK else 0
    return _CERT_HEAD.size + link + _CERT_TAIL.size + SIGNATURE_BYTES


def offline_length(cert_flags: int) -> int:
    return cert_length(cert_flags) + _OFFLINE_TAIL.size + SIGNATURE_BYTES


def parse_online_payload(data: bytes) -> OnlineCode:
    if len(data) < 2 or data[0] != TYPE_ONLINE_V1:
        raise VoucherFormatError("not an online code v1")
    _check_flags(data[1])
    if len(data) != online_length(data[1]):
        raise VoucherFormatError("wrong length")
    _, flags, kid, person_ref = _ONLINE_HEAD.unpack_from(data, 0)
    pos = _ONLINE_HEAD.size
    link_ref = None
    if flags & FLAG_LINK:
        link_ref = data[pos : pos + REF_BYTES]
        pos += REF_BYTES
    issued_at, lifetime_s, nonce = _ONLINE_TAIL.unpack_from(data, pos)
    return OnlineCode(
        kid=kid.hex(),
        person_ref=person_ref,
        link_ref=link_ref,
        issued_at=issued_at,
        lifetime_s=lifetime_s,
        nonce=nonce,
        signature=data[-SIGNATURE_BYTES:],
        signed=data[:-SIGNATURE_BYTES],
    )


def parse_device_certificate(data: bytes) -> DeviceCertificate:
    """Parse (never verify) a certificate; raises VoucherFormatError unless it is exactly one cert."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise VoucherFormatError("bytes expected")
    data = bytes(data)
    if len(data) < 2 or data[0] != TYPE_CERT_V1:
        raise VoucherFormatError("not a device certificate v1")
    _check_flags(data[1])
    if len(data) != cert_length(data[1]):
        raise VoucherFormatError("wrong length")
    _, flags, kid, serial, device_key, person_ref = _CERT_HEAD.unpack_from(data, 0)
    pos = _CERT_HEAD.size
    link_ref = None
    if flags & FLAG_LINK:
        link_ref = data[pos : pos + REF_BYTES]
        pos += REF_BYTES
    not_before, validity_min = _CERT_TAIL.unpack_from(data, pos)
    return DeviceCertificate(
        kid=kid.hex(),
        serial=serial,
        device_public_key=device_key,
        person_ref=person_ref,
        link_ref=link_ref,
        not_before=not_before,
        validity_min=validity_min,
        signature=data[-SIGNATURE_BYTES:],
        signed=data[:-SIGNATURE_BYTES],
    )


def parse_offline_payload(data: bytes) -> OfflineCode:
    if len(data) < 2 or data[0] != TYPE_CERT_V1:
        raise VoucherFormatError("offline code must start with a device certificate v1")
    _check_flags(data[1])
    if len(data) != offline_length(data[1]):
        raise VoucherFormatError("wrong length")
    n = cert_length(data[1])
    cert = parse_device_certificate(data[:n])
    time, counter = _OFFLINE_TAIL.unpack_from(data, n)
    return OfflineCode(
        certificate=cert,
        time=time,
        counter=counter,
        signature=data[-SIGNATURE_BYTES:],
        signed=data[:-SIGNATURE_BYTES],
    )


def to_text(prefix: str, payload: bytes) -> str:
    return prefix + b45encode(payload)


def from_text(code: str) -> tuple[str, bytes]:
    """(prefix, payload bytes) of a code's text; raises VoucherFormatError for anything else."""
    if not isinstance(code, str) or len(code) > MAX_CODE_CHARS:
        raise VoucherFormatError("not a string of acceptable length")
    prefix = code[: len(ONLINE_PREFIX)]
    if prefix not in (ONLINE_PREFIX, OFFLINE_PREFIX):
        raise VoucherFormatError("unknown prefix")
    try:
        return prefix, b45decode(code[len(prefix) :])
    except Base45Error as exc:
        raise VoucherFormatError(str(exc)) from None
