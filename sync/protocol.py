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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from enum import StrEnum
from itertools import pairwise
from typing import Any

from sync.settlement import (
    FACILITY_LEVELS,
    LOCALITIES,
    VISIT_CATEGORIES,
    BillItem,
    SettlementInputError,
    SettlementResult,
    Visit,
)
from sync.settlement._check import MAX_FEN, Reader
from sync.settlement.engine import _split_bill
from sync.vouchers.format import MAX_CODE_CHARS

ASSERTION_TTL_S = 300
"""A client assertion lives at most 5 minutes (`exp` - `iat`)."""
ASSERTION_ALGORITHM = "EdDSA"
MAX_PULL_LIMIT = 1000
DEFAULT_PULL_LIMIT = 500
MAX_CHECKPOINT_CHARS = 512
"""A pull checkpoint, as the server hands it out and takes it back (the terminal refuses a longer one)."""
MAX_PUSH_BATCH = 200
"""Mutations in one push; a longer outbox goes over several pushes."""
MAX_BILL_ITEMS = 2_000
"""Items in one settlement's bill. A village clinic's visit has a handful, a hospital's drug list a few
hundred; 2,000 short items still fit the terminal's 512 KiB per settlement (long names reach that
first). Without this bound one mutation could carry the engine's 10,000 items (megabytes, stored with
its answer) inside a push that is only held to the whole body's size."""
MAX_ITEM_TEXT_CHARS = 100
"""A bill item's `code` and `name`."""
MAX_CODE_VALUE_CHARS = 32
"""A code field (category, locality, facility level, item class, the roster copy's codes): longer is
no code, and refused without being quoted back."""
MAX_PERSON_CODES = 32
"""Codes in one list field of the roster copy of the person (chronic diseases, 两病)."""


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
    NOT_ON_ROSTER = "not_on_roster"  # a card (no voucher) for someone outside the clinic's village roster
    VISIT_TOO_OLD = "visit_too_old"  # settled offline longer ago than OFFLINE_SETTLEMENT_MAX_AGE_S


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
    RejectReason.NOT_ON_ROSTER: "非本村卫生室签约居民，请出示医保码",
    RejectReason.VISIT_TOO_OLD: "就诊时间超出离线结算期限",
}

