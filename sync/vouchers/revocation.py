"""The voucher revocation list: what a terminal syncs so it can refuse codes while offline."""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from .format import REF_BYTES


class RevocationView(Protocol):
    """What the verifier asks. The server may back it by its database; terminals use RevocationList."""

    @property
    def version(self) -> int: ...

    @property
    def cert_serials(self) -> Container[bytes]: ...  # revoked device certificates (lost phone, re-key)

    @property
    def link_refs(self) -> Container[bytes]: ...  # family links unlinked or consent withdrawn

    @property
    def person_refs(self) -> Container[bytes]: ...  # enrolment ended: no voucher of theirs is valid


def _refs(values: Any, name: str) -> frozenset[bytes]:
    if not isinstance(values, list | tuple | set | frozenset):
        raise ValueError(f"{name} must be a list of hex strings")
    out = set()
    for v in values:
        try:
            raw = bytes.fromhex(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name}: {v!r} is not hex") from None
        if len(raw) != REF_BYTES:
            raise ValueError(f"{name}: {v!r} is not {REF_BYTES} bytes")
        out.add(raw)
    return frozenset(out)


@dataclass(frozen=True, slots=True)
class RevocationList:
    """An immutable snapshot; the server ships it as `to_dict()` JSON with a growing `version`."""

    version: int = 0
    cert_serials: frozenset[bytes] = field(default_factory=frozenset)
    link_refs: frozenset[bytes] = field(default_factory=frozenset)
    person_refs: frozenset[bytes] = field(default_factory=frozenset)

    @classmethod
    def build(
        cls,
        version: int,
        *,
        cert_serials: Iterable[bytes] = (),
        link_refs: Iterable[bytes] = (),
        person_refs: Iterable[bytes] = (),
    ) -> RevocationList:
        return cls(version, frozenset(cert_serials), frozenset(link_refs), frozenset(person_refs))

    def to_dict(self) -> dict[str, Any]:
        # Sorted, so that equal lists serialise to equal JSON (cacheable, diffable).
        return {
            "version": self.version,
            "cert_serials": sorted(s.hex() for s in self.cert_serials),
            "link_refs": sorted(s.hex() for s in self.link_refs),
            "person_refs": sorted(s.hex() for s in self.person_refs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RevocationList:
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 0:
            raise ValueError("version must be a non-negative integer")
        return cls(
            version,
            _refs(data.get("cert_serials", []), "cert_serials"),
            _refs(data.get("link_refs", []), "link_refs"),
            _refs(data.get("person_refs", []), "person_refs"),
        )
