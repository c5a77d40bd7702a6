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
  that falls inside the code's window (± the verifier's skew); otherwise the terminal's clock is off and
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
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.dbtypes import utcnow
from api.errors import BadUserInput, Conflict
from api.pagination import SHANGHAI
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
    read_settlement_create,
    read_settlement_void,
)
from sync.settlement import PolicySet, SettlementInputError, Visit, compute
from sync.vouchers import Reason, VoucherFormatError
from sync.vouchers.format import (
    ONLINE_PREFIX,
    from_text,
    parse_offline_payload,
    parse_online_payload,
)

_RETRYABLE = {"40P01", "40001"}  # deadlock_detected, serialization_failure
SOURCE_TERMINAL = "terminal"
SETTLEMENT_ENTITY = "settlement"
ACCOUNT_ENTITY = "personal_account"
VOID_FLOW_KIND = "settlement_void"
"""The account flow that credits back a voided settlement's personal-account payment."""

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


class _Rejected(Exception):
    """One mutation's rejection: it is stored and answered, and the batch goes on."""

    def __init__(self, reason: RejectReason, *, field: str | None = None, detail: str | None = None) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.field = field
        self.detail = detail


@dataclass
class _Batch:
    session: AsyncSession
    state: AppState
    terminal: Terminal
    clinic: Facility
    now: dt.datetime
    policies: PolicySet | None = None

    async def policy_set(self) -> PolicySet:
        if self.policies is None:
            self.policies = await settlement_service.policy_set(self.session)
        return self.policies


@dataclass
class _Outcome:
    status: ResultStatus
    body: dict[str, Any]
    settlement_id: int | None = None
    reason: str | None = None


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

    clinic = await session.get(Facility, terminal.clinic_id)
    if clinic is None or clinic.id is None:
        raise RuntimeError(f"terminal {terminal_id} names a clinic that does not exist")
    batch = _Batch(session, state, terminal, clinic, now)
    fresh = [item for item in plan if isinstance(item, Mutation)]
    parsed = {m.id: _parse(m) for m in fresh}
    await _lock_people(session, await _people_of(session, terminal_id, fresh, parsed))

    results: list[dict[str, Any]] = []
    for item in plan:
        if isinstance(item, PushedMutation):
            results.append(item.result)
            continue
        outcome = await _apply(batch, item, parsed[item.id])
        row = PushedMutation(
            terminal_id=terminal_id,
            seq=item.seq,
            mutation_id=item.id,
            kind=item.kind.value,
            client_time=item.client_time,
            received_at=now,
            payload=item.payload,
            status=outcome.status.value,
            reason=outcome.reason,
            result=outcome.body,
            settlement_id=outcome.settlement_id,
        )
        session.add(row)
        await session.flush()
        if outcome.status != ResultStatus.APPLIED:
            await changelog.record(session, [Change(PUSH_ISSUE, str(row.id), clinic_scope(clinic.id))])
        results.append(outcome.body)
        terminal.last_seq = item.seq
        terminal.last_client_time = item.client_time
    if fresh:
        terminal.last_push_at = now
    await session.commit()
    answer: dict[str, Any] = {"results": results}
    if gap is not None:
        answer["expectedSeq"] = gap
    return answer