_UNSENDABLE = re.compile("[\ud800-\udfff]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""NUL (PostgreSQL's text refuses it) and unpaired surrogates: the server refuses a push body holding
either (api/jsonlimits.py), so a bill must not get past the counter with one."""
_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


class WireError(ValueError):
    """A request or answer that does not have the shape of the protocol; `field` names where (cut to
    a short, sendable prefix: it may quote a key the other side made up)."""

    def __init__(self, field: str, message: str) -> None:
        field = _UNSENDABLE.sub("\ufffd", field if len(field) <= 100 else field[:100] + "…")
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
    try:
        # 9999-12-31T23:59:59-23:59 is a valid ISO 8601 text whose UTC instant is past datetime.max
        # (0001-01-01T00:00:00+23:59 before datetime.min): OverflowError, not a ValueError.
        return parsed.astimezone(UTC)
    except OverflowError:
        raise WireError(field, "is out of the range of a timestamp") from None


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
    if checkpoint is not None and (not isinstance(checkpoint, str) or len(checkpoint) > MAX_CHECKPOINT_CHARS):
        raise WireError("checkpoint", "must be the string a previous pull returned, or null")
    limit = body.get("limit", DEFAULT_PULL_LIMIT)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_PULL_LIMIT:
        raise WireError("limit", f"must be an integer from 1 to {MAX_PULL_LIMIT}")
    return checkpoint, limit


# ----------------------------------------------------------------------------------- push payloads
#
# `settlement.create`: one visit the terminal settled, offline or not. The terminal builds it with
# SettlementCreate.to_payload(); the server reads it with read_settlement_create(), so both ends check
# the same things in the same way (the bill with the settlement engine's own checks and field paths).
#
#   {"voucher": "YBS:..." | "YBD:...",   the e-voucher code exactly as scanned (online or offline form)
#      -- or, for a patient who shows a physical card (社保卡) and no code --
#    "personRef": "<16 hex digits>",    the `voucherRef` of the patient's entry in the clinic's synced
#                                       village roster. Accepted only for people on the roster of the
#                                       terminal's own clinic (checked at push; `not_on_roster`
#                                       otherwise); the settlement is stored without a voucher ref.
#    "clinicId": "<id>",                optional; when sent it must be the terminal's clinic
#    "visit": {...},                    the bill, see below
#    "split": {"basicFen", "criticalIllnessFen", "assistanceFen", "personalAccountFen", "cashFen"},
#                                       what the terminal computed (and printed as 预结算), integer fen,
#                                       adding up to the bill's total
#    "policyVersion": "<id>"}           the policy version the terminal computed with
#
# "visit" is sync.settlement.Visit.to_dict() or the subset a terminal knows about the visit itself:
#   {"visit_date": "YYYY-MM-DD", "category", "locality",
#    "items": [{"amount_fen", "item_class", "self_pay_permille"?, "code"?, "name"?}, ...],
#    "facility_level"?, "use_personal_account"? (default true)}
# The person fields of Visit.to_dict() (region, insurance_type, age_group, assistance_category,
# chronic_diseases, two_diseases, personal_account_balance_fen) may be sent too: they are the terminal's
# roster copy, and the server never uses them. The server settles with its own record of the person,
# its own record of the clinic (its level) and its own year-to-date totals.
#
# Each payload is bounded on its own, not only by the push body it travels in: at most MAX_BILL_ITEMS
# items, `code`/`name` at most MAX_ITEM_TEXT_CHARS, code fields at most MAX_CODE_VALUE_CHARS, the
# roster copy short codes (lists of at most MAX_PERSON_CODES) or an amount. Past a bound the mutation
# is rejected as `bad_payload` with the field (`payload.visit.items`), stored and answered like any
# other; the terminal refuses the same bills at the counter.
#
# The mutation's clientTime is when the terminal settled the visit, by the terminal's clock: recorded,
# never trusted (see api/replication/push.py for how the server dates a visit).
#
# `settlement.void`: {"mutationId": "<id of this terminal's settlement.create>", "note"?: "<why>"}

OFFLINE_SETTLEMENT_MAX_AGE_S = 30 * 86400
"""How long after a visit its settlement is still accepted at push: as long as a device certificate
(and so an offline voucher) can live. Older visits are rejected (voucher_expired / visit_too_old)."""
MAX_VOID_NOTE = 200

_VOUCHER_REF = re.compile(r"[0-9a-f]{16}")
_ID_TEXT = re.compile(r"[1-9][0-9]{0,18}")
_VISIT_PERSON_FIELDS = (
    "region",
    "insurance_type",
    "age_group",
    "assistance_category",
    "chronic_diseases",
    "two_diseases",
    "personal_account_balance_fen",
)
SPLIT_FIELDS = ("basicFen", "criticalIllnessFen", "assistanceFen", "personalAccountFen", "cashFen")


class AdjustReason(StrEnum):
    """Why an applied settlement's amounts (or day) differ from what the terminal computed."""

    RECOMPUTED = "recomputed"  # the server's year-to-date totals or record of the person differ
    POLICY_VERSION = "policy_version"  # the server settled under another policy version
    VISIT_DATE = "visit_date"  # the terminal's clock put the visit on another day than the server did


ADJUST_LABELS = {
    AdjustReason.RECOMPUTED: "按参保人最新年度累计重新结算",
    AdjustReason.POLICY_VERSION: "按就诊日适用的医保政策重新结算",
    AdjustReason.VISIT_DATE: "终端时钟有误，已按实际就诊日期结算",
}


@dataclass(frozen=True, slots=True)
class Split:
    """How a bill split across the layers, integer fen (the engine's SettlementResult, on the wire)."""

    basic_fen: int
    critical_illness_fen: int
    assistance_fen: int
    personal_account_fen: int
    cash_fen: int

    @property
    def total_fen(self) -> int:
        return (
            self.basic_fen
            + self.critical_illness_fen
            + self.assistance_fen
            + self.personal_account_fen
            + self.cash_fen
        )

    def minus(self, other: Split) -> Split:
        """Layer by layer, self - other (signed)."""
        return Split(
            self.basic_fen - other.basic_fen,
            self.critical_illness_fen - other.critical_illness_fen,
            self.assistance_fen - other.assistance_fen,
            self.personal_account_fen - other.personal_account_fen,
            self.cash_fen - other.cash_fen,
        )

    def to_dict(self) -> dict[str, int]:
        return dict(zip(SPLIT_FIELDS, self._values(), strict=True))

    def _values(self) -> tuple[int, int, int, int, int]:
        return (
            self.basic_fen,
            self.critical_illness_fen,
            self.assistance_fen,
            self.personal_account_fen,
            self.cash_fen,
        )

    @classmethod
    def from_result(cls, result: SettlementResult) -> Split:
        return cls(
            result.basic_fen,
            result.critical_illness_fen,
            result.assistance_fen,
            result.personal_account_fen,
            result.cash_fen,
        )

    @classmethod
    def from_dict(cls, data: object, where: str = "split") -> Split:
        r = Reader(data, where, SettlementInputError)
        values = [r.integer(name, hi=MAX_FEN) for name in SPLIT_FIELDS]
        r.done()
        return cls(*values)


@dataclass(frozen=True, slots=True)
class Bill:
    """The visit as the terminal knows it: what was billed, where, when; nothing about the person."""

    visit_date: date
    category: str
    locality: str
    items: tuple[BillItem, ...]
    facility_level: str | None = None
    use_personal_account: bool = True

    @property
    def total_fen(self) -> int:
        return sum(item.amount_fen for item in self.items)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "visit_date": self.visit_date.isoformat(),
            "category": self.category,
            "locality": self.locality,
            "items": [
                {
                    "amount_fen": i.amount_fen,
                    "item_class": i.item_class,
                    "self_pay_permille": i.self_pay_permille,
                    "code": i.code,
                    "name": i.name,
                }
                for i in self.items
            ],
            "use_personal_account": self.use_personal_account,
        }
        if self.facility_level is not None:
            data["facility_level"] = self.facility_level
        return data

    @classmethod
    def from_visit(cls, visit: Visit) -> Bill:
        return cls(
            visit.visit_date,
            visit.category,
            visit.locality,
            visit.items,
            visit.facility_level,
            visit.use_personal_account,
        )

    @classmethod
    def from_dict(cls, data: object) -> Bill:
        """Raises SettlementInputError with the engine's field path (``visit.items[0].amount_fen``)."""
        r = Reader(data, "visit", SettlementInputError)
        raw_items = r.raw("items")
        if not isinstance(raw_items, list):
            raise r.error("items", "must be a list")
        if len(raw_items) > MAX_BILL_ITEMS:
            raise r.error("items", f"more than {MAX_BILL_ITEMS} items")
        items = []
        for n, raw in enumerate(raw_items):
            ir = Reader(raw, f"visit.items[{n}]", SettlementInputError)
            # Wide integer bounds here: the engine's bill check below says what is wrong with a value.
            items.append(
                BillItem(
                    ir.integer("amount_fen", lo=-(2**63), hi=2**63),
                    _code_text(ir, "item_class"),
                    ir.integer("self_pay_permille", lo=-(2**63), hi=2**63)
                    if ir.has("self_pay_permille")
                    else 0,
                    _short_text(ir, "code"),
                    _short_text(ir, "name"),
                )
            )
            ir.done()
        bill = cls(
            visit_date=r.date("visit_date"),
            category=_code(r, "category", VISIT_CATEGORIES),
            locality=_code(r, "locality", LOCALITIES),
            items=tuple(items),
            facility_level=_code(r, "facility_level", FACILITY_LEVELS)
            if r.opt_raw("facility_level")
            else None,
            use_personal_account=r.boolean("use_personal_account", default=True),
        )
        for name in _VISIT_PERSON_FIELDS:
            _roster_copy(r, name)  # the terminal's roster copy of the person: allowed, never used
        r.done()
        check_bill(bill.items)
        return bill


