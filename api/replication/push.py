"""Push for clinic terminals: a batch from a terminal's outbox, applied in seq order, exactly once,
with every amount recomputed by the server (DESIGN.md section 4, "Push").

Exactly once. Every mutation a terminal pushes is stored in `pushed_mutations` with the answer it got,
in the same transaction as its effects, and the terminal's `last_seq` moves with it. A batch runs under
a lock on the terminal's row (SELECT ... FOR UPDATE on PostgreSQL; on SQLite a no-op write takes the
database's single write lock first), so two workers pushing the same batch take turns and the second
finds the first's answers. A repeated (terminal, mutation id) gets its stored answer back, also after a
restart (everything is in the database); a seq already used by another id is a CONFLICT and nothing of
the batch is applied; a gap (a first new seq past `last_seq + 1`) applies nothing from the gap on and
answers `expectedSeq`. The unique constraints of `pushed_mutations` and `settlements.client_ref` are the
last line: if they ever fire, the batch rolls back whole and the terminal is told to retry.

Authoritative recomputation. A `settlement.create` names the patient by the scanned e-voucher (or, for
a physical card, by a roster entry: only for people on the clinic's own village roster), and carries
the bill and the terminal's split. The server checks the voucher with the online verifier (the replay
key is stored, in this transaction, so a code settled at two offline terminals is rejected at the
second push), checks the enrolment on the visit day, refuses a duplicate visit, and settles the bill
with its own record of the person (insurance type and region of the enrolment that day, age group,
assistance category, diseases, 两病, personal-account balance), its own record of the clinic (level,
region), the policy version in force that day and the person's year-to-date totals from every stored,
not voided settlement of that year. Two pushes for one person at the same moment take turns on the
person's row (locked, with every other person of the batch, in id order, so two batches never wait on
each other in a circle) before the totals are read: the second sees the first and is adjusted, never
paid past a cap. Where the server's amounts (or day, or version) differ from the terminal's, the
settlement is stored with the server's and a SettlementAdjustment keeps the per-layer deltas: `adjusted`.

Dating a visit; the terminal's clock is recorded, never trusted.
- With an e-voucher, the code's own signed time pins the visit: an online code is signed by this server
  at issue and lives a minute; an offline code is signed by the resident's phone under a certificate
  this server issued, and also lives a minute. The visit is at the terminal's clock (`clientTime`) when
  that falls inside the code's window (± the verifier's skew; never later than the push, so a clock a
  minute fast cannot put a genuine code in our future); otherwise the terminal's clock is off and
  the visit is at the code's time. Expiry is then judged at that moment, so a terminal a day off can
  neither make a good code look expired nor stretch a code's life, and what decides is what is signed.
  A visit more than OFFLINE_SETTLEMENT_MAX_AGE_S (30 days, the longest a device certificate lives)
  before the push is `voucher_expired`; a code dated after the push (beyond the skew) `voucher_invalid`.
  Revocations are judged as they stand at the push (a phone reported lost stops its codes, also those a
  terminal took offline before it heard of it: such rejections are reviewed like any other).
- With a card there is nothing signed: the visit is at `clientTime`, clamped to the terminal's
  enrolment and to the push (a visit cannot happen in the future); older than 30 days: `visit_too_old`.
- The visit day is the Asia/Shanghai date of that moment. If it is not the day the terminal sent, the
  server's day is used (and its policy version and year) and the result is `adjusted` (`visit_date`).

A void (`settlement.void`) names a settlement this terminal pushed by its create's mutation id; the row
is kept with `voided_at` (it counts nowhere: year-to-date totals, year totals) and the personal-account
debit is credited back.

Every write to a synced row records change-log entries in the same transaction: the person's roster
entry (`person` in `village:<code>`, its year-to-date totals changed), the settlement and the personal
account for the resident's own replication (`person:<id>`), and each rejected or adjusted mutation as a
`push_issue` in `clinic:<clinic id>` (its document is the PushedMutation row; see pull.py).

A rejected mutation's payload is kept whole up to MAX_KEPT_REJECTED_PAYLOAD characters of JSON; past
that, as a stand-in `{"truncated": true, "bytes", "sha256", "prefix"}` (the answer is kept whole).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import PydanticUndefined
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer
from sqlmodel import SQLModel, col

from api.db import dialect_name, one_of
from api.dbtypes import utcnow
from api.errors import BadUserInput, Conflict
from api.filings import registrations
from api.pagination import SHANGHAI
from api.people import service as people_service
from api.people.models import (
    AccountFlow,
    AccountFlowKind,
    Enrolment,
    Facility,
    InsuredPerson,
    PersonalAccount,
    Settlement,
)
from api.replication import changelog
from api.replication.changelog import Change
from api.replication.models import PushedMutation
from api.replication.pull import PUSH_ISSUE, ROSTER, clinic_scope
from api.settlement import service as settlement_service
from api.settlement.models import SettlementAdjustment
from api.state import AppState
from api.terminals.models import Terminal, TerminalStatus
from api.vouchers import service as voucher_service
from api.vouchers.models import VoucherSubject
from sync.protocol import (
    ADJUST_LABELS,
    OFFLINE_SETTLEMENT_MAX_AGE_S,
    REASON_LABELS,
    AdjustReason,
    Mutation,
    MutationKind,
    RejectReason,
    ResultStatus,
    SettlementCreate,
    SettlementVoid,
    Split,
    WireError,
    bill_key,
    read_settlement_create,
    read_settlement_void,
)
from sync.settlement import PolicySet, SettlementInputError, Visit, YearToDate, compute
from sync.vouchers import OfflineCode, OnlineCode, Reason, VoucherFormatError
from sync.vouchers.format import (
    ONLINE_PREFIX,
    from_text,
    parse_offline_payload,
    parse_online_payload,
    replay_key,
)

_RETRYABLE = {"40P01", "40001"}  # deadlock_detected, serialization_failure
SOURCE_TERMINAL = "terminal"
SETTLEMENT_ENTITY = "settlement"
ACCOUNT_ENTITY = "personal_account"
VOID_FLOW_KIND = "settlement_void"
"""The account flow that credits back a voided settlement's personal-account payment."""
MAX_KEPT_REJECTED_PAYLOAD = 64 * 1024
"""Characters of a rejected mutation's payload, as stored (its json.dumps text, ASCII: so bytes too),
kept whole; a longer one is kept as a stand-in (_kept_payload). A rejected payload may have failed the
protocol's per-mutation bounds (a bad_payload is as large as the push body lets it be,
sync_max_inflated_bytes), and it is kept forever and read with every page of push issues. A village
clinic's visit is a handful of items, each about 150 characters (a drug's code and its Chinese name,
escaped as \\uXXXX): 64 KiB keeps a bill of some 400 such items whole for the reviewer, and past it
the payload is junk or a bill the terminal keeps in full in its own outbox anyway. An applied or
adjusted payload is kept whole: it passed sync.protocol's per-mutation bounds (at most MAX_BILL_ITEMS
items of short text)."""
KEPT_PAYLOAD_PREFIX = 4096
"""Characters of the payload's JSON text kept in the stand-in: enough to tell what was sent."""

