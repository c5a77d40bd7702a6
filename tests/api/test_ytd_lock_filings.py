"""A 零星报销 approval and a clinic terminal's push for the same person, at the same moment, must not
both pay out of the same remaining 门诊统筹 annual cap.

Both read the person's year-to-date totals and then store a settlement priced against them. The push
locks the person's row (SELECT ... FOR NO KEY UPDATE, ids ascending) before it reads; the approval
must take the same lock before it reads, or each prices against totals without the other's settlement.

The schedule is forced, not left to luck: one side is held right after it has read the totals (a
wrapper around ``year_to_date_many``) while the other runs. The held side is let go once the other has
finished or is waiting for a lock; nothing is timed.

PostgreSQL: the other side really runs, and a wait for the row lock is seen in pg_stat_activity.
SQLite has no row locks: a writer takes the database's single write lock, and its reads run outside
any transaction until its first write. There the approval, held after its read, either holds the write
lock already (probed from a third connection with BEGIN IMMEDIATE and no busy wait), so no push can
commit until it has, or it does not, and the push runs to its commit in between.
"""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlmodel import col

from api.people.models import Settlement
from api.settlement import service as settlement_service
from api.state import AppState
from sync.settlement import YearToDate
from tests.api import filingworld as fw
from tests.api.test_push import (
    clinic,
    create,
    items,
    local_day,
    morning,
    mutation,
    new_village,
    online_code,
    run,
    terminal,
    villager,
)
from tests.conftest import GraphQLClient

CAP = 40_000  # 普通门诊统筹 400 yuan a year (resident, default policy)
HELD: contextvars.ContextVar[str | None] = contextvars.ContextVar("held", default=None)


class Gate:
    """Holds the side named `who` right after its first year-to-date read, until `release`."""

    def __init__(self, who: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.who = who
        self.read = asyncio.Event()
        self.go = asyncio.Event()
        original = settlement_service.year_to_date_many

        async def held(
            session: Any, person_ids: Iterable[int], year: int, **kw: Any
        ) -> dict[int, YearToDate]:
            totals = await original(session, person_ids, year, **kw)
            if HELD.get() == self.who and not self.read.is_set():
                self.read.set()
                await self.go.wait()
            return totals

        monkeypatch.setattr(settlement_service, "year_to_date_many", held)

    def release(self) -> None:
        self.go.set()


async def as_side(who: str, work: Awaitable[Any]) -> Any:
    HELD.set(who)  # this task's context only
    return await work


async def _waiting_for_a_lock(state: AppState) -> bool:
    async with state.db.session() as session:
        found = await session.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
        return int(found.scalar_one()) > 0


async def _finished_or_waiting(state: AppState, task: asyncio.Task[Any]) -> None:
    """Returns once `task` has finished or some backend of this database waits for a lock."""
    while not await _waiting_for_a_lock(state):
        done, _ = await asyncio.wait({task}, timeout=0.01)
        if done:
            return


def _write_lock_held(state: AppState) -> bool:
    path = make_url(state.settings.resolved_database_url).database
    assert path is not None
    probe = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc), exc
        return True
    finally:
        probe.close()
    return False


async def _world(state: AppState, gql: GraphQLClient) -> tuple[Callable[[], Awaitable[Any]], Any, int]:
    """A person with a reimbursement filing at its last stage, claimed; a terminal with a visit of
    theirs to push. Each visit alone pays more than half of the cap."""
    who = await fw.resident(state, gql)
    person = who.member.person_id
    place = await clinic(state, new_village())
    term = await terminal(state, place)
    villager_ = await villager(state, place.village_code, person_id=person)
    at = morning()
    day = local_day(at)
    # The same day as the push's visit (the reimbursement is priced against the whole year: 8b30dcc).
    visit = fw.visit(
        visitDate=day.isoformat(),
        hospitalName="凤台县人民医院",
        facilityLevel="primary",
        region="340421",
        items=[{"name": "诊疗费", "amountFen": 60_000, "itemClass": "class_a"}],
    )
    filing = await fw.submitted(state, who, "REIMBURSEMENT", fw.reimbursement(visits=[visit]))
    first, second, finance = [await fw.reviewer(state, gql) for _ in range(3)]
    assert (await fw.through_stages([first, second], filing["id"]))["stage"] == "payment"
    fw.data(await finance(fw.CLAIM, {"id": filing["id"]}))

    async def approve() -> Any:
        return fw.data(
            await finance(fw.DECIDE, {"id": filing["id"], "decision": "APPROVE", "reason": "材料齐全"})
        )["decideFiling"]

    batch = [mutation(1, create(items(50_000), day, voucher=online_code(state, villager_, at)), at)]
    return approve, (term, batch), person


async def _basic_paid(state: AppState, person: int, year: int) -> list[int]:
    async with state.db.session() as session:
        rows = await session.execute(
            select(col(Settlement.basic_fen)).where(
                col(Settlement.person_id) == person,
                col(Settlement.year) == year,
                col(Settlement.ytd_pool) == "general_outpatient",
            )
        )
        return sorted(int(r) for r in rows.scalars())


def _postgres(state: AppState) -> bool:
    return state.db.is_postgres


@pytest.mark.parametrize("held", ["push", "approval"])
async def test_an_approval_and_a_push_for_one_person_never_pay_past_the_cap(
    state: AppState, gql: GraphQLClient, monkeypatch: pytest.MonkeyPatch, held: str
) -> None:
    if not _postgres(state):
        pytest.skip("needs PostgreSQL's row locks (SQLite: see the test below)")
    approve, (term, batch), person = await _world(state, gql)
    gate = Gate(held, monkeypatch)
    sides = {"push": lambda: run(state, term, batch), "approval": approve}
    other = "approval" if held == "push" else "push"
    first = asyncio.create_task(as_side(held, sides[held]()))
    await gate.read.wait()  # it has read the totals (holding whatever it locked first)
    second = asyncio.create_task(as_side(other, sides[other]()))
    await _finished_or_waiting(state, second)
    gate.release()
    await asyncio.gather(first, second)
    paid = await _basic_paid(state, person, local_day(morning()).year)
    assert len(paid) == 2 and sum(paid) == CAP, paid  # one priced with the other's payment counted in


async def test_on_sqlite_an_approval_reads_its_totals_under_the_write_lock(
    state: AppState, gql: GraphQLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    if _postgres(state):
        pytest.skip("SQLite's write lock (PostgreSQL: the test above)")
    approve, (term, batch), person = await _world(state, gql)
    gate = Gate("approval", monkeypatch)
    approval = asyncio.create_task(as_side("approval", approve()))
    await gate.read.wait()
    if _write_lock_held(state):
        # No push can commit before the approval has: let it finish, then push.
        gate.release()
        await approval
        await run(state, term, batch)
    else:
        # Nothing stops a push from committing between the approval's read and its write.
        await run(state, term, batch)
        gate.release()
        await approval
    paid = await _basic_paid(state, person, local_day(morning()).year)
    assert len(paid) == 2 and sum(paid) == CAP, paid