def _short_text(r: Reader, key: str, limit: int = MAX_ITEM_TEXT_CHARS) -> str:
    value = r.opt_raw(key)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > limit:
        raise r.error(key, f"must be a string of at most {limit} characters")
    if _UNSTORABLE.search(value):
        raise r.error(key, "must not hold NUL or an unpaired surrogate")
    return value


def _code_text(r: Reader, key: str) -> str:
    """A code as sent, bounded before anything quotes it (the engine's message names unknown codes)."""
    value = r.string(key)
    if len(value) > MAX_CODE_VALUE_CHARS:
        raise r.error(key, f"unknown code (longer than {MAX_CODE_VALUE_CHARS} characters)")
    return value


def _code(r: Reader, key: str, allowed: Mapping[str, str]) -> str:
    _code_text(r, key)
    return r.code(key, allowed)


def _roster_copy(r: Reader, key: str) -> None:
    """A person field of Visit.to_dict(), unused but bounded: short codes, a list of them, an amount."""
    value = r.opt_raw(key)
    if value is None or isinstance(value, bool):
        return
    if type(value) is int:
        if abs(value) > 10 * MAX_FEN:  # the engine's own bound of a balance
            raise r.error(key, f"must be <= {10 * MAX_FEN}")
        return
    values = value if isinstance(value, list) else [value]
    if len(values) > MAX_PERSON_CODES:
        raise r.error(key, f"more than {MAX_PERSON_CODES} codes")
    for item in values:
        if not isinstance(item, str) or len(item) > MAX_CODE_VALUE_CHARS:
            raise r.error(
                key, f"must be a code or a list of codes (at most {MAX_CODE_VALUE_CHARS} characters)"
            )