_VOUCHER_REASONS = {
    Reason.MALFORMED: RejectReason.VOUCHER_INVALID,
    Reason.UNKNOWN_KEY: RejectReason.VOUCHER_INVALID,
    Reason.BAD_SIGNATURE: RejectReason.VOUCHER_INVALID,
    Reason.NOT_YET_VALID: RejectReason.VOUCHER_INVALID,
    Reason.CERTIFICATE_NOT_YET_VALID: RejectReason.VOUCHER_INVALID,
    Reason.EXPIRED: RejectReason.VOUCHER_EXPIRED,
    Reason.CERTIFICATE_EXPIRED: RejectReason.VOUCHER_EXPIRED,
    Reason.REVOKED: RejectReason.VOUCHER_REVOKED,
    Reason.REPLAYED: RejectReason.VOUCHER_REPLAYED,
}


# The batch's reads, built once: a statement built per batch costs its construction and cache key each
# time (hundreds of IN values coerced one by one); an expanding parameter takes the list at execution.
_PEOPLE = InsuredPerson.__table__  # type: ignore[attr-defined]
_SUBJECTS = VoucherSubject.__table__  # type: ignore[attr-defined]
_P = _PEOPLE.c
_S = Settlement.__table__.c  # type: ignore[attr-defined]
_E = Enrolment.__table__.c  # type: ignore[attr-defined]
_V = _SUBJECTS.c
_A = PersonalAccount.__table__.c  # type: ignore[attr-defined]
_PEOPLE_BY_REF = (
    select(_V.ref, _P.id, _P.birth_date, _P.village_code, _P.assistance_category, _P.chronic_diseases,
           _P.two_diseases)
    .select_from(_SUBJECTS.join(_PEOPLE, _V.person_id == _P.id))
    .where(one_of(_V.ref, "refs"))
)  # fmt: skip
_PEOPLE_OF_REFS = select(_V.person_id).where(one_of(_V.ref, "refs"))
_ENROLMENTS = select(_E.person_id, _E.insurance_type, _E.region_code, _E.start_on, _E.end_on).where(
    one_of(_E.person_id, "people")
)
_BALANCES = select(_A.person_id, _A.balance_fen).where(one_of(_A.person_id, "people"))
_RECENT = select(_S.id, _S.person_id, _S.settled_at, _S.category, _S.total_fen, _S.visit).where(
    one_of(_S.person_id, "people"),
    _S.facility_id == bindparam("clinic"),
    _S.settled_at >= bindparam("since"),
    _S.voided_at.is_(None),
    one_of(_S.total_fen, "totals"),
)
_TAKEN = select(_S.client_ref).where(one_of(_S.client_ref, "ids"))
_USED_VOUCHERS = select(_S.voucher_ref).where(one_of(_S.voucher_ref, "keys"))

_STORED = (
    select(PushedMutation)
    .where(
        col(PushedMutation.terminal_id) == bindparam("terminal"),
        one_of(col(PushedMutation.mutation_id), "ids") | one_of(col(PushedMutation.seq), "seqs"),
    )
    # A repeat is answered with its stored `result`: the payload (megabytes for a bill of MAX_BILL_ITEMS
    # long items) is never read here, so it is not loaded.
    .options(defer(PushedMutation.payload))  # type: ignore[arg-type]  # sqlmodel types it a dict
)


class _Replayed(Exception):
    """A code of the batch was stored as used by another transaction meanwhile: retry the batch."""


class _Rejected(Exception):
    """One mutation's rejection: it is stored and answered, and the batch goes on."""

    def __init__(self, reason: RejectReason, *, field: str | None = None, detail: str | None = None) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.field = field
        self.detail = detail


@dataclass(frozen=True, slots=True)
class _Person:
    """What a push needs of a person, as plain values (ORM attribute access costs, per mutation)."""

    id: int
    birth_date: dt.date
    village_code: str | None
    assistance_category: str | None
    chronic_diseases: frozenset[str]
    two_diseases: frozenset[str]

    @classmethod
    def of(cls, row: InsuredPerson) -> _Person:
        assert row.id is not None
        return cls(
            row.id,
            row.birth_date,
            row.village_code,
            row.assistance_category,
            frozenset(row.chronic_diseases),
            frozenset(row.two_diseases),
        )


@dataclass(frozen=True, slots=True)
class _Enrolment:
    insurance_type: str
    region_code: str
    start_on: dt.date
    end_on: dt.date | None


@dataclass
class _Outcome:
    status: ResultStatus
    body: dict[str, Any]
    settlement_id: int | None = None
    reason: str | None = None


@dataclass
class _Write:
    """One processed mutation whose rows are written with the rest of the batch (_Batch.materialize)."""

    mutation: Mutation
    outcome: _Outcome
    settlement: dict[str, Any] | None = None
    """The settlement's row (Core, not an ORM object: a batch writes hundreds); its "id" once written."""
    person: _Person | None = None
    account_delta: int = 0
    adjustment: dict[str, Any] | None = None


@dataclass
class _Seen:
    """A settlement of the batch's people at this clinic, for the duplicate-visit check."""

    category: str
    total_fen: int
    items: Sequence[Any]
    row: dict[str, Any]
    """The settlement's row, or for a stored one just {"id": ...}: a void finds it by its id."""
    _bill: list[tuple[int, str, int, str]] | None = None

    @property
    def bill(self) -> list[tuple[int, str, int, str]]:
        """Built only for a candidate of the same category and total: most never get here."""
        if self._bill is None:
            self._bill = bill_key(self.items)
        return self._bill


