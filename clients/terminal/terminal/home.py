"""The terminal's home directory: what it has synced from the server, kept for offline work.

``trust.json`` holds the voucher issuer keys (a JWKS) and the revocation list. Enrolment and the sync
loop (the clinic-sync issue) write it; scanning reads it, with no network at all.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.vouchers import RevocationList, issuer_keys_from_jwks

TRUST_FILE = "trust.json"


@dataclass(frozen=True)
class Trust:
    issuer_keys: dict[str, Ed25519PublicKey]
    revocations: RevocationList


class Home:
    def __init__(self, path: Path) -> None:
        self.path = path

    @property
    def trust_path(self) -> Path:
        return self.path / TRUST_FILE

    def has_trust(self) -> bool:
        return self.trust_path.exists()

    def load_trust(self) -> Trust:
        data: dict[str, Any] = json.loads(self.trust_path.read_text())
        return Trust(
            issuer_keys_from_jwks(data["issuer_keys"]), RevocationList.from_dict(data["revocations"])
        )

    def save_trust(self, issuer_jwks: dict[str, Any], revocations: RevocationList) -> None:
        """Written to a temporary file and renamed, so a power cut never leaves half a trust file."""
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.trust_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"issuer_keys": issuer_jwks, "revocations": revocations.to_dict()}))
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.trust_path)