def _is_postgres(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "postgresql"


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
    year-to-date totals and balances read after this are final until the commit. SQLite: the write
    lock taken with the terminal already serialises every writer."""
    if person_ids and _is_postgres(session):
        await session.execute(
            select(col(InsuredPerson.id))
            .where(col(InsuredPerson.id).in_(sorted(person_ids)))
            .order_by(col(InsuredPerson.id))
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE: rows that reference them may still be added
        )


async def _stored(
    session: AsyncSession, terminal_id: int, mutations: Sequence[Mutation]
) -> list[PushedMutation]:
    if not mutations:
        return []
    statement = select(PushedMutation).where(
        col(PushedMutation.terminal_id) == terminal_id,
        col(PushedMutation.mutation_id).in_([m.id for m in mutations])
        | col(PushedMutation.seq).in_([m.seq for m in mutations]),
    )
    return list((await session.execute(statement)).scalars())


def _parse(mutation: Mutation) -> SettlementCreate | SettlementVoid | WireError:
    try:
        if mutation.kind == MutationKind.SETTLEMENT_CREATE:
            return read_settlement_create(mutation.payload)
        return read_settlement_void(mutation.payload)
    except WireError as exc:
        return exc


def _claimed_ref(code: str) -> str | None:
    """The person ref a code claims, unauthenticated: only to know whose row to lock."""
    try:
        prefix, payload = from_text(code)
        if prefix == ONLINE_PREFIX:
            return parse_online_payload(payload).person_ref.hex()
        return parse_offline_payload(payload).certificate.person_ref.hex()
    except (VoucherFormatError, ValueError, TypeError):
        return None


def _code_window(code: str) -> tuple[int, int] | None:
    """(signed time, expiry) in Unix seconds as the code states them (checked by the verifier later)."""
    try:
        prefix, payload = from_text(code)
        if prefix == ONLINE_PREFIX:
            online = parse_online_payload(payload)
            return online.issued_at, online.expires_at
        offline = parse_offline_payload(payload)
        return offline.time, offline.expires_at
    except (VoucherFormatError, ValueError, TypeError):
        return None


async def _people_of(
    session: AsyncSession,
    terminal_id: int,
    mutations: Sequence[Mutation],
    parsed: dict[str, SettlementCreate | SettlementVoid | WireError],
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
        people.update(
            (
                await session.execute(
                    select(col(VoucherSubject.person_id)).where(col(VoucherSubject.ref).in_(sorted(refs)))
                )
            ).scalars()
        )
    if voided:
        people.update(
            (
                await session.execute(
                    select(col(Settlement.person_id))
                    .join(PushedMutation, col(PushedMutation.settlement_id) == col(Settlement.id))
                    .where(
                        col(PushedMutation.terminal_id) == terminal_id,
                        col(PushedMutation.mutation_id).in_(voided),
                    )
                )
            ).scalars()
        )
        # A void of a settlement created earlier in this same batch: its person is among the refs.
    return people


async def _apply(
    batch: _Batch, mutation: Mutation, parsed: SettlementCreate | SettlementVoid | WireError
) -> _Outcome:
    try:
        if isinstance(parsed, WireError):
            raise _Rejected(RejectReason.BAD_PAYLOAD, field=parsed.field, detail=parsed.message)
        if isinstance(parsed, SettlementCreate):
            return await _create(batch, mutation, parsed)
        return await _void(batch, mutation, parsed)
    except _Rejected as rejected:
        return _Outcome(ResultStatus.REJECTED, _rejection(mutation, rejected), reason=rejected.reason.value)


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
    person: InsuredPerson
    settled_at: dt.datetime
    voucher_ref: str | None


async def _create(batch: _Batch, mutation: Mutation, create: SettlementCreate) -> _Outcome:
    session, clinic = batch.session, batch.clinic
    assert clinic.id is not None and batch.terminal.id is not None
    if create.clinic_id is not None and create.clinic_id != str(clinic.id):
        raise _Rejected(RejectReason.OTHER_CLINIC, field="payload.clinicId")
    taken = await session.execute(select(col(Settlement.id)).where(col(Settlement.client_ref) == mutation.id))
    if taken.first() is not None:  # another terminal's settlement already has this id
        raise _Rejected(
            RejectReason.BAD_PAYLOAD, field="id", detail="mutation id already used by another terminal"
        )
    who = await (_by_voucher if create.voucher is not None else _by_card)(batch, mutation, create)
    person = who.person
    assert person.id is not None
    day = who.settled_at.astimezone(SHANGHAI).date()
    enrolment = await _enrolment_on(session, person.id, day)
    if enrolment is None:
        raise _Rejected(RejectReason.NOT_INSURED, detail=f"no enrolment covers {day.isoformat()}")
    if await _duplicate(session, person.id, clinic.id, day, create):
        raise _Rejected(RejectReason.DUPLICATE_VISIT)

    policies = await batch.policy_set()
    today = batch.now.astimezone(SHANGHAI).date()
    try:
        version = policies.select(enrolment.region_code, day, today=today)
    except SettlementInputError as exc:
        raise _Rejected(RejectReason.POLICY_UNKNOWN, detail=exc.message) from None
    account = await session.get(PersonalAccount, person.id, populate_existing=True)
    bill = create.bill
    visit = Visit(
        visit_date=day,
        region=enrolment.region_code,
        insurance_type=enrolment.insurance_type,
        age_group=settlement_service.age_group(person.birth_date, day),
        facility_level=clinic.level,
        locality=_locality(enrolment, clinic, bill.locality),
        category=bill.category,
        items=bill.items,
        assistance_category=person.assistance_category,
        chronic_diseases=frozenset(person.chronic_diseases),
        two_diseases=frozenset(person.two_diseases),
        personal_account_balance_fen=max(account.balance_fen, 0) if account is not None else 0,
        use_personal_account=bill.use_personal_account and account is not None,
    )
    before = await settlement_service.year_to_date(session, person.id, day.year)
    try:
        result = compute(version, visit, before, today=today)
    except SettlementInputError as exc:
        raise _Rejected(RejectReason.BAD_PAYLOAD, field=f"payload.{exc.field}", detail=exc.message) from None

    # Everything checked: the writes.
    settlement = Settlement(
        person_id=person.id,
        facility_id=clinic.id,
        settled_at=who.settled_at,
        year=day.year,
        category=visit.category,
        visit_scope=visit.locality,
        total_fen=result.total_fen,
        compliant_fen=result.compliant_fen,
        deductible_fen=result.deductible_fen,
        basic_fen=result.basic_fen,
        critical_illness_fen=result.critical_illness_fen,
        assistance_fen=result.assistance_fen,
        personal_account_fen=result.personal_account_fen,
        cash_fen=result.cash_fen,
        policy_version=result.policy_version_id,
        source=SOURCE_TERMINAL,
        client_ref=mutation.id,
        visit=visit.to_dict(),
        voucher_ref=who.voucher_ref,
        terminal_id=batch.terminal.id,
        **settlement_service.ytd_columns(version, visit, before, result),
    )
    session.add(settlement)
    await session.flush()
    assert settlement.id is not None
    changes = _person_changes(person, settlement.id)
    if result.personal_account_fen:
        # Dated with the visit, as the demo's and hospitals' flows are.
        await _account_flow(
            session,
            person.id,
            -result.personal_account_fen,
            AccountFlowKind.SETTLEMENT.value,
            settlement,
            who.settled_at,
        )
        changes.append(Change(ACCOUNT_ENTITY, str(person.id), changelog.person_scope(person.id)))

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
            "id": str(settlement.id),
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
    if abs(skew) > batch.state.settings.voucher_skew_s:
        body["settlement"]["clockSkewS"] = skew  # the terminal's clock, against the server's dating
    if reason is not None:
        delta = server.minus(create.split)
        terminal_split = {
            **create.split.to_dict(),
            "policyVersion": create.policy_version,
            "visitDate": bill.visit_date.isoformat(),
        }
        session.add(
            SettlementAdjustment(
                settlement_id=settlement.id,
                terminal_id=batch.terminal.id,
                terminal_split=terminal_split,
                basic_delta_fen=delta.basic_fen,
                critical_illness_delta_fen=delta.critical_illness_fen,
                assistance_delta_fen=delta.assistance_fen,
                personal_account_delta_fen=delta.personal_account_fen,
                cash_delta_fen=delta.cash_fen,
                reason=reason.value,
                created_at=batch.now,
            )
        )
        body["adjustment"] = {
            "reason": reason.value,
            "message": ADJUST_LABELS[reason],
            "deltas": delta.to_dict(),
            "terminal": terminal_split,
        }
    await changelog.record(session, changes)
    return _Outcome(
        ResultStatus(body["status"]),
        body,
        settlement_id=settlement.id,
        reason=None if reason is None else reason.value,
    )


async def _by_voucher(batch: _Batch, mutation: Mutation, create: SettlementCreate) -> _Identified:
    assert create.voucher is not None
    settings = batch.state.settings
    skew = settings.voucher_skew_s
    at = batch.now
    window = _code_window(create.voucher)
    if window is not None:
        signed, expires = window
        claimed = mutation.client_time.timestamp()
        if signed - skew <= claimed <= expires + skew:
            at = mutation.client_time  # the terminal's clock agrees with the code: the scan moment
        else:
            at = dt.datetime.fromtimestamp(signed, dt.UTC)  # the terminal's clock is off: the code's time
        if at > batch.now + dt.timedelta(seconds=skew):
            raise _Rejected(RejectReason.VOUCHER_INVALID, field="payload.voucher", detail="not_yet_valid")
        if at < batch.now - dt.timedelta(seconds=OFFLINE_SETTLEMENT_MAX_AGE_S):
            raise _Rejected(RejectReason.VOUCHER_EXPIRED, field="payload.voucher", detail="too_old")
    checked = await voucher_service.verify(
        batch.session, settings, batch.state.voucher_keys, create.voucher, now=at, commit=False
    )
    verdict = checked.result
    if not verdict.valid or checked.person is None:
        reason = verdict.reason or Reason.REVOKED
        raise _Rejected(
            _VOUCHER_REASONS[reason],
            field="payload.voucher",
            detail=reason.value + (f":{verdict.detail}" if verdict.detail else ""),
        )
    assert verdict.replay_key is not None
    voucher_ref = verdict.replay_key.hex()
    # The replay store forgets a key once its code has expired; the settlements never do.
    used = await batch.session.execute(
        select(col(Settlement.id)).where(col(Settlement.voucher_ref) == voucher_ref)
    )
    if used.first() is not None:
        raise _Rejected(RejectReason.VOUCHER_REPLAYED, field="payload.voucher", detail="replayed:settled")
    return _Identified(checked.person, at, voucher_ref)


async def _by_card(batch: _Batch, mutation: Mutation, create: SettlementCreate) -> _Identified:
    assert create.person_ref is not None
    session, clinic = batch.session, batch.clinic
    person = (
        await session.execute(
            select(InsuredPerson)
            .join(VoucherSubject, col(VoucherSubject.person_id) == col(InsuredPerson.id))
            .where(col(VoucherSubject.ref) == create.person_ref)
        )
    ).scalar_one_or_none()
    if person is None:
        raise _Rejected(RejectReason.PERSON_UNKNOWN, field="payload.personRef")
    # A card proves nothing by itself: it is taken only for the clinic's own villagers, whom the
    # terminal holds in its synced roster (and whom the clinic knows).
    if clinic.village_code is None or person.village_code != clinic.village_code:
        raise _Rejected(RejectReason.NOT_ON_ROSTER, field="payload.personRef")
    oldest = batch.now - dt.timedelta(seconds=OFFLINE_SETTLEMENT_MAX_AGE_S)
    if mutation.client_time < oldest:
        raise _Rejected(RejectReason.VISIT_TOO_OLD, detail=f"settled at {mutation.client_time.isoformat()}")
    at = min(max(mutation.client_time, batch.terminal.enrolled_at, oldest), batch.now)
    return _Identified(person, at, None)


async def _enrolment_on(session: AsyncSession, person_id: int, day: dt.date) -> Enrolment | None:
    rows = await session.execute(
        select(Enrolment)
        .where(
            col(Enrolment.person_id) == person_id,
            col(Enrolment.start_on) <= day,
            (col(Enrolment.end_on).is_(None)) | (col(Enrolment.end_on) >= day),
        )
        .order_by(col(Enrolment.start_on).desc())
        .limit(1)
    )
    return rows.scalars().first()


def _locality(enrolment: Enrolment, clinic: Facility, claimed: str) -> str:
    """参保地就医 when the clinic is in the region of the person's enrolment. Elsewhere the server keeps
    no record of 异地就医备案: it takes the terminal's registered/unregistered, never `local`."""
    if enrolment.region_code == clinic.region_code:
        return "local"
    return claimed if claimed != "local" else "unregistered"


def _bill_key(items: Sequence[Any]) -> list[tuple[int, str, int, str]]:
    return sorted(
        (
            int(i["amount_fen"]),
            str(i["item_class"]),
            int(i.get("self_pay_permille", 0)),
            str(i.get("code", "")),
        )
        for i in items
    )


async def _duplicate(
    session: AsyncSession, person_id: int, clinic_id: int, day: dt.date, create: SettlementCreate
) -> bool:
    """The same bill for the same person at the same clinic on the same day, not voided: a visit sent
    twice (a retyped settlement, a second scan), not a second visit."""
    start = dt.datetime.combine(day, dt.time(), SHANGHAI).astimezone(dt.UTC)
    rows = await session.execute(
        select(Settlement).where(
            col(Settlement.person_id) == person_id,
            col(Settlement.facility_id) == clinic_id,
            col(Settlement.settled_at) >= start,
            col(Settlement.settled_at) < start + dt.timedelta(days=1),
            col(Settlement.category) == create.bill.category,
            col(Settlement.total_fen) == create.bill.total_fen,
            col(Settlement.voided_at).is_(None),
        )
    )
    wanted = _bill_key(create.bill.to_dict()["items"])
    return any(
        row.visit is not None and _bill_key(row.visit.get("items", [])) == wanted for row in rows.scalars()
    )


def _person_changes(person: InsuredPerson, settlement_id: int) -> list[Change]:
    assert person.id is not None
    changes = [Change(SETTLEMENT_ENTITY, str(settlement_id), changelog.person_scope(person.id))]
    if person.village_code:
        # The roster entry carries the year-to-date totals: every terminal of the village pulls it again.
        changes.append(Change(ROSTER, str(person.id), changelog.village_scope(person.village_code)))
    return changes


async def _account_flow(
    session: AsyncSession,
    person_id: int,
    amount: int,
    kind: str,
    settlement: Settlement,
    occurred_at: dt.datetime,
) -> None:
    """Moves `amount` (signed) on the personal account in one statement and records the flow;
    balance_after is the balance it left."""
    table = PersonalAccount.__table__  # type: ignore[attr-defined]
    balance = (
        await session.execute(
            update(table)
            .where(table.c.person_id == person_id)
            .values(balance_fen=table.c.balance_fen + amount, updated_at=utcnow())
            .returning(table.c.balance_fen)
        )
    ).scalar_one()
    session.add(
        AccountFlow(
            person_id=person_id,
            occurred_at=occurred_at,
            year=occurred_at.astimezone(SHANGHAI).year,
            kind=kind,
            amount_fen=amount,
            balance_after_fen=int(balance),
            settlement_id=settlement.id,
        )
    )


# ------------------------------------------------------------------------------------ settlement.void


async def _void(batch: _Batch, mutation: Mutation, void: SettlementVoid) -> _Outcome:
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
    person = await session.get(InsuredPerson, settlement.person_id)
    assert person is not None and person.id is not None
    changes = _person_changes(person, settlement.id)
    if settlement.personal_account_fen:
        await _account_flow(
            session, person.id, settlement.personal_account_fen, VOID_FLOW_KIND, settlement, batch.now
        )
        changes.append(Change(ACCOUNT_ENTITY, str(person.id), changelog.person_scope(person.id)))
    await session.flush()
    await changelog.record(session, changes)
    body = {
        "id": mutation.id,
        "seq": mutation.seq,
        "status": ResultStatus.APPLIED.value,
        "settlement": {
            "id": str(settlement.id),
            "voidedAt": batch.now.isoformat(),
            "personalAccountRefundFen": settlement.personal_account_fen,
        },
    }
    return _Outcome(ResultStatus.APPLIED, body, settlement_id=settlement.id)