@dataclass
class _Batch:
    """One batch's view of the database, read once after the locks are taken, and its pending writes.

    Everything a batch reads about its people (their rows, enrolments, accounts, year-to-date totals,
    recent settlements at this clinic, used voucher refs) is read in a few queries up front and then
    carried in memory from mutation to mutation, exactly as the database would answer after each
    write: the locks make this batch the only writer of those rows until it commits. Writes are
    collected and flushed together (a handful of multi-row INSERTs per batch), and before a void,
    which reads the settlement it voids from the database."""

    session: AsyncSession
    state: AppState
    terminal: Terminal
    clinic: Facility
    now: dt.datetime
    policies: PolicySet
    people_by_ref: dict[str, _Person] = field(default_factory=dict)
    enrolments: dict[int, list[_Enrolment]] = field(default_factory=dict)
    balances: dict[int, int | None] = field(default_factory=dict)
    """Each person's personal-account balance as this batch has left it (None: no account)."""
    ytd: dict[tuple[int, int], YearToDate] = field(default_factory=dict)
    seen: dict[tuple[int, dt.date], list[_Seen]] = field(default_factory=dict)
    taken_ids: set[str] = field(default_factory=set)
    used_vouchers: set[str] = field(default_factory=set)
    totals: list[int] = field(default_factory=list)
    """The bill totals of the batch's creates: only a stored settlement of one of them can be a
    duplicate, so only those are read (a busy clinic has thousands of recent settlements)."""
    pending: list[_Write] = field(default_factory=list)
    vouchers: voucher_service.BatchVerifier | None = None
    # The terminal's and clinic's values every mutation reads, as plain attributes (an ORM attribute
    # read costs several times a plain one), and the push's local date.
    terminal_id: int = field(init=False)
    clinic_id: int = field(init=False)
    clinic_ref: str = field(init=False)
    clinic_level: str = field(init=False)
    clinic_region: str = field(init=False)
    village_code: str | None = field(init=False)
    enrolled_at: dt.datetime = field(init=False)
    today: dt.date = field(init=False)
    skew_s: int = field(init=False)

    def __post_init__(self) -> None:
        assert self.terminal.id is not None and self.clinic.id is not None
        self.terminal_id = self.terminal.id
        self.clinic_id = self.clinic.id
        self.clinic_ref = str(self.clinic.id)
        self.clinic_level = self.clinic.level
        self.clinic_region = self.clinic.region_code
        self.village_code = self.clinic.village_code
        self.enrolled_at = self.terminal.enrolled_at
        self.today = self.now.astimezone(SHANGHAI).date()
        self.skew_s = self.state.settings.voucher_skew_s

    async def load(self, mutations: Sequence[Mutation], parsed: dict[str, _Parsed]) -> None:
        session = self.session
        creates = [p for p in parsed.values() if isinstance(p, SettlementCreate)]
        self.totals = sorted({c.bill.total_fen for c in creates})
        refs = {
            ref
            for c in creates
            if (ref := c.person_ref if c.voucher is None else _claimed_ref(c.voucher)) is not None
        }
        if refs:
            rows = await session.execute(_PEOPLE_BY_REF, {"refs": sorted(refs)})
            self.people_by_ref = {
                ref: _Person(
                    int(pid), birth, village, category, frozenset(chronic or ()), frozenset(two or ())
                )
                for ref, pid, birth, village, category, chronic, two in rows
            }
        await self._load_people([p.id for p in self.people_by_ref.values()])
        ids = [m.id for m in mutations]
        if ids:
            taken = await session.execute(_TAKEN, {"ids": ids})
            self.taken_ids = {ref for ref in taken.scalars() if ref is not None}
        codes = [c.voucher for c in creates if c.voucher is not None]
        if codes:
            # Revocations, subjects and stored replay keys of every code of the batch, one query each.
            self.vouchers = voucher_service.BatchVerifier(
                session, self.state.settings, self.state.voucher_keys
            )
            await self.vouchers.prefetch(codes)
        keys = {key for c in creates if c.voucher is not None and (key := _replay_ref(c.voucher)) is not None}
        if keys:
            used = await session.execute(_USED_VOUCHERS, {"keys": sorted(keys)})
            self.used_vouchers = {ref for ref in used.scalars() if ref is not None}

    async def _load_people(self, person_ids: Sequence[int]) -> None:
        wanted = [pid for pid in person_ids if pid not in self.enrolments]
        if not wanted:
            return
        session = self.session
        for pid in wanted:
            self.enrolments[pid] = []
            self.balances[pid] = None
        for pid, insurance_type, region_code, start_on, end_on in await session.execute(
            _ENROLMENTS, {"people": wanted}
        ):
            self.enrolments[pid].append(_Enrolment(insurance_type, region_code, start_on, end_on))
        for pid, balance in await session.execute(_BALANCES, {"people": wanted}):
            self.balances[pid] = int(balance)
        if not self.totals:
            return  # nothing of this batch can be a duplicate visit
        # Settlements a visit could duplicate: this clinic's, not voided, within the offline window,
        # of the same total as one of the batch's bills. Plain columns, not ORM objects.
        since = self.now - dt.timedelta(seconds=OFFLINE_SETTLEMENT_MAX_AGE_S + 2 * 86400)
        recent = await session.execute(
            _RECENT, {"people": wanted, "clinic": self.clinic.id, "since": since, "totals": self.totals}
        )
        for sid, pid, settled_at, category, total, visit in recent:
            items = visit.get("items", []) if visit is not None else None
            self._remember({"id": sid}, pid, settled_at, category, total, items)

    def _remember(
        self,
        row: dict[str, Any],
        person_id: int,
        settled_at: dt.datetime,
        category: str,
        total_fen: int,
        items: Sequence[Any] | None,
    ) -> None:
        if items is None:
            return
        key = (person_id, settled_at.astimezone(SHANGHAI).date())
        self.seen.setdefault(key, []).append(_Seen(category, total_fen, items, row))

    async def person_loaded(self, person: _Person) -> None:
        await self._load_people([person.id])

    async def year_to_date(self, person_id: int, year: int) -> YearToDate:
        if (person_id, year) not in self.ytd:
            # Every person of the batch at once: the first visit of each in this year costs no query.
            # (No pending row of the batch can be missing from it: a person with one has carried totals.)
            people = sorted({pid for pid in self.enrolments} | {person_id})
            missing = [pid for pid in people if (pid, year) not in self.ytd]
            found = await settlement_service.year_to_date_many(self.session, missing, year)
            for pid, ytd in found.items():
                self.ytd[(pid, year)] = ytd
        return self.ytd[(person_id, year)]

    def forget(self, settlement_id: int) -> None:
        """A voided settlement no longer makes a visit a duplicate (this batch's own rows are not the
        session's objects, so setting voided_at on the row read back does not reach them)."""
        for seen in self.seen.values():
            seen[:] = [s for s in seen if s.row.get("id") != settlement_id]

    def duplicate(self, person_id: int, day: dt.date, create: SettlementCreate) -> bool:
        bill = create.bill
        candidates = [
            s
            for s in self.seen.get((person_id, day), ())
            if s.category == bill.category and s.total_fen == bill.total_fen
        ]
        if not candidates:
            return False
        wanted = bill_key(bill.to_dict()["items"])
        return any(s.bill == wanted for s in candidates)

    async def materialize(self) -> None:
        """Writes the pending mutations' rows in a few multi-row statements: the settlements (INSERT ...
        RETURNING their ids), the personal accounts (one UPDATE per person), account flows, adjustments,
        the pushed mutations with their answers, and the change-log entries of it all."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        session = self.session
        assert self.terminal.id is not None and self.clinic.id is not None
        if self.vouchers is not None and await self.vouchers.remember():
            # Another transaction stored one of these codes' replay keys after this batch read them (a
            # code verified elsewhere at this very moment): undo, and the retry will see it as used.
            raise _Replayed
        created = [w for w in pending if w.settlement is not None]
        ids = await _insert(
            session, Settlement, [w.settlement for w in created if w.settlement], key="client_ref"
        )
        changes: list[Change] = []
        # Personal accounts: one statement per person, whatever the number of their visits in the batch.
        deltas: dict[int, int] = {}
        for w in created:
            if w.account_delta and w.person is not None:
                deltas[w.person.id] = deltas.get(w.person.id, 0) + w.account_delta
        running: dict[int, int] = {}
        for pid, delta in deltas.items():
            running[pid] = await _move_balance(session, pid, delta) - delta
        flows: list[dict[str, Any]] = []
        adjustments: list[dict[str, Any]] = []
        for w in created:
            settlement, person = w.settlement, w.person
            assert settlement is not None and person is not None
            settlement_id = settlement["id"] = ids[w.mutation.id]
            w.outcome.settlement_id = settlement_id
            w.outcome.body["settlement"]["id"] = str(settlement_id)
            changes.extend(_person_changes(person, settlement_id))
            if w.account_delta:
                running[person.id] += w.account_delta
                settled_at: dt.datetime = settlement["settled_at"]
                flows.append(
                    {
                        "person_id": person.id,
                        "occurred_at": settled_at,  # dated with the visit, as hospitals' are
                        "year": settled_at.astimezone(SHANGHAI).year,
                        "kind": AccountFlowKind.SETTLEMENT.value,
                        "amount_fen": w.account_delta,
                        "balance_after_fen": running[person.id],
                        "settlement_id": settlement_id,
                    }
                )
                changes.append(Change(ACCOUNT_ENTITY, str(person.id), changelog.person_scope(person.id)))
            if w.adjustment is not None:
                w.adjustment["settlement_id"] = settlement_id
                adjustments.append(w.adjustment)
        await _insert(session, AccountFlow, flows)
        await _insert(session, SettlementAdjustment, adjustments)
        rows = [
            {
                "terminal_id": self.terminal.id,
                "seq": w.mutation.seq,
                "mutation_id": w.mutation.id,
                "kind": w.mutation.kind.value,
                "client_time": w.mutation.client_time,
                "received_at": self.now,
                "payload": _kept_payload(w.mutation.payload, w.outcome.status),
                "status": w.outcome.status.value,
                "reason": w.outcome.reason,
                "result": w.outcome.body,
                "settlement_id": w.outcome.settlement_id,
            }
            for w in pending
        ]
        pushed = await _insert(session, PushedMutation, rows, key="mutation_id")
        scope = clinic_scope(self.clinic.id)
        changes.extend(
            Change(PUSH_ISSUE, str(pushed[row["mutation_id"]]), scope)
            for row in rows
            if row["status"] != ResultStatus.APPLIED.value
        )
        await changelog.record(session, changes)


def _kept_payload(payload: dict[str, Any], status: ResultStatus) -> dict[str, Any]:
    """What pushed_mutations keeps of a mutation's payload: all of it, unless it was rejected and its
    JSON is longer than MAX_KEPT_REJECTED_PAYLOAD; then a stand-in that says so, with the size and the
    sha256 of that JSON (json.dumps with sorted keys: the terminal can check its own copy against it)
    and its first KEPT_PAYLOAD_PREFIX characters. The answer (`result`: reason, field, message) is
    kept whole either way, so reviewers and the clinic still see what was rejected and why."""
    if status != ResultStatus.REJECTED:
        return payload
    text = json.dumps(payload, sort_keys=True)  # the length of what the column stores (any key order)
    if len(text) <= MAX_KEPT_REJECTED_PAYLOAD:
        return payload
    raw = text.encode("ascii")  # json.dumps escapes everything else
    return {
        "truncated": True,
        "bytes": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "prefix": text[:KEPT_PAYLOAD_PREFIX],
    }


@functools.cache
def _defaults(model: type[SQLModel]) -> dict[str, Callable[[], Any]]:
    """The model's column defaults, as factories, for rows built as plain dicts."""
    table = model.__table__  # type: ignore[attr-defined]
    out: dict[str, Callable[[], Any]] = {}
    for name, info in model.model_fields.items():
        if name == "id" or name not in table.c:
            continue
        if info.default_factory is not None:
            out[name] = info.default_factory  # type: ignore[assignment]
        elif info.default is not PydanticUndefined:
            out[name] = functools.partial(lambda value: value, info.default)
    return out


