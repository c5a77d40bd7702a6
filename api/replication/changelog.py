"""The change log: every write to a synced row appends an entry in the writer's own transaction.

Why a sequencer. Concurrent PostgreSQL transactions take ids in one order and may commit in another,
so a reader that served "everything up to id 11" while the transaction holding id 10 was still open
would skip 10 for ever. Entries therefore get their pull order, `seq`, only once they are committed:
`sequence()` (one caller at a time, under a transaction-scoped lock) numbers the committed entries that
have no seq yet, after every seq it gave before. An entry that commits late is numbered late, so no
reader that has moved past a seq can miss an entry numbered at or below it. `ReplicationState.last_seq`
is that watermark: every seq up to it is committed and final. On SQLite one writer at a time gives the
same guarantee without the lock, once the sequencer holds the write lock before it reads the watermark.

Capabilities call `record()` beside their writes (people, settlements, policy versions, revocations);
pull calls `sequence()` and then reads seq ranges per scope.

Wake-up. `record()` also stages the people whose scopes its entries touch on the session; the
transaction announces them once, after it commits (api.notifications.broker.stage_changes: a NOTIFY
of its own on PostgreSQL, the in-process brokers on SQLite), and the mobile streams that follow one of them read the
log at once instead of polling it. Other scopes (villages, clinics, policy) are not announced: no live
stream reads them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import CompoundSelect, bindparam, delete, func, insert, select, text, union_all, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.dbtypes import utcnow
from api.notifications.broker import stage_changes
from api.replication.models import ChangeLogEntry, ChangeOp, ReplicationState

_SEQUENCER_LOCK = 0x5942534C  # "YBSL": one sequencer at a time on PostgreSQL
SEQUENCE_BATCH = 50_000
"""Entries numbered per sequencer run; a backlog larger than this is numbered over several pulls."""

POLICY_SCOPE = "policy"
REVOCATION_SCOPE = "revocations"


def village_scope(village_code: str) -> str:
    return f"village:{village_code}"


_PERSON = "person:"


def person_scope(person_id: int) -> str:
    return f"{_PERSON}{person_id}"


@dataclass(frozen=True, slots=True)
class Change:
    entity: str
    entity_id: str
    scope: str
    op: ChangeOp = ChangeOp.UPSERT


def person_changed(person_id: int, village_code: str | None) -> list[Change]:
    """A resident's roster entry (their village clinic's terminals) and their own data changed."""
    changes = [Change("person", str(person_id), person_scope(person_id))]
    if village_code:
        changes.append(Change("person", str(person_id), village_scope(village_code)))
    return changes


async def record(session: AsyncSession, changes: Iterable[Change]) -> None:
    """Appends the entries in the caller's transaction: they commit (and become pullable) with it."""
    now = utcnow()
    changes = list(changes)
    rows = [
        {"entity": c.entity, "entity_id": c.entity_id, "scope": c.scope, "op": c.op.value, "created_at": now}
        for c in changes
    ]
    people = {int(c.scope[len(_PERSON) :]) for c in changes if c.scope.startswith(_PERSON)}
    if rows:  # the table, not the ORM entity: a plain executemany (a push writes hundreds of entries)
        await session.execute(insert(ChangeLogEntry.__table__), rows)  # type: ignore[attr-defined]
    if people:  # announced once, by the transaction's commit (never per entry or per call)
        stage_changes(session, people)


