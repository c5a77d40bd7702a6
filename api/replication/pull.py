"""Pull for clinic terminals: what changed in the terminal's scopes since its checkpoint.

A terminal sees its village's roster (what the settlement engine needs about each resident, ID numbers
masked, year-to-date totals as of the pull), every policy version, the voucher issuer public keys, the
voucher revocation list, and its clinic's push issues (rejected and adjusted settlements).

Where each comes from, and why nothing is skipped:
- roster, policy versions, push issues: the change log, read strictly below the sequencer's committed
  watermark (api.replication.changelog), so a transaction that commits late is numbered late;
- revocations: `voucher_revocations` is a log of its own whose versions are allocated under a
  transaction lock, gap-free and in commit order (api.vouchers.revocations.append); the checkpoint keeps
  the version the terminal holds;
- issuer keys live in the key directory, not the database: the checkpoint keeps a digest of the set the
  terminal holds, and a pull sends the whole (small) set whenever it differs.

A first pull (no checkpoint) and a resync are a paged snapshot of the current state, taken against a
watermark fixed when the snapshot starts; every change committed after it has a higher seq and follows
as a delta, so a row changed during a snapshot is sent again rather than missed. Documents are the
current state of an entity (changes are upserts of whole documents, or tombstones), so a repeat is
harmless and several changes of one entity in a page become one document.

A checkpoint is opaque to the terminal: a MAC'd cursor bound to that terminal, naming the database's
log epoch. From another database, or older than the change log's retention, it gets `{"resync": true}`;
forged or garbled, a 422 naming the field.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, exists, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.db import dialect_insert, one_of
from api.errors import BadUserInput
from api.pagination import local_today
from api.people import idnumbers
from api.people.models import Enrolment, Facility, InsuredPerson, PersonalAccount
from api.replication import changelog
from api.replication.models import ChangeLogEntry, ChangeOp, PushedMutation, ReplicationState
from api.settlement import service as settlement_service
from api.settlement.models import PolicyVersionRow
from api.state import AppState
from api.terminals.models import Terminal
from api.vouchers.models import VoucherRevocation, VoucherSubject
from sync.vouchers import new_ref

ROSTER = "person"
POLICY = "policy_version"
REVOCATION = "revocation"
ISSUER_KEYS = "issuer_keys"
PUSH_ISSUE = "push_issue"

# The snapshot's phases, in the order a first pull sends them.
_PHASES = ("policy", "revocations", "roster", "issues")


def clinic_scope(clinic_id: int) -> str:
    return f"clinic:{clinic_id}"


@dataclass
class Checkpoint:
    epoch: str
    seq: int
    """Every change-log entry up to here has been sent (or is covered by the snapshot)."""
    revocations: int
    keys: str
    phase: str | None = None
    """While a snapshot is being paged: the phase and the last id sent in it."""
    after: str = ""

    def to_key(self) -> list[Any]:
        return [self.epoch, self.seq, self.revocations, self.keys, self.phase, self.after]

    @classmethod
    def from_key(cls, key: list[Any]) -> Checkpoint:
        epoch, seq, revocations, keys, phase, after = key
        if not (
            isinstance(epoch, str)
            and isinstance(seq, int)
            and isinstance(revocations, int)
            and isinstance(keys, str)
            and (phase is None or phase in _PHASES)
            and isinstance(after, str)
        ):
            raise ValueError("not a checkpoint")
        return cls(epoch, seq, revocations, keys, phase, after)


class _Resync(Exception):
    pass


def _cursor_scope(terminal: Terminal) -> str:
    return f"sync-pull:{terminal.id}"


def _decode(state: AppState, terminal: Terminal, text: str) -> Checkpoint:
    key = state.cursors.decode(_cursor_scope(terminal), text, field="checkpoint")
    try:
        return Checkpoint.from_key(key)
    except (ValueError, TypeError):
        raise BadUserInput("同步检查点无效", field="checkpoint") from None


def _encode(state: AppState, terminal: Terminal, checkpoint: Checkpoint) -> str:
    return state.cursors.encode(_cursor_scope(terminal), checkpoint.to_key())


def _keys_document(state: AppState) -> tuple[str, dict[str, Any]]:
    keys = state.voucher_keys.public_keys_b64()
    digest = hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:32]
    return digest, {"entity": ISSUER_KEYS, "id": "voucher", "op": "upsert", "data": {"keys": keys}}


class _Page:
    """Documents of one answer, at most `limit`, one per entity (the latest state wins)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.changes: list[dict[str, Any]] = []
        self._index: dict[tuple[str, str], int] = {}

    @property
    def room(self) -> int:
        return self.limit - len(self.changes)

    def add(self, document: dict[str, Any]) -> None:
        key = (document["entity"], document["id"])
        if key in self._index:
            self.changes[self._index[key]] = document
            return
        self._index[key] = len(self.changes)
        self.changes.append(document)