async def _insert(
    session: AsyncSession, model: type[SQLModel], rows: Sequence[dict[str, Any]], key: str | None = None
) -> dict[Any, int]:
    """The rows (missing columns take the model's defaults) in one executemany INSERT, which
    SQLAlchemy sends as a few multi-row statements ("insertmanyvalues") compiled once and cached; not
    through the unit of work, which writes one row per statement on SQLite, nor as ORM objects, which
    cost more to build than to write. With `key`, their new ids by that unique column."""
    if not rows:
        return {}
    table = model.__table__  # type: ignore[attr-defined]
    known = _defaults(model)
    # An executemany takes its columns from the first row: every row must have them all. Rows built by
    # one piece of code have the same columns (checked cheaply); otherwise a column any row lacks takes
    # the model's default in that row (a later row without a column of the first is an error, not NULL).
    first = rows[0].keys()
    if all(row.keys() == first for row in rows):
        defaults = {name: make() for name, make in known.items() if name not in first}
    else:
        missing = {name for row in rows for name in known.keys() - row.keys()}
        defaults = {name: make() for name, make in known.items() if name in missing}
    values = [{**defaults, **row} for row in rows] if defaults else rows
    if key is None:
        await session.execute(insert(table), values)
        return {}
    found = await session.execute(insert(table).returning(table.c.id, table.c[key]), values)
    return {value: int(row_id) for row_id, value in found.all()}


