"""Voucher issuer keys: the token key ring's Ed25519 keys, named by a 4-byte voucher kid.

Sharing the ring means one rotation procedure and one key directory for workers to share. Sharing is
safe because voucher signatures cover a NUL-terminated context string ("yibao/voucher/v1/...") that a
JWT signing input (base64url text) can never start with. Rotation keeps a retired key until pruned
after the longest refresh-token lifetime (>= 30 days), which also outlives every device certificate.
"""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from api.auth.keys import KeyRing
from sync.vouchers import derive_kid, public_key_to_b64


class VoucherKeys:
    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring
        self._by_token_kid: dict[str, tuple[str, Ed25519PublicKey]] = {}

    def signer(self) -> tuple[str, Ed25519PrivateKey]:
        """(voucher kid, private key) of the active key."""
        active = self._ring.active
        return derive_kid(active.public_raw()), active.private_key

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        """{voucher kid: public key} of every published key (what verifiers need)."""
        out: dict[str, Ed25519PublicKey] = {}
        for jwk in self._ring.jwks()["keys"]:
            known = self._by_token_kid.get(jwk["kid"])
            if known is None:
                raw = base64.urlsafe_b64decode(jwk["x"] + "=" * (-len(jwk["x"]) % 4))
                known = (derive_kid(raw), Ed25519PublicKey.from_public_bytes(raw))
                self._by_token_kid[jwk["kid"]] = known
            out[known[0]] = known[1]
        return out

    def public_keys_b64(self) -> dict[str, str]:
        """{voucher kid: base64url raw public key}: the data shipped to terminals."""
        return {kid: public_key_to_b64(key) for kid, key in self.public_keys().items()}