def check_bill(items: tuple[BillItem, ...]) -> int:
    """The settlement engine's own check of a bill (non-empty, each amount integer fen from 0 to the
    absurd-amount bound, known item classes, 乙类 shares 0-1000 per mille, a total within bounds), with
    its field paths; returns the total. Raises SettlementInputError."""
    total, _, _ = _split_bill(items)
    return total


def bill_key(items: Iterable[Any]) -> list[tuple[int, str, int, str]]:
    """A bill as the duplicate-visit check compares it (wire-shape item dicts), whatever their order.
    Here, not on either end: the terminal refuses at the counter exactly what the server would refuse
    as `duplicate_visit`."""
    return sorted(
        (
            int(i["amount_fen"]),
            str(i["item_class"]),
            int(i.get("self_pay_permille", 0)),
            str(i.get("code", "")),
        )
        for i in items
    )


@dataclass(frozen=True, slots=True)
class SettlementCreate:
    bill: Bill
    split: Split
    policy_version: str
    voucher: str | None = None
    person_ref: str | None = None
    clinic_id: str | None = None

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "visit": self.bill.to_dict(),
            "split": self.split.to_dict(),
            "policyVersion": self.policy_version,
        }
        if self.voucher is not None:
            payload["voucher"] = self.voucher
        if self.person_ref is not None:
            payload["personRef"] = self.person_ref
        if self.clinic_id is not None:
            payload["clinicId"] = self.clinic_id
        return payload