_Parsed = SettlementCreate | SettlementVoid | WireError


async def push(
    session: AsyncSession,
    state: AppState,
    terminal: Terminal,
    mutations: Sequence[Mutation],
    *,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Applies the batch and commits; returns the JSON answer `{"results": [...], "expectedSeq"?}`.

    Raises Conflict when a seq of the batch is already used by another mutation id (nothing applied)
    or when the batch met a concurrent copy of itself past the locks (rolled back; retry it)."""
    assert terminal.id is not None
    try:
        return await _push(session, state, terminal.id, mutations, now or utcnow())
    except IntegrityError:
        await session.rollback()
        raise Conflict("该批结算正在另一连接上提交，请稍后重试", reason="concurrent_push") from None
    except _Replayed:
        await session.rollback()
        raise Conflict("服务器繁忙，请稍后重试该批结算", reason="retry") from None
    except DBAPIError as exc:
        # A deadlock or serialisation failure PostgreSQL broke by aborting this batch: nothing of it
        # was applied, and the terminal's next try will succeed. Anything else is a bug: let it out.
        if getattr(exc.orig, "sqlstate", None) not in _RETRYABLE:
            raise
        await session.rollback()
        raise Conflict("服务器繁忙，请稍后重试该批结算", reason="retry") from None


async def _push(
    session: AsyncSession,
    state: AppState,
    terminal_id: int,
    mutations: Sequence[Mutation],
    now: dt.datetime,
) -> dict[str, Any]:
    order = sorted(range(len(mutations)), key=lambda n: mutations[n].seq)
    if len({m.id for m in mutations}) != len(mutations) or len({m.seq for m in mutations}) != len(mutations):
        raise BadUserInput("同一批次中的记录编号或序号重复", field="mutations")
    terminal = await _lock_terminal(session, terminal_id)
    stored = await _stored(session, terminal_id, mutations)
    by_id = {row.mutation_id: row for row in stored}
    by_seq = {row.seq: row for row in stored}

    # Plan the batch before anything is applied: repeats, conflicts, the gap.
    plan: list[PushedMutation | Mutation] = []
    expected = terminal.last_seq + 1
    gap: int | None = None
    for n in order:
        mutation = mutations[n]
        row = by_id.get(mutation.id)
        if row is not None:
            if row.seq != mutation.seq:
                raise Conflict(
                    f"记录 {mutation.id} 已按序号 {row.seq} 提交过",
                    field=f"mutations[{n}].seq",
                    reason="seq_conflict",
                )
            plan.append(row)
            continue
        if mutation.seq in by_seq or mutation.seq < expected:
            raise Conflict(
                f"序号 {mutation.seq} 已被另一条记录使用", field=f"mutations[{n}].seq", reason="seq_conflict"
            )
        if gap is None and mutation.seq > expected:
            gap = expected
        if gap is None:
            plan.append(mutation)
            expected += 1

    if terminal.status != TerminalStatus.ACTIVE.value:
        # Revoked while this request was on its way: nothing new is applied or stored.
        refused = [
            item.result
            if isinstance(item, PushedMutation)
            else _rejection(item, _Rejected(RejectReason.TERMINAL_REVOKED))
            for item in plan
        ]
        await session.commit()
        return {"results": refused}

    fresh = [item for item in plan if isinstance(item, Mutation)]
    results: list[dict[str, Any]] = []
    bodies: dict[str, dict[str, Any]] = {}
    if fresh:
        clinic = await session.get(Facility, terminal.clinic_id)
        if clinic is None or clinic.id is None:
            raise RuntimeError(f"terminal {terminal_id} names a clinic that does not exist")
        parsed = {m.id: _parse(m) for m in fresh}
        await _lock_people(session, await _people_of(session, terminal_id, fresh, parsed))
        batch = _Batch(session, state, terminal, clinic, now, await settlement_service.policy_set(session))
        await batch.load(fresh, parsed)
        for mutation in fresh:
            bodies[mutation.id] = (await _apply(batch, mutation, parsed[mutation.id])).body
        # (Once, not per mutation: an ORM attribute write costs more than the rest of a mutation's
        # bookkeeping, and nothing is committed before the whole batch is.)
        terminal.last_seq = fresh[-1].seq
        terminal.last_client_time = fresh[-1].client_time
        terminal.last_push_at = now
        await batch.materialize()  # completes the bodies with the settlements' ids
    # The answers in seq order, repeats and new ones alike.
    for item in plan:
        results.append(item.result if isinstance(item, PushedMutation) else bodies[item.id])
    await session.commit()
    answer: dict[str, Any] = {"results": results}
    if gap is not None:
        answer["expectedSeq"] = gap
    return answer


def _is_postgres(session: AsyncSession) -> bool:
    return dialect_name(session) == "postgresql"


async def _lock_terminal(session: AsyncSession, terminal_id: int) -> Terminal:
    """The terminal's row, locked for the rest of the transaction, as it is now (not as authenticated)."""
    if not _is_postgres(session):
        # SQLite: take the single write lock before reading anything, so no other writer can slip in
        # between this batch's reads and its writes (the busy timeout makes a second pusher wait).
        table = Terminal.__table__  # type: ignore[attr-defined]
        await session.execute(
            update(table).where(table.c.id == terminal_id).values(last_seq=table.c.last_seq)
        )
    # FOR NO KEY UPDATE: other batches of this terminal wait; its assertions (rows that reference the
    # terminal, so they take a key-share lock) do not.
    terminal = await session.get(
        Terminal, terminal_id, populate_existing=True, with_for_update={"key_share": True}
    )
    if terminal is None:
        raise RuntimeError(f"terminal {terminal_id} does not exist")
    return terminal


async def _lock_people(session: AsyncSession, person_ids: set[int]) -> None:
    """Locks the people's rows in id order (two batches never wait for each other in a circle), so
    year-to-date totals and balances read after this are final until the commit: the lock every
    writer of settlements takes (settlement_service.lock_people). SQLite: the write lock taken with
    the terminal already serialises every writer, so no second statement for it."""
    if _is_postgres(session):
        await settlement_service.lock_people(session, person_ids)


async def _stored(
    session: AsyncSession, terminal_id: int, mutations: Sequence[Mutation]
) -> list[PushedMutation]:
    if not mutations:
        return []
    found = await session.execute(
        _STORED,
        {"terminal": terminal_id, "ids": [m.id for m in mutations], "seqs": [m.seq for m in mutations]},
    )
    return list(found.scalars())


def _parse(mutation: Mutation) -> _Parsed:
    try:
        if mutation.kind == MutationKind.SETTLEMENT_CREATE:
            return read_settlement_create(mutation.payload)
        return read_settlement_void(mutation.payload)
    except WireError as exc:
        return exc


@functools.lru_cache(maxsize=4096)  # a batch asks about each of its codes several times
def _decoded(code: str) -> OnlineCode | OfflineCode | None:
    """The code as it states itself, unauthenticated (the verifier checks it later)."""
    try:
        prefix, payload = from_text(code)
        if prefix == ONLINE_PREFIX:
            return parse_online_payload(payload)
        return parse_offline_payload(payload)
    except (VoucherFormatError, ValueError, TypeError):
        return None


def _claimed_ref(code: str) -> str | None:
    """The person ref a code claims: only to know whose rows to lock and read."""
    decoded = _decoded(code)
    if isinstance(decoded, OnlineCode):
        return decoded.person_ref.hex()
    return decoded.certificate.person_ref.hex() if decoded is not None else None


def _replay_ref(code: str) -> str | None:
    """The replay key the verifier will compute for the code (settlements store it as voucher_ref)."""
    decoded = _decoded(code)
    return replay_key(decoded.signed).hex() if decoded is not None else None


def _code_window(code: str) -> tuple[int, int] | None:
    """(signed time, expiry) in Unix seconds as the code states them."""
    decoded = _decoded(code)
    if isinstance(decoded, OnlineCode):
        return decoded.issued_at, decoded.expires_at
    return (decoded.time, decoded.expires_at) if decoded is not None else None


async def _people_of(
    session: AsyncSession, terminal_id: int, mutations: Sequence[Mutation], parsed: dict[str, _Parsed]
) -> set[int]:
    """Whose rows the batch may write: the people its codes and cards claim, and those of the
    settlements it voids."""
    refs: set[str] = set()
    voided: list[str] = []
    for mutation in mutations:
        item = parsed[mutation.id]
        if isinstance(item, SettlementCreate):
            ref = item.person_ref if item.voucher is None else _claimed_ref(item.voucher)
            if ref is not None:
                refs.add(ref)
        elif isinstance(item, SettlementVoid):
            voided.append(item.mutation_id)
    people: set[int] = set()
    if refs:
        people.update((await session.execute(_PEOPLE_OF_REFS, {"refs": sorted(refs)})).scalars())
    if voided:
        # (A void of a settlement created earlier in the same batch: its person is among the refs.)
        people.update(
            (
                await session.execute(
                    select(col(Settlement.person_id))
                    .join(PushedMutation, col(PushedMutation.settlement_id) == col(Settlement.id))
                    .where(
                        col(PushedMutation.terminal_id) == terminal_id,
                        one_of(col(PushedMutation.mutation_id), "voided"),
                    ),
                    {"voided": voided},
                )
            ).scalars()
        )
    return people


async def _apply(batch: _Batch, mutation: Mutation, parsed: _Parsed) -> _Outcome:
    try:
        if isinstance(parsed, WireError):
            raise _Rejected(RejectReason.BAD_PAYLOAD, field=parsed.field, detail=parsed.message)
        if isinstance(parsed, SettlementCreate):
            write = await _create(batch, mutation, parsed)
        else:
            write = await _void(batch, mutation, parsed)
    except _Rejected as rejected:
        outcome = _Outcome(
            ResultStatus.REJECTED, _rejection(mutation, rejected), reason=rejected.reason.value
        )
        write = _Write(mutation, outcome)
    batch.pending.append(write)
    return write.outcome


def _rejection(mutation: Mutation, rejected: _Rejected) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": mutation.id,
        "seq": mutation.seq,
        "status": ResultStatus.REJECTED.value,
        "reason": rejected.reason.value,
        "message": REASON_LABELS[rejected.reason],
    }
    if rejected.field is not None:
        body["field"] = rejected.field
    if rejected.detail is not None:
        body["detail"] = rejected.detail[:200]
    return body