@dataclass(frozen=True, slots=True)
class _Clinic:
    """What a pull needs of the terminal's clinic (plain values: an ORM get costs more than the row)."""

    id: int
    village_code: str | None


_F = Facility.__table__.c  # type: ignore[attr-defined]
_RS = ReplicationState.__table__.c  # type: ignore[attr-defined]
_CL = ChangeLogEntry.__table__.c  # type: ignore[attr-defined]
_R = VoucherRevocation.__table__.c  # type: ignore[attr-defined]
# What every pull reads first, in one statement built once (an empty pull is only this): the log's
# state, whether any committed entry still awaits its seq (the partial index on seq IS NULL), whether
# the revocation list has grown past the terminal's version, and the terminal's clinic. One statement
# is one snapshot, so "nothing pending" and the watermark agree: every committed entry then has a
# seq <= last_seq, and the sequencer has nothing to do. A revocation appended after it is sent by the
# next pull (the checkpoint keeps the version this one saw).
_START = select(
    _RS.epoch,
    _RS.last_seq,
    _RS.compacted_below,
    exists().where(_CL.seq.is_(None)).label("pending"),
    exists().where(_R.version > bindparam("revocations")).label("revoked"),
    select(_F.id).where(_F.id == bindparam("clinic")).scalar_subquery().label("clinic_id"),
    select(_F.village_code).where(_F.id == bindparam("clinic")).scalar_subquery().label("village"),
).where(_RS.id == 1)


async def pull(
    session: AsyncSession, state: AppState, terminal: Terminal, checkpoint: str | None, limit: int
) -> dict[str, Any]:
    assert terminal.id is not None
    held = _decode(state, terminal, checkpoint) if checkpoint is not None else None
    start = (
        await session.execute(
            _START, {"clinic": terminal.clinic_id, "revocations": held.revocations if held else 0}
        )
    ).one_or_none()
    if start is None:
        raise RuntimeError("replication_state is missing: run the migrations")
    epoch, last_seq, compacted_below, pending, revoked, clinic_id, village = start
    if clinic_id is None:
        raise BadUserInput("终端所属机构不存在", field="terminal")
    clinic = _Clinic(clinic_id, village)
    # Only committed entries without a seq need the sequencer (its lock, its write, its commit).
    mark = await changelog.sequence(session) if pending else int(last_seq)
    keys_digest, keys_document = _keys_document(state)
    page = _Page(limit)
    if held is None:
        current = Checkpoint(epoch, mark, 0, "", phase=_PHASES[0])
    else:
        current = held
        if current.epoch != epoch or current.seq > mark:
            return {"resync": True}  # another database's checkpoint, or one from a future we never had
        if current.seq < compacted_below:
            # The entries after it are past the retention and gone; a snapshot paused that long
            # would read its deltas from there too.
            return {"resync": True}
    if current.phase is not None or revoked or current.seq < mark:
        # Reads ahead: first commit what the request has written so far (the assertion's jti, which
        # http.py leaves to this transaction; on SQLite it holds the write lock), so that no snapshot
        # page is read under it. An empty pull commits once, at the end.
        await session.commit()
    if current.keys != keys_digest:
        page.add(keys_document)
        current.keys = keys_digest
    if current.phase is not None:
        await _snapshot(session, state, clinic, current, page)
    more = False
    if current.phase is None and page.room > 0 and (revoked or held is None):
        more = await _revocations(session, current, page)
    if current.phase is None and page.room > 0 and current.seq < mark:  # else nothing can be new
        more = await _deltas(session, state, clinic, _scopes(terminal, clinic), current, mark, page) or more
    # A full page may have more behind it: the terminal pulls again (an empty page ends it cheaply).
    has_more = current.phase is not None or more or page.room == 0
    await session.commit()
    return {"changes": page.changes, "checkpoint": _encode(state, terminal, current), "hasMore": has_more}