def read_settlement_create(payload: object, where: str = "payload") -> SettlementCreate:
    """A `settlement.create` payload, checked; raises WireError naming the field (``payload.visit.
    items[0].amount_fen`` for a bad bill item: the engine's path under the payload)."""
    try:
        r = Reader(payload, "", SettlementInputError)
        voucher = r.opt_raw("voucher")
        person_ref = r.opt_raw("personRef")
        if (voucher is None) == (person_ref is None):
            raise r.error("voucher", "give exactly one of voucher (the scanned code) and personRef (a card)")
        if voucher is not None and (not isinstance(voucher, str) or not 0 < len(voucher) <= MAX_CODE_CHARS):
            raise r.error("voucher", f"must be the scanned code, at most {MAX_CODE_CHARS} characters")
        if person_ref is not None and (
            not isinstance(person_ref, str) or not _VOUCHER_REF.fullmatch(person_ref)
        ):
            raise r.error("personRef", "must be a roster entry's voucherRef (16 lowercase hex digits)")
        clinic_id = r.opt_raw("clinicId")
        if clinic_id is not None and (not isinstance(clinic_id, str) or not _ID_TEXT.fullmatch(clinic_id)):
            raise r.error("clinicId", "must be a clinic id (decimal digits, as a string)")
        version = r.string("policyVersion")
        if len(version) > 64:
            raise r.error("policyVersion", "must be a policy version id (at most 64 characters)")
        bill = Bill.from_dict(r.raw("visit"))
        split = Split.from_dict(r.raw("split"))
        r.done()
    except SettlementInputError as exc:
        raise WireError(f"{where}.{exc.field}", exc.message) from None
    if split.total_fen != bill.total_fen:
        raise WireError(
            f"{where}.split", f"the layers add up to {split.total_fen} fen, the bill to {bill.total_fen}"
        )
    return SettlementCreate(bill, split, version, voucher, person_ref, clinic_id)


@dataclass(frozen=True, slots=True)
class SettlementVoid:
    mutation_id: str
    """The id of this terminal's `settlement.create` mutation whose settlement is voided."""
    note: str | None = None

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"mutationId": self.mutation_id}
        if self.note is not None:
            payload["note"] = self.note
        return payload


def read_settlement_void(payload: object, where: str = "payload") -> SettlementVoid:
    if not isinstance(payload, dict):
        raise WireError(where, "must be an object")
    extra = set(payload) - {"mutationId", "note"}
    if extra:
        raise WireError(f"{where}.{sorted(extra)[0]}", "is not a field of settlement.void")
    target = payload.get("mutationId")
    if not is_uuid7(target):
        raise WireError(f"{where}.mutationId", "must be the id (a UUIDv7) of a settlement.create")
    note = payload.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > MAX_VOID_NOTE):
        raise WireError(f"{where}.note", f"must be a string of at most {MAX_VOID_NOTE} characters")
    assert isinstance(target, str)
    return SettlementVoid(target, note)


@dataclass(frozen=True, slots=True)
class PushResult:
    """One entry of a push answer, as the terminal reads it: `data` is the whole entry (the server's
    `settlement` and `adjustment`, or a rejection's `message` and `field`)."""

    id: str
    seq: int
    status: ResultStatus
    reason: str | None
    data: dict[str, Any]


def parse_push_answer(body: object) -> tuple[list[PushResult], int | None]:
    """(results, expectedSeq) of a push answer; expectedSeq is set when the batch hit a gap."""
    if not isinstance(body, dict) or not isinstance(body.get("results"), list):
        raise WireError("body", 'must be {"results": [...]}')
    results = []
    for n, entry in enumerate(body["results"]):
        where = f"results[{n}]"
        if not isinstance(entry, dict) or not is_uuid7(entry.get("id")):
            raise WireError(where, "must be a result with the mutation's id")
        seq = entry.get("seq")
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise WireError(f"{where}.seq", "must be an integer")
        try:
            status = ResultStatus(str(entry.get("status")))
        except ValueError:
            raise WireError(f"{where}.status", "is not a known status") from None
        reason = entry.get("reason")
        if reason is not None and not isinstance(reason, str):
            raise WireError(f"{where}.reason", "must be a string")
        results.append(PushResult(entry["id"], seq, status, reason, entry))
    expected = body.get("expectedSeq")
    if expected is not None and (not isinstance(expected, int) or isinstance(expected, bool)):
        raise WireError("expectedSeq", "must be an integer")
    return results, expected