# ---------------------------------------------------------------------------------- settlement.create


@dataclass
class _Identified:
    person: _Person
    settled_at: dt.datetime
    voucher_ref: str | None


async def _create(batch: _Batch, mutation: Mutation, create: SettlementCreate) -> _Write:
    if create.clinic_id is not None and create.clinic_id != batch.clinic_ref:
        raise _Rejected(RejectReason.OTHER_CLINIC, field="payload.clinicId")
    if mutation.id in batch.taken_ids:  # another terminal's settlement already has this id
        raise _Rejected(
            RejectReason.BAD_PAYLOAD, field="id", detail="mutation id already used by another terminal"
        )
    who = await (_by_voucher if create.voucher is not None else _by_card)(batch, mutation, create)
    person = who.person
    await batch.person_loaded(person)
    day = who.settled_at.astimezone(SHANGHAI).date()
    enrolment = _enrolment_on(batch.enrolments[person.id], day)
    if enrolment is None:
        raise _Rejected(RejectReason.NOT_INSURED, detail=f"no enrolment covers {day.isoformat()}")
    if batch.duplicate(person.id, day, create):
        raise _Rejected(RejectReason.DUPLICATE_VISIT)

    today = batch.today
    try:
        version = batch.policies.select(enrolment.region_code, day, today=today)
    except SettlementInputError as exc:
        raise _Rejected(RejectReason.POLICY_UNKNOWN, detail=exc.message) from None
    balance = batch.balances[person.id]
    bill = create.bill
    visit = Visit(
        visit_date=day,
        region=enrolment.region_code,
        insurance_type=enrolment.insurance_type,
        age_group=settlement_service.age_group(person.birth_date, day),
        facility_level=batch.clinic_level,
        locality=await _locality(batch.session, person.id, enrolment, batch.clinic_region, day),
        category=bill.category,
        items=bill.items,
        assistance_category=person.assistance_category,
        chronic_diseases=person.chronic_diseases,
        two_diseases=person.two_diseases,
        personal_account_balance_fen=max(balance, 0) if balance is not None else 0,
        use_personal_account=bill.use_personal_account and balance is not None,
    )
    before = await batch.year_to_date(person.id, day.year)
    try:
        result = compute(version, visit, before, today=today)
    except SettlementInputError as exc:
        raise _Rejected(RejectReason.BAD_PAYLOAD, field=f"payload.{exc.field}", detail=exc.message) from None

    # Everything checked: the settlement's row, written with the rest of the batch.
    stored_visit = visit.to_dict()
    settlement: dict[str, Any] = {
        "person_id": person.id,
        "facility_id": batch.clinic_id,
        "settled_at": who.settled_at,
        "year": day.year,
        "category": visit.category,
        "visit_scope": visit.locality,
        "total_fen": result.total_fen,
        "compliant_fen": result.compliant_fen,
        "deductible_fen": result.deductible_fen,
        "basic_fen": result.basic_fen,
        "critical_illness_fen": result.critical_illness_fen,
        "assistance_fen": result.assistance_fen,
        "personal_account_fen": result.personal_account_fen,
        "cash_fen": result.cash_fen,
        "policy_version": result.policy_version_id,
        "source": SOURCE_TERMINAL,
        "client_ref": mutation.id,
        "visit": stored_visit,
        "voucher_ref": who.voucher_ref,
        "terminal_id": batch.terminal_id,
        "voided_at": None,
        **settlement_service.ytd_columns(version, visit, before, result),
    }
    batch.ytd[(person.id, day.year)] = result.ytd  # what year_to_date will answer once it is stored
    if balance is not None:
        batch.balances[person.id] = balance - result.personal_account_fen
    if who.voucher_ref is not None:
        batch.used_vouchers.add(who.voucher_ref)
    batch._remember(
        settlement, person.id, who.settled_at, visit.category, result.total_fen, stored_visit["items"]
    )

    server = Split.from_result(result)
    reason: AdjustReason | None = None
    if day != bill.visit_date:
        reason = AdjustReason.VISIT_DATE
    elif result.policy_version_id != create.policy_version:
        reason = AdjustReason.POLICY_VERSION
    elif server != create.split:
        reason = AdjustReason.RECOMPUTED
    body: dict[str, Any] = {
        "id": mutation.id,
        "seq": mutation.seq,
        "status": (ResultStatus.APPLIED if reason is None else ResultStatus.ADJUSTED).value,
        "settlement": {
            "id": None,  # given when the batch is written
            "settledAt": who.settled_at.isoformat(),
            "visitDate": day.isoformat(),
            "policyVersion": result.policy_version_id,
            "identifiedBy": "card" if who.voucher_ref is None else "voucher",
            "totalFen": result.total_fen,
            "compliantFen": result.compliant_fen,
            "deductibleFen": result.deductible_fen,
            **server.to_dict(),
            "lines": list(result.lines),
        },
    }
    skew = int((mutation.client_time - who.settled_at).total_seconds())
    if abs(skew) > batch.skew_s:
        body["settlement"]["clockSkewS"] = skew  # the terminal's clock, against the server's dating
    adjustment = None
    if reason is not None:
        delta = server.minus(create.split)
        terminal_split = {
            **create.split.to_dict(),
            "policyVersion": create.policy_version,
            "visitDate": bill.visit_date.isoformat(),
        }
        adjustment = {
            "settlement_id": None,  # set when the settlement is written
            "terminal_id": batch.terminal_id,
            "terminal_split": terminal_split,
            "basic_delta_fen": delta.basic_fen,
            "critical_illness_delta_fen": delta.critical_illness_fen,
            "assistance_delta_fen": delta.assistance_fen,
            "personal_account_delta_fen": delta.personal_account_fen,
            "cash_delta_fen": delta.cash_fen,
            "reason": reason.value,
            "created_at": batch.now,
        }
        body["adjustment"] = {
            "reason": reason.value,
            "message": ADJUST_LABELS[reason],
            "deltas": delta.to_dict(),
            "terminal": terminal_split,
        }
    status = ResultStatus.APPLIED if reason is None else ResultStatus.ADJUSTED
    outcome = _Outcome(status, body, reason=None if reason is None else reason.value)
    return _Write(
        mutation,
        outcome,
        settlement=settlement,
        person=person,
        account_delta=-result.personal_account_fen,
        adjustment=adjustment,
    )


