"""The wire of /sync (DESIGN.md sections 4 and 7), shared by the server and the clinic terminal.

JSON over HTTP, camelCase keys. Pure: the server validates requests with these readers and the terminal
builds requests and reads answers with them, so both ends agree on every field and every reason code.

    POST /sync/enrol  {"code", "publicKey"}                 -> {"terminalId", "clinicId", "clinicName", ...}
    POST /sync/pull   {"checkpoint": str | null, "limit"}   -> {"changes", "checkpoint", "hasMore"}
                                                               or {"resync": true}
    POST /sync/push   {"mutations": [Mutation, ...]}        -> {"results": [Result, ...], "expectedSeq"?}
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from itertools import pairwise
from typing import Any

ASSERTION_TTL_S = 300
"""A client assertion lives at most 5 minutes (`exp` - `iat`)."""
ASSERTION_ALGORITHM = "EdDSA"
MAX_PULL_LIMIT = 1000
DEFAULT_PULL_LIMIT = 500
MAX_PUSH_BATCH = 200
"""Mutations in one push; a longer outbox goes over several pushes."""


class MutationKind(StrEnum):
    SETTLEMENT_CREATE = "settlement.create"
    SETTLEMENT_VOID = "settlement.void"


class ResultStatus(StrEnum):
    APPLIED = "applied"
    ADJUSTED = "adjusted"  # applied, with the server's amounts where they differ from the terminal's
    REJECTED = "rejected"


class RejectReason(StrEnum):
    """Stable reason codes of a rejected mutation; the terminal shows each in Chinese."""

    VOUCHER_INVALID = "voucher_invalid"  # malformed, bad signature, unknown key
    VOUCHER_EXPIRED = "voucher_expired"
    VOUCHER_REVOKED = "voucher_revoked"
    VOUCHER_REPLAYED = "voucher_replayed"  # the code was already used (another terminal, another visit)
    PERSON_UNKNOWN = "person_unknown"
    NOT_INSURED = "not_insured"  # no enrolment covering the visit day
    DUPLICATE_VISIT = "duplicate_visit"
    OTHER_CLINIC = "other_clinic"  # a payload naming a clinic that is not the terminal's
    BAD_PAYLOAD = "bad_payload"  # the bill or the split does not validate (negative, absurd, unknown codes)
    POLICY_UNKNOWN = "policy_unknown"  # no policy version covers the visit day
    NOT_FOUND = "not_found"  # a void naming a settlement this terminal never pushed
    ALREADY_VOID = "already_void"
    TERMINAL_REVOKED = "terminal_revoked"


REASON_LABELS = {
    RejectReason.VOUCHER_INVALID: "医保码无效",
    RejectReason.VOUCHER_EXPIRED: "医保码已过期",
    RejectReason.VOUCHER_REVOKED: "医保码已被注销",
    RejectReason.VOUCHER_REPLAYED: "医保码已被使用",
    RejectReason.PERSON_UNKNOWN: "查无此参保人",
    RejectReason.NOT_INSURED: "就诊当日未参保",
    RejectReason.DUPLICATE_VISIT: "重复结算",
    RejectReason.OTHER_CLINIC: "非本机构的结算",
    RejectReason.BAD_PAYLOAD: "结算数据有误",
    RejectReason.POLICY_UNKNOWN: "就诊日期无适用的医保政策",
    RejectReason.NOT_FOUND: "未找到要作废的结算",
    RejectReason.ALREADY_VOID: "该结算已作废",
    RejectReason.TERMINAL_REVOKED: "终端已被停用",
}

_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


class WireError(ValueError):
    """A request or answer that does not have the shape of the protocol; `field` names where."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def uuid7(now: datetime | None = None, rand: bytes | None = None) -> str:
    """A UUIDv7 (RFC 9562): 48-bit Unix milliseconds, version 7, 74 random bits."""

    ms = int((now or datetime.now(UTC)).timestamp() * 1000)
    tail = bytearray(rand if rand is not None else os.urandom(10))
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | (tail[0] & 0x0F) << 72 | tail[1] << 64
    value |= (0b10 << 62) | (int.from_bytes(tail[2:10], "big") & (2**62 - 1))
    return str(uuid.UUID(int=value))


def is_uuid7(text: object) -> bool:
    return isinstance(text, str) and _UUID_TEXT.fullmatch(text) is not None


def _timestamp(value: object, field: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise WireError(field, "must be an ISO 8601 timestamp with a zone")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise WireError(field, "must be an ISO 8601 timestamp with a zone") from None
    if parsed.tzinfo is None:
        raise WireError(field, "needs a time zone")
    return parsed.astimezone(UTC)


@dataclass(frozen=True, slots=True)
class Mutation:
    id: str
    seq: int
    kind: MutationKind
    client_time: datetime
    payload: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "seq": self.seq,
            "kind": self.kind.value,
            "clientTime": self.client_time.isoformat(),
            "payload": self.payload,
        }

    @classmethod
    def from_dict(cls, data: object, where: str = "mutation") -> Mutation:
        if not isinstance(data, dict):
            raise WireError(where, "must be an object")
        extra = set(data) - {"id", "seq", "kind", "clientTime", "payload"}
        if extra:
            raise WireError(f"{where}.{sorted(extra)[0]}", "is not a field of a mutation")
        if not is_uuid7(data.get("id")):
            raise WireError(f"{where}.id", "must be a lowercase UUIDv7")
        seq = data.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 < seq < 2**62:
            raise WireError(f"{where}.seq", "must be a positive integer")
        try:
            kind = MutationKind(str(data.get("kind")))
        except ValueError:
            raise WireError(f"{where}.kind", "is not a known mutation kind") from None
        payload = data.get("payload")
        if not isinstance(payload, dict):
            raise WireError(f"{where}.payload", "must be an object")
        return cls(data["id"], seq, kind, _timestamp(data.get("clientTime"), f"{where}.clientTime"), payload)


def parse_push(body: object) -> list[Mutation]:
    """The mutations of a push request, in the order sent; their seqs must rise by one."""
    if not isinstance(body, dict) or set(body) - {"mutations"}:
        raise WireError("body", 'must be {"mutations": [...]}')
    raw = body.get("mutations")
    if not isinstance(raw, list) or not raw:
        raise WireError("mutations", "must be a non-empty list")
    if len(raw) > MAX_PUSH_BATCH:
        raise WireError("mutations", f"at most {MAX_PUSH_BATCH} per push")
    mutations = [Mutation.from_dict(item, f"mutations[{n}]") for n, item in enumerate(raw)]
    for n, (before, after) in enumerate(pairwise(mutations), start=1):
        if after.seq != before.seq + 1:
            raise WireError(f"mutations[{n}].seq", "seqs in one push must be consecutive and rising")
    if len({m.id for m in mutations}) != len(mutations):
        raise WireError("mutations", "two mutations share an id")
    return mutations


def parse_pull(body: object) -> tuple[str | None, int]:
    """(checkpoint, limit) of a pull request."""
    if not isinstance(body, dict) or set(body) - {"checkpoint", "limit"}:
        raise WireError("body", 'must be {"checkpoint": string|null, "limit": integer}')
    checkpoint = body.get("checkpoint")
    if checkpoint is not None and (not isinstance(checkpoint, str) or len(checkpoint) > 512):
        raise WireError("checkpoint", "must be the string a previous pull returned, or null")
    limit = body.get("limit", DEFAULT_PULL_LIMIT)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PULL_LIMIT:
        raise WireError("limit", f"must be an integer from 1 to {MAX_PULL_LIMIT}")
    return checkpoint, limit