def _scopes(terminal: Terminal, clinic: _Clinic) -> list[str]:
    scopes = [changelog.POLICY_SCOPE, clinic_scope(terminal.clinic_id)]
    if clinic.village_code:
        scopes.append(changelog.village_scope(clinic.village_code))
    return scopes


async def _snapshot(
    session: AsyncSession, state: AppState, clinic: _Clinic, current: Checkpoint, page: _Page
) -> None:
    """Fills the page with the next snapshot documents, phase after phase; the checkpoint's phase is
    None once the snapshot is complete."""
    while current.phase is not None and page.room > 0:
        room = page.room
        if current.phase == "policy":
            rows = list(
                (
                    await session.execute(
                        select(PolicyVersionRow)
                        .where(col(PolicyVersionRow.id) > current.after)
                        .order_by(col(PolicyVersionRow.id))
                        .limit(room + 1)
                    )
                ).scalars()
            )
            for row in rows[:room]:
                page.add(_policy_document(row))
                current.after = row.id
            more = len(rows) > room
        elif current.phase == "revocations":
            more = await _revocations(session, current, page)
        elif current.phase == "roster":
            after = int(current.after) if current.after else 0
            documents = await roster_documents(
                session, state, clinic.village_code, after=after, limit=room + 1
            )
            for document in documents[:room]:
                page.add(document)
                current.after = document["id"]
            more = len(documents) > room
        else:  # issues
            documents = await _issue_documents(session, clinic, after=current.after, limit=room + 1)
            for document in documents[:room]:
                page.add(document)
                current.after = document["id"]
            more = len(documents) > room
        if more:
            return
        _next_phase(current)


def _next_phase(current: Checkpoint) -> None:
    assert current.phase is not None
    position = _PHASES.index(current.phase)
    current.phase = _PHASES[position + 1] if position + 1 < len(_PHASES) else None
    current.after = ""


# Built once, plain columns: every pull asks (an empty one too), and ORM entities cost more than the rows.
_REVOCATIONS_AFTER = (
    select(_R.version, _R.kind, _R.ref, _R.reason)
    .where(_R.version > bindparam("after"))
    .order_by(_R.version)
    .limit(bindparam("rows"))
)


async def _revocations(session: AsyncSession, current: Checkpoint, page: _Page) -> bool:
    """Revocation entries after the terminal's version; whether more remain."""
    rows = (
        await session.execute(_REVOCATIONS_AFTER, {"after": current.revocations, "rows": page.room + 1})
    ).all()
    for version, kind, ref, reason in rows[: page.room]:
        page.add(
            {
                "entity": REVOCATION,
                "id": str(version),
                "op": "upsert",
                "data": {"version": version, "kind": kind, "ref": ref, "reason": reason},
            }
        )
        current.revocations = version
    return len(rows) > page.room


async def _deltas(
    session: AsyncSession,
    state: AppState,
    clinic: _Clinic,
    scopes: Sequence[str],
    current: Checkpoint,
    mark: int,
    page: _Page,
) -> bool:
    entries = await changelog.read(session, scopes, current.seq, mark, page.room + 1)
    more = len(entries) > page.room
    entries = entries[: page.room]
    if not entries:
        current.seq = max(current.seq, mark)
        return more
    roster_ids = [int(e.entity_id) for e in entries if e.entity == ROSTER and e.op == ChangeOp.UPSERT]
    documents = {
        d["id"]: d for d in await roster_documents(session, state, clinic.village_code, ids=roster_ids)
    }
    policies = {
        row.id: row
        for row in (
            await session.execute(
                select(PolicyVersionRow).where(
                    col(PolicyVersionRow.id).in_([e.entity_id for e in entries if e.entity == POLICY])
                )
            )
        ).scalars()
    }
    issues = {
        d["id"]: d
        for d in await _issue_documents(
            session, clinic, ids=[int(e.entity_id) for e in entries if e.entity == PUSH_ISSUE]
        )
    }
    for entry in entries:
        found: dict[str, Any] | None
        if entry.entity == ROSTER:
            found = documents.get(entry.entity_id)
        elif entry.entity == POLICY:
            row = policies.get(entry.entity_id)
            found = _policy_document(row) if row is not None else None
        elif entry.entity == PUSH_ISSUE:
            found = issues.get(entry.entity_id)
        else:
            continue  # an entity this client does not sync
        if entry.op == ChangeOp.DELETE or found is None:
            # Gone, or no longer in this terminal's scope (a resident who moved to another village).
            page.add({"entity": entry.entity, "id": entry.entity_id, "op": "delete"})
        else:
            page.add(found)
        current.seq = entry.seq
    if not more:
        current.seq = max(current.seq, mark)
    return more