async def _by_voucher(batch: _Batch, mutation: Mutation, create: SettlementCreate) -> _Identified:
    assert create.voucher is not None
    skew = batch.skew_s
    at = batch.now
    window = _code_window(create.voucher)
    if window is not None:
        signed, expires = window
        claimed = mutation.client_time.timestamp()
        if signed - skew <= claimed <= expires + skew:
            # The terminal's clock agrees with the code: the scan moment, but never after now (a clock a
            # minute fast must not date a genuine code in our future and have it refused).
            at = min(mutation.client_time, batch.now)
        else:
            at = dt.datetime.fromtimestamp(signed, dt.UTC)  # the terminal's clock is off: the code's time
        if at > batch.now + dt.timedelta(seconds=skew):
            raise _Rejected(RejectReason.VOUCHER_INVALID, field="payload.voucher", detail="not_yet_valid")
        if at < batch.now - dt.timedelta(seconds=OFFLINE_SETTLEMENT_MAX_AGE_S):
            raise _Rejected(RejectReason.VOUCHER_EXPIRED, field="payload.voucher", detail="too_old")
    if batch.vouchers is None:
        batch.vouchers = voucher_service.BatchVerifier(
            batch.session, batch.state.settings, batch.state.voucher_keys
        )
    checked = await batch.vouchers.check(create.voucher, at)
    verdict = checked.result
    if not verdict.valid or checked.person_id is None:
        reason = verdict.reason or Reason.REVOKED
        raise _Rejected(
            _VOUCHER_REASONS[reason],
            field="payload.voucher",
            detail=reason.value + (f":{verdict.detail}" if verdict.detail else ""),
        )
    assert verdict.replay_key is not None and verdict.person_ref is not None
    voucher_ref = verdict.replay_key.hex()
    # The replay store forgets a key once its code has expired; the settlements never do.
    if voucher_ref in batch.used_vouchers:
        raise _Rejected(RejectReason.VOUCHER_REPLAYED, field="payload.voucher", detail="replayed:settled")
    person = batch.people_by_ref.get(verdict.person_ref.hex())  # read with the batch (the code's claim)
    if person is None or person.id != checked.person_id:
        person = _Person.of(await people_service.get_person(batch.session, checked.person_id))
    return _Identified(person, at, voucher_ref)