def _is_postgres(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "postgresql"


async def watermark(session: AsyncSession) -> int:
    state = await session.get(ReplicationState, 1, populate_existing=True)
    return state.last_seq if state is not None else 0


async def sequence(session: AsyncSession, known: ReplicationState | None = None) -> int:
    """Numbers the committed entries that have none yet and commits; returns the new watermark.

    Cheap when there is nothing to do (one indexed look-up, no write), which is the common case of an
    incremental pull; `known`, the state row the caller has just read, spares reading it again."""
    pending = await session.execute(
        select(col(ChangeLogEntry.id)).where(col(ChangeLogEntry.seq).is_(None)).limit(1)
    )
    if pending.first() is None:
        mark = known.last_seq if known is not None else await watermark(session)
        await session.commit()
        return mark
    if _is_postgres(session):
        await session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _SEQUENCER_LOCK})
    else:
        # SQLite: a transaction's reads before its first write run outside it, so the state read below
        # could predate another sequencer's commit, and this one would number new entries again from
        # that stale watermark. A no-op write takes the database's single write lock first.
        rs = ReplicationState.__table__  # type: ignore[attr-defined]
        await session.execute(update(rs).where(rs.c.id == 1).values(last_seq=rs.c.last_seq))
    state = await session.get(ReplicationState, 1, populate_existing=True, with_for_update=True)
    if state is None:
        raise RuntimeError("replication_state is missing: run the migrations")
    base = state.last_seq
    # One statement, one snapshot: the entries it numbers are exactly the committed ones it sees.
    numbered = (
        select(
            col(ChangeLogEntry.id).label("id"),
            (func.row_number().over(order_by=col(ChangeLogEntry.id)) + base).label("new_seq"),
        )
        .where(col(ChangeLogEntry.seq).is_(None))
        .order_by(col(ChangeLogEntry.id))
        .limit(SEQUENCE_BATCH)
        .subquery()
    )
    table = ChangeLogEntry.__table__  # type: ignore[attr-defined]
    result = await session.execute(
        update(table)
        .where(table.c.id == numbered.c.id)
        .values(seq=numbered.c.new_seq)
        .execution_options(synchronize_session=False)
    )
    count = int(getattr(result, "rowcount", 0) or 0)
    state.last_seq = base + count
    await session.commit()
    return base + count


@dataclass(frozen=True, slots=True)
class LoggedChange:
    seq: int
    entity: str
    entity_id: str
    op: ChangeOp


def _read_statement(scopes: int) -> CompoundSelect:
    """The UNION ALL of `scopes` limited range scans, built once per number of scopes (bound
    parameters scope_0.., after, upto, rows): a pull asks on every request, an empty one too."""
    found = _READS.get(scopes)
    if found is not None:
        return found
    table = ChangeLogEntry.__table__  # type: ignore[attr-defined]
    parts = [
        select(table.c.seq, table.c.entity, table.c.entity_id, table.c.op)
        .where(
            table.c.scope == bindparam(f"scope_{n}"),
            table.c.seq > bindparam("after"),
            table.c.seq <= bindparam("upto"),
        )
        .order_by(table.c.seq)
        .limit(bindparam("rows"))
        .subquery()
        for n in range(scopes)
    ]
    statement = union_all(*(select(*part.c) for part in parts))
    _READS[scopes] = statement
    return statement


_READS: dict[int, CompoundSelect] = {}


async def read(
    session: AsyncSession, scopes: Sequence[str], after: int, upto: int, limit: int
) -> list[LoggedChange]:
    """Entries in `scopes` with after < seq <= upto, the `limit` lowest seqs, in seq order.

    One indexed range scan per scope (scope, seq), each limited, in one UNION ALL statement, merged
    here: a single `scope IN (...)` would walk the seq index through every other village's entries."""
    if not scopes:
        return []
    values: dict[str, object] = {f"scope_{n}": scope for n, scope in enumerate(scopes)}
    values.update(after=after, upto=upto, rows=limit)
    rows = await session.execute(_read_statement(len(scopes)), values)
    found = [LoggedChange(int(s or 0), e, i, ChangeOp(o)) for s, e, i, o in rows]
    found.sort(key=lambda c: c.seq)
    return found[:limit]


async def compact(session: AsyncSession, retention: timedelta, now: datetime | None = None) -> int:
    """Drops numbered entries older than `retention`; checkpoints at or below the highest dropped seq
    must then resync (pull answers `{"resync": true}`). Returns how many entries were dropped."""
    cutoff = (now or utcnow()) - retention
    highest = (
        await session.execute(
            select(func.max(col(ChangeLogEntry.seq))).where(
                col(ChangeLogEntry.seq).is_not(None), col(ChangeLogEntry.created_at) < cutoff
            )
        )
    ).scalar_one()
    if highest is None:
        await session.commit()
        return 0
    result = await session.execute(delete(ChangeLogEntry).where(col(ChangeLogEntry.seq) <= highest))
    await session.execute(
        update(ReplicationState)
        .where(col(ReplicationState.id) == 1, col(ReplicationState.compacted_below) < highest)
        .values(compacted_below=highest)
    )
    await session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


async def state(session: AsyncSession) -> ReplicationState:
    found = await session.get(ReplicationState, 1, populate_existing=True)
    if found is None:
        raise RuntimeError("replication_state is missing: run the migrations")
    return found
