"""E-vouchers (医保码): code format, issuing, and offline verification. Pure: stdlib + cryptography.

The normative description of the format is SPEC.md beside this file; test_vectors.json pins it.
"""

from .base45 import Base45Error, b45decode, b45encode
from .format import (
    DEFAULT_ONLINE_LIFETIME_S,
    MAX_CERT_VALIDITY_S,
    MAX_CODE_CHARS,
    MAX_ONLINE_LIFETIME_S,
    OFFLINE_CODE_LIFETIME_S,
    OFFLINE_PREFIX,
    ONLINE_PREFIX,
    REF_BYTES,
    DeviceCertificate,
    OfflineCode,
    OnlineCode,
    VoucherFormatError,
    derive_ref,
    epoch_seconds,
    new_ref,
    parse_device_certificate,
)
from .issue import compose_offline_code, issue_device_certificate, issue_online_code
from .keys import (
    PublicKeyLike,
    derive_kid,
    issuer_keys_from_jwks,
    private_key_from_seed,
    public_key_from_b64,
    public_key_from_jwk,
    public_key_to_b64,
    public_key_to_jwk,
)
from .replay import InMemoryReplayGuard, ReplayGuard
from .revocation import RevocationList, RevocationView
from .verify import DEFAULT_SKEW_S, Form, Reason, VerificationResult, verify_code

__all__ = [
    "DEFAULT_ONLINE_LIFETIME_S",
    "DEFAULT_SKEW_S",
    "MAX_CERT_VALIDITY_S",
    "MAX_CODE_CHARS",
    "MAX_ONLINE_LIFETIME_S",
    "OFFLINE_CODE_LIFETIME_S",
    "OFFLINE_PREFIX",
    "ONLINE_PREFIX",
    "REF_BYTES",
    "Base45Error",
    "DeviceCertificate",
    "Form",
    "InMemoryReplayGuard",
    "OfflineCode",
    "OnlineCode",
    "PublicKeyLike",
    "Reason",
    "ReplayGuard",
    "RevocationList",
    "RevocationView",
    "VerificationResult",
    "VoucherFormatError",
    "b45decode",
    "b45encode",
    "compose_offline_code",
    "derive_kid",
    "derive_ref",
    "epoch_seconds",
    "issue_device_certificate",
    "issue_online_code",
    "issuer_keys_from_jwks",
    "new_ref",
    "parse_device_certificate",
    "private_key_from_seed",
    "public_key_from_b64",
    "public_key_from_jwk",
    "public_key_to_b64",
    "public_key_to_jwk",
    "verify_code",
]