async def _by_card(batch: _Batch, mutation: Mutation, create: SettlementCreate) -> _Identified:
    assert create.person_ref is not None
    person = batch.people_by_ref.get(create.person_ref)
    if person is None:
        raise _Rejected(RejectReason.PERSON_UNKNOWN, field="payload.personRef")
    # A card proves nothing by itself: it is taken only for the clinic's own villagers, whom the
    # terminal holds in its synced roster (and whom the clinic knows).
    village = batch.village_code
    if village is None or person.village_code != village:
        raise _Rejected(RejectReason.NOT_ON_ROSTER, field="payload.personRef")
    oldest = batch.now - dt.timedelta(seconds=OFFLINE_SETTLEMENT_MAX_AGE_S)
    if mutation.client_time < oldest:
        raise _Rejected(RejectReason.VISIT_TOO_OLD, detail=f"settled at {mutation.client_time.isoformat()}")
    at = min(max(mutation.client_time, batch.enrolled_at, oldest), batch.now)
    return _Identified(person, at, None)


def _enrolment_on(periods: Sequence[_Enrolment], day: dt.date) -> _Enrolment | None:
    covering = [p for p in periods if p.start_on <= day and (p.end_on is None or p.end_on >= day)]
    return max(covering, key=lambda p: p.start_on) if covering else None


async def _locality(
    session: AsyncSession, person_id: int, enrolment: _Enrolment, clinic_region: str, day: dt.date
) -> str:
    """The server's, never the terminal's claim: local in the enrolment's pooling area, else registered
    where an approved 异地就医备案 covers the clinic's region on the visit day, else unregistered. Only
    a cross-region visit (rare at a village clinic) costs a query."""
    return await registrations.locality(session, person_id, enrolment.region_code, clinic_region, day)


def _person_changes(person: _Person, settlement_id: int) -> list[Change]:
    changes = [Change(SETTLEMENT_ENTITY, str(settlement_id), changelog.person_scope(person.id))]
    if person.village_code:
        # The roster entry carries the year-to-date totals: every terminal of the village pulls it again.
        changes.append(Change(ROSTER, str(person.id), changelog.village_scope(person.village_code)))
    return changes


async def _move_balance(session: AsyncSession, person_id: int, amount: int) -> int:
    """Adds `amount` (signed) to the personal account in one statement; returns the new balance."""
    table = PersonalAccount.__table__  # type: ignore[attr-defined]
    balance = (
        await session.execute(
            update(table)
            .where(table.c.person_id == person_id)
            .values(balance_fen=table.c.balance_fen + amount, updated_at=utcnow())
            .returning(table.c.balance_fen)
        )
    ).scalar_one()
    return int(balance)


# ------------------------------------------------------------------------------------ settlement.void


async def _void(batch: _Batch, mutation: Mutation, void: SettlementVoid) -> _Write:
    await batch.materialize()  # the settlement it voids may be one of this batch's
    session = batch.session
    target = (
        await session.execute(
            select(PushedMutation).where(
                col(PushedMutation.terminal_id) == batch.terminal.id,
                col(PushedMutation.mutation_id) == void.mutation_id,
            )
        )
    ).scalar_one_or_none()
    if target is None or target.settlement_id is None:
        raise _Rejected(RejectReason.NOT_FOUND, field="payload.mutationId")
    settlement = await session.get(Settlement, target.settlement_id, populate_existing=True)
    assert settlement is not None and settlement.id is not None
    if settlement.voided_at is not None:
        raise _Rejected(RejectReason.ALREADY_VOID, field="payload.mutationId")
    settlement.voided_at = batch.now
    batch.forget(settlement.id)
    found = await session.get(InsuredPerson, settlement.person_id)
    assert found is not None
    person = _Person.of(found)
    changes = _person_changes(person, settlement.id)
    refund = settlement.personal_account_fen
    if refund:
        balance = await _move_balance(session, person.id, refund)
        session.add(
            AccountFlow(
                person_id=person.id,
                occurred_at=batch.now,
                year=batch.now.astimezone(SHANGHAI).year,
                kind=VOID_FLOW_KIND,
                amount_fen=refund,
                balance_after_fen=balance,
                settlement_id=settlement.id,
            )
        )
        changes.append(Change(ACCOUNT_ENTITY, str(person.id), changelog.person_scope(person.id)))
        if batch.balances.get(person.id) is not None:
            batch.balances[person.id] = balance
    # Its totals no longer count: the person's year-to-date is read again when next needed.
    for key in [k for k in batch.ytd if k[0] == person.id]:
        del batch.ytd[key]
    await session.flush()
    await changelog.record(session, changes)
    body = {
        "id": mutation.id,
        "seq": mutation.seq,
        "status": ResultStatus.APPLIED.value,
        "settlement": {
            "id": str(settlement.id),
            "voidedAt": batch.now.isoformat(),
            "personalAccountRefundFen": refund,
        },
    }
    return _Write(mutation, _Outcome(ResultStatus.APPLIED, body, settlement_id=settlement.id))