def _policy_document(row: PolicyVersionRow) -> dict[str, Any]:
    return {"entity": POLICY, "id": row.id, "op": "upsert", "data": row.body}


_ROSTER_COLUMNS = (
    InsuredPerson.id,
    InsuredPerson.name,
    InsuredPerson.id_number_cipher,
    InsuredPerson.gender,
    InsuredPerson.birth_date,
    InsuredPerson.insurance_type,
    InsuredPerson.region_code,
    InsuredPerson.village_code,
    InsuredPerson.assistance_category,
    InsuredPerson.chronic_diseases,
    InsuredPerson.two_diseases,
)


async def roster_documents(
    session: AsyncSession,
    state: AppState,
    village_code: str | None,
    *,
    ids: Sequence[int] | None = None,
    after: int = 0,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Roster entries of `village_code`, as of now: these `ids` (those still in the village), or the
    next `limit` residents by id after `after`. What a terminal needs to settle a visit offline: the
    voucher ref matches a scanned code to the entry, ID numbers are masked, year-to-date totals are
    the current insurance year's from stored settlements. Plain rows, not ORM objects: a first pull
    builds thousands of these."""
    if not village_code or (ids is not None and not ids):
        return []
    statement = select(*(col(c) for c in _ROSTER_COLUMNS)).where(
        col(InsuredPerson.village_code) == village_code
    )
    params: dict[str, Any] = {}
    if ids is not None:
        statement = statement.where(one_of(col(InsuredPerson.id), "ids"))
        params["ids"] = list(ids)
    else:
        statement = (
            statement.where(col(InsuredPerson.id) > after).order_by(col(InsuredPerson.id)).limit(limit)
        )
    people = (await session.execute(statement, params)).all()
    person_ids = [int(p.id) for p in people]
    if not person_ids:
        return []
    refs = await _voucher_refs(session, person_ids)
    totals = await settlement_service.year_to_date_many(session, person_ids, local_today().year)
    balance_rows = await session.execute(
        select(col(PersonalAccount.person_id), col(PersonalAccount.balance_fen)).where(
            one_of(col(PersonalAccount.person_id), "people")
        ),
        {"people": person_ids},
    )
    balances = {pid: balance for pid, balance in balance_rows}
    periods: dict[int, list[dict[str, Any]]] = {pid: [] for pid in person_ids}
    enrolments = await session.execute(
        select(
            col(Enrolment.person_id),
            col(Enrolment.insurance_type),
            col(Enrolment.region_code),
            col(Enrolment.start_on),
            col(Enrolment.end_on),
        )
        .where(one_of(col(Enrolment.person_id), "people"))
        .order_by(col(Enrolment.start_on)),
        {"people": person_ids},
    )
    for pid, insurance, region, start, end in enrolments:
        periods[pid].append(
            {
                "insuranceType": insurance,
                "region": region,
                "from": start.isoformat(),
                "to": end.isoformat() if end else None,
            }
        )
    mask, decrypt = idnumbers.mask, state.id_numbers.decrypt
    documents = []
    for person in people:
        ytd = totals[person.id]
        documents.append(
            {
                "entity": ROSTER,
                "id": str(person.id),
                "op": "upsert",
                "data": {
                    "voucherRef": refs[person.id],
                    "name": person.name,
                    "idNumberMasked": mask(decrypt(person.id_number_cipher)),
                    "gender": person.gender,
                    "birthDate": person.birth_date.isoformat(),
                    "insuranceType": person.insurance_type,
                    "region": person.region_code,
                    "villageCode": person.village_code,
                    "assistanceCategory": person.assistance_category,
                    "chronicDiseases": sorted(person.chronic_diseases),
                    "twoDiseases": sorted(person.two_diseases),
                    "enrolments": periods[person.id],
                    "personalAccountBalanceFen": balances.get(person.id, 0),
                    "yearToDate": {
                        "year": ytd.year,
                        "deductibleUsedFen": dict(ytd.deductible_used_fen),
                        "basicPaidFen": dict(ytd.basic_paid_fen),
                        "criticalOopFen": ytd.critical_oop_fen,
                        "criticalPaidFen": ytd.critical_paid_fen,
                        "assistanceThresholdUsedFen": ytd.assistance_threshold_used_fen,
                        "assistancePaidFen": ytd.assistance_paid_fen,
                    },
                },
            }
        )
    return documents


async def _voucher_refs(session: AsyncSession, person_ids: list[int]) -> dict[int, str]:
    """Each person's voucher ref, minting the missing ones first (insert-if-absent in one statement, as
    issuing a code does one at a time): a terminal must recognise a resident's first code even if it
    is shown while the clinic is offline."""

    async def known() -> dict[int, str]:
        rows = await session.execute(
            select(col(VoucherSubject.person_id), col(VoucherSubject.ref)).where(
                one_of(col(VoucherSubject.person_id), "people")
            ),
            {"people": person_ids},
        )
        return {pid: ref for pid, ref in rows}

    refs = await known()
    missing = [pid for pid in person_ids if pid not in refs]
    if missing:
        table = VoucherSubject.__table__  # type: ignore[attr-defined]
        await session.execute(
            dialect_insert(session)(table)
            .values([{"person_id": pid, "ref": new_ref().hex()} for pid in missing])
            .on_conflict_do_nothing()
        )
        refs = await known()
    return refs


_ISSUE_COLUMNS = (
    col(PushedMutation.id),
    col(PushedMutation.mutation_id),
    col(PushedMutation.terminal_id),
    col(PushedMutation.seq),
    col(PushedMutation.status),
    col(PushedMutation.reason),
    col(PushedMutation.result),
    col(PushedMutation.resolved_at),
    col(PushedMutation.resolution_note),
)


async def _issue_documents(
    session: AsyncSession,
    clinic: _Clinic,
    *,
    after: str = "",
    limit: int | None = None,
    ids: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """The clinic's rejected and adjusted pushes (open or resolved), as the terminal shows them."""
    terminals = select(col(Terminal.id)).where(col(Terminal.clinic_id) == clinic.id)
    # Only the columns the document shows: not the payload, which the terminal has in its own outbox
    # (up to 64 KiB for a rejected one, megabytes for an applied bill of MAX_BILL_ITEMS items).
    statement = select(*_ISSUE_COLUMNS).where(
        col(PushedMutation.terminal_id).in_(terminals),
        col(PushedMutation.status).in_(["rejected", "adjusted"]),
    )
    params: dict[str, Any] = {}
    if ids is not None:
        if not ids:
            return []
        statement = statement.where(one_of(col(PushedMutation.id), "ids"))
        params["ids"] = list(ids)
    else:
        statement = statement.where(col(PushedMutation.id) > (int(after) if after else 0))
    statement = statement.order_by(col(PushedMutation.id))
    if limit is not None:
        statement = statement.limit(limit)
    return [
        {
            "entity": PUSH_ISSUE,
            "id": str(row.id),
            "op": "upsert",
            "data": {
                "mutationId": row.mutation_id,
                "terminalId": str(row.terminal_id),
                "seq": row.seq,
                "status": row.status,
                "reason": row.reason,
                "result": row.result,
                "resolvedAt": row.resolved_at.isoformat() if row.resolved_at else None,
                "resolutionNote": row.resolution_note,
            },
        }
        for row in (await session.execute(statement, params)).all()
    ]
