"""The change log's wake-up (issue 12): a committed change wakes the mobile streams that follow one of
its people at once, on every worker, so their poll is only a safety net. With the poll set to 60 s
here, only the wake-up can deliver within the tests' bounded waits."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlmodel import col

from api.family.models import Permission
from api.notifications import service as notifications
from api.notifications.broker import (
    CHANGE_PAYLOADS_MAX,
    Broker,
    BrokerClosed,
    ChangeAnnouncement,
    ChangeWatch,
    LocalBroker,
    PostgresBroker,
    stage_changes,
)
from api.people.models import Facility, Settlement
from api.replication import changelog
from api.replication.mobile import service as mobile
from api.settlement.models import PolicyVersionRow
from api.state import AppState
from tests.api import familyworld as world
from tests.api.test_mobile_replication import UNLINK, event, seed_records, streaming
from tests.conftest import GraphQLClient

WAIT = 15.0
"""Bounded waits, far below the 60 s safety-net poll the tests set."""

postgres_only = pytest.mark.skipif(
    not os.environ.get("YIBAO_TEST_POSTGRES_URL"),
    reason="LISTEN/NOTIFY between engines: PostgreSQL (SQLite is one process, covered by the others)",
)


@pytest.fixture
def slow_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams opened from now on (the live server's too: same module) poll once a minute."""
    monkeypatch.setattr(mobile, "STREAM_POLL_S", 60.0)


class Heard:
    """What a broker delivered to its change watches, for counting announcements."""

    def __init__(self) -> None:
        self.announcements: list[ChangeAnnouncement] = []


def counting(broker: Broker, heard: Heard) -> Broker:
    original = broker.deliver_changes

    def deliver_changes(announcement: ChangeAnnouncement) -> None:
        heard.announcements.append(announcement)
        original(announcement)

    broker.deliver_changes = deliver_changes  # type: ignore[method-assign]
    return broker


@asynccontextmanager
async def started(state: AppState, engine: Any = None) -> AsyncIterator[Broker]:
    """A broker of its own (a second worker's, on PostgreSQL with its own LISTEN connection)."""
    engine = engine or state.db.engine
    broker: Broker = (
        PostgresBroker(engine) if engine.dialect.name == "postgresql" else LocalBroker(engine.url)
    )
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


async def write_settlement(session: AsyncSession, person_id: int) -> int:
    """A settlement and its change-log entry, in the caller's transaction."""
    facility = (await session.execute(select(col(Facility.id)).limit(1))).scalar_one()
    policy = (await session.execute(select(func.max(col(PolicyVersionRow.id))))).scalar_one()
    row = Settlement(
        person_id=person_id, facility_id=facility, settled_at=dt.datetime(2026, 4, 1, tzinfo=dt.UTC),
        year=2026, category="outpatient", total_fen=5000, compliant_fen=5000, basic_fen=2000,
        critical_illness_fen=0, assistance_fen=0, personal_account_fen=0, cash_fen=3000,
        policy_version=policy,
    )  # fmt: skip
    session.add(row)
    await session.flush()
    assert row.id is not None
    await changelog.record(
        session, [changelog.Change("settlement", str(row.id), changelog.person_scope(person_id))]
    )
    return row.id


async def woken(watch: ChangeWatch) -> None:
    assert await watch.wait(WAIT), "no wake-up"


async def not_woken(watch: ChangeWatch) -> None:
    """Called once a later commit's wake-up has arrived: announcements are delivered in commit order,
    so one for this watch would have arrived before it."""
    assert not await watch.wait(0)


# --- the stream, through graphql-ws on the live server (its own engine and broker) ------------------------


@pytest.mark.usefixtures("slow_poll")
async def test_a_stream_sees_a_direct_write_a_terminal_push_and_a_link_change_at_once(
    state: AppState, gql: GraphQLClient, live_server: str
) -> None:
    from tests.api import test_push as terminals

    place = await terminals.clinic(state)
    term = await terminals.terminal(state, place)
    holder, relative = await world.person(state), await world.person(state, age=70)
    who = await terminals.villager(state, place.village_code, balance=0, person_id=relative.person_id)
    link_id = await world.link(state, holder, relative, set(Permission))
    assert holder.token is not None
    async with streaming(live_server, holder.token, "Settlement") as ws:
        assert (await event(ws, "Settlement"))["resync"]
        # A service write of the holder's own settlement (in this test's process, not the server's).
        [mine] = await seed_records(state, holder.person_id, count=1)
        change = await event(ws, "Settlement")
        assert [d["id"] for d in change["documents"]] == [str(mine)]
        # A clinic terminal's push for the relative, who shares records with the holder.
        at = terminals.morning()
        payload = terminals.create(
            terminals.items(6_000), terminals.local_day(at), voucher=terminals.online_code(state, who, at)
        )
        await terminals.run(state, term, [terminals.mutation(1, payload, at)])
        change = await event(ws, "Settlement")
        assert [(d["personId"], d["source"]) for d in change["documents"]] == [
            (str(relative.person_id), "terminal")
        ]
        # The link goes: the visible set changed, the phone is told to pull.
        assert "errors" not in await gql(UNLINK, {"linkId": str(link_id)}, token=holder.token)
        assert await event(ws, "Settlement") == {"documents": [], "checkpoint": None, "resync": True}
        # No longer visible: the relative's next settlement is not the holder's business.
        await seed_records(state, relative.person_id, count=1)
        [again] = await seed_records(state, holder.person_id, count=1)
        change = await event(ws, "Settlement")
        assert [d["id"] for d in change["documents"]] == [str(again)]


@pytest.mark.usefixtures("slow_poll")
async def test_a_filing_moved_by_a_reviewer_reaches_the_residents_stream(
    state: AppState, gql: GraphQLClient, live_server: str
) -> None:
    from tests.api import filingworld as filings

    me = await filings.resident(state, gql)
    reviewer = await filings.reviewer(state, gql)
    filing = await filings.submitted(state, me, "CROSS_REGION")
    assert me.member.token is not None
    async with streaming(live_server, me.member.token, "Filing") as ws:
        assert (await event(ws, "Filing"))["resync"]
        claimed = filings.data(await reviewer(filings.CLAIM, {"id": filing["id"]}))["claimFiling"]
        change = await event(ws, "Filing")
        [document] = change["documents"]
        assert document["serverId"] == filing["id"]
        print("CLAIMED", claimed, "DOC", document)
        assert document["stage"] == claimed["stage"] and document["version"] > 0


@pytest.mark.usefixtures("slow_poll")
async def test_a_rolled_back_write_wakes_no_stream_into_sending_it(state: AppState, live_server: str) -> None:
    me = await world.person(state)
    assert me.token is not None
    async with streaming(live_server, me.token, "Settlement") as ws:
        assert (await event(ws, "Settlement"))["resync"]
        async with state.db.session() as session:
            await write_settlement(session, me.person_id)
            await session.rollback()
        async with state.db.session() as session:
            kept = await write_settlement(session, me.person_id)
            await session.commit()
        change = await event(ws, "Settlement")
        assert [d["id"] for d in change["documents"]] == [str(kept)]  # the first thing sent


@pytest.mark.usefixtures("slow_poll")
async def test_a_stream_of_one_person_sends_nothing_of_another(state: AppState, live_server: str) -> None:
    a, b = await world.person(state), await world.person(state)
    assert a.token is not None
    async with streaming(live_server, a.token, "Settlement") as ws:
        assert (await event(ws, "Settlement"))["resync"]
        await seed_records(state, b.person_id, count=2)
        [own] = await seed_records(state, a.person_id, count=1)
        change = await event(ws, "Settlement")
        assert [(d["id"], d["personId"]) for d in change["documents"]] == [(str(own), str(a.person_id))]


# --- the broker's change watches -------------------------------------------------------------------------


async def test_a_commit_wakes_only_the_watches_of_its_people(state: AppState) -> None:
    a, b = await world.person(state), await world.person(state)
    async with started(state) as broker:
        with broker.watch_changes({a.person_id}) as watch_a, broker.watch_changes({b.person_id}) as watch_b:
            async with state.db.session() as session:
                await write_settlement(session, b.person_id)
                await session.commit()
            await woken(watch_b)
            await not_woken(watch_a)
            # Following someone else from now on.
            watch_a.watch({b.person_id})
            async with state.db.session() as session:
                await write_settlement(session, b.person_id)
                await session.commit()
            await woken(watch_a)
            await woken(watch_b)
        assert broker.watch_count == 0


async def test_a_rollback_announces_nothing_and_a_savepoint_rolled_back_loses_nothing(
    state: AppState,
) -> None:
    a, b, sentinel = await world.person(state), await world.person(state), await world.person(state)
    heard = Heard()
    async with started(state) as broker:
        counting(broker, heard)
        with (
            broker.watch_changes({a.person_id}) as watch_a,
            broker.watch_changes({b.person_id}),
            broker.watch_changes({sentinel.person_id}) as watch_s,
        ):
            async with state.db.session() as session:
                await write_settlement(session, a.person_id)
                await session.rollback()
            reused = state.db.sessionmaker()
            await write_settlement(reused, a.person_id)
            await reused.close()  # ended without a commit: rolled back
            await write_settlement(reused, sentinel.person_id)  # the same session, a new transaction
            await reused.commit()
            await reused.close()
            await woken(watch_s)
            await not_woken(watch_a)
            assert [x.person_ids for x in heard.announcements] == [frozenset({sentinel.person_id})]

            # A savepoint released does not announce early, one rolled back keeps the outer writes'.
            async with state.db.session() as session:
                await write_settlement(session, a.person_id)
                async with session.begin_nested():
                    await write_settlement(session, sentinel.person_id)
                nested = await session.begin_nested()
                await write_settlement(session, b.person_id)
                await nested.rollback()
                assert len(heard.announcements) == 1
                await session.commit()
            await woken(watch_a)
            await woken(watch_s)
            [announced] = heard.announcements[1:]  # once, for the whole transaction
            # (b's id, from the savepoint rolled back, may be announced too: a spare wake-up, no document)
            assert announced.person_ids is not None
            assert {a.person_id, sentinel.person_id} <= announced.person_ids


async def test_a_notification_written_in_a_savepoint_is_announced_by_the_outer_commit(
    state: AppState,
) -> None:
    """The session's commit events also fire for savepoints: releasing one must not announce early (on
    SQLite the subscriber would read a row not committed yet, and drop it), rolling one back must not
    drop what the outer transaction wrote before it."""
    me = await world.person(state)
    async with started(state) as broker, broker.subscribe(me.person_id) as subscription:
        async with state.db.session() as session:
            async with session.begin_nested():
                kept = await notifications.notify(
                    session, me.person_id, "test.savepoint", "保存点", "提交后送达"
                )
            nested = await session.begin_nested()
            await notifications.notify(session, me.person_id, "test.savepoint", "回滚", "不会存在")
            await nested.rollback()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0):
                    await anext(subscription)  # nothing before the outer commit
        heard = await asyncio.wait_for(anext(subscription), WAIT)
        assert heard.notification_id == kept.id


async def test_one_announcement_per_transaction_however_many_entries(state: AppState) -> None:
    people = [await world.person(state) for _ in range(3)]
    heard = Heard()
    async with started(state) as broker:
        counting(broker, heard)
        with broker.watch_changes({people[-1].person_id}) as watch:
            async with state.db.session() as session:
                for _ in range(20):
                    for member in people:
                        await write_settlement(session, member.person_id)
                await session.commit()
            await woken(watch)
            async with state.db.session() as session:  # a second transaction: its own announcement
                await write_settlement(session, people[0].person_id)
                await session.commit()
            deadline = asyncio.get_running_loop().time() + WAIT
            while len(heard.announcements) < 2:  # on PostgreSQL through LISTEN, in commit order
                assert asyncio.get_running_loop().time() < deadline, heard.announcements
                await asyncio.sleep(0.01)
        assert [x.person_ids for x in heard.announcements] == [
            frozenset(m.person_id for m in people),
            frozenset({people[0].person_id}),
        ]


def test_announcements_fit_postgresql_payloads_and_a_flood_wakes_everyone() -> None:
    ids = frozenset(range(10_000_000, 10_003_000))  # 3,000 people of eight digits: four payloads
    payloads = ChangeAnnouncement(ids).payloads()
    assert 1 < len(payloads) <= CHANGE_PAYLOADS_MAX
    assert all(len(p.encode()) < 8000 for p in payloads)
    parsed = [ChangeAnnouncement.parse(p) for p in payloads]
    assert frozenset().union(*(p.person_ids or () for p in parsed if p is not None)) == ids
    flood = ChangeAnnouncement(frozenset(range(10_000_000, 10_010_000))).payloads()
    assert flood == ['{"c":"*"}']
    everyone = ChangeAnnouncement.parse(flood[0])
    assert everyone is not None and everyone.person_ids is None
    assert ChangeAnnouncement.parse('{"n":1,"p":2}') is None and ChangeAnnouncement.parse("nonsense") is None


async def test_many_people_in_one_transaction_are_announced_whole_or_as_everyone(state: AppState) -> None:
    """Through the database: on PostgreSQL a payload too long would fail the commit."""
    async with started(state) as broker:
        with broker.watch_changes({10_002_999}) as last, broker.watch_changes({424242}) as other:
            async with state.db.session() as session:
                stage_changes(session, range(10_000_000, 10_003_000))
                await session.commit()
            await woken(last)
            async with state.db.session() as session:
                stage_changes(session, range(10_000_000, 10_010_000))
                await session.commit()
            await woken(last)
            if state.db.engine.dialect.name == "postgresql":
                await woken(other)  # too many for NOTIFY payloads: everyone looks once


async def test_a_stopping_worker_ends_its_watches(state: AppState) -> None:
    async with started(state) as broker:
        with broker.watch_changes({1}) as watch:
            await broker.stop()
            with pytest.raises(BrokerClosed):
                await watch.wait(WAIT)


# --- PostgreSQL: another worker's broker ------------------------------------------------------------------


@postgres_only
async def test_a_commit_through_one_engine_wakes_watches_of_another_workers_broker(state: AppState) -> None:
    me = await world.person(state)
    other_engine = create_async_engine(state.db.engine.url)
    writer_engine = create_async_engine(state.db.engine.url)
    try:
        async with started(state, other_engine) as elsewhere, started(state) as here:
            with elsewhere.watch_changes({me.person_id}) as far, here.watch_changes({me.person_id}) as near:
                async with async_sessionmaker(writer_engine, expire_on_commit=False)() as session:
                    await write_settlement(session, me.person_id)
                    await session.commit()
                await woken(far)
                await woken(near)
    finally:
        await other_engine.dispose()
        await writer_engine.dispose()


@postgres_only
async def test_a_reconnected_listener_wakes_every_watch_once(state: AppState) -> None:
    """Announcements sent while its connection was down are lost: every stream looks once instead."""
    from tests.api.test_notifications import GatedBroker, _terminate

    listener = GatedBroker(state.db.engine, health_interval_s=0.5, retry_initial_s=0.05)
    await listener.start()
    try:
        with listener.watch_changes({987654321}) as watch:
            listener.gate.clear()
            pid = listener.backend_pid
            assert pid is not None
            await _terminate(state, pid)
            deadline = asyncio.get_running_loop().time() + WAIT
            while listener.listening.is_set():  # the drop is noticed
                assert asyncio.get_running_loop().time() < deadline, "the drop was never noticed"
                await asyncio.sleep(0.02)
            assert not await watch.wait(0)
            listener.gate.set()
            await woken(watch)
    finally:
        await listener.stop()


@pytest.mark.usefixtures("slow_poll")
async def test_a_closed_stream_leaves_no_watch_behind(
    state: AppState, live_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A phone that goes away (its socket closed while the stream waits) takes its watch with it."""
    brokers: list[Broker] = []
    original = Broker.watch_changes

    def watch_changes(self: Broker, persons: Any) -> Any:
        brokers.append(self)
        return original(self, persons)

    monkeypatch.setattr(Broker, "watch_changes", watch_changes)
    me = await world.person(state)
    assert me.token is not None
    async with streaming(live_server, me.token, "Settlement") as ws:
        assert (await event(ws, "Settlement"))["resync"]
        [server] = brokers
        assert server._watches.get(me.person_id)
        await seed_records(state, me.person_id, count=1)
        assert (await event(ws, "Settlement"))["documents"]
    deadline = asyncio.get_running_loop().time() + WAIT
    while server._watches.get(me.person_id):  # the server notices the closed socket
        assert asyncio.get_running_loop().time() < deadline, "the watch outlived its stream"
        await asyncio.sleep(0.02)


@postgres_only
async def test_a_writers_transaction_sends_no_notify(state: AppState) -> None:
    """A transaction that ran NOTIFY takes PostgreSQL's database-wide NOTIFY lock at commit and holds it
    through its WAL flush, so concurrent writers (every terminal push) would commit one at a time. The
    change announcement is sent after the commit instead, in a statement of its own."""
    me = await world.person(state)
    notified_in_writes: list[str] = []
    wrote: set[int] = set()  # connections (by id) whose open transaction wrote the change log

    def before(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "change_log" in statement and statement.lstrip().upper().startswith("INSERT"):
            wrote.add(id(conn))
        elif "pg_notify" in statement and id(conn) in wrote:
            notified_in_writes.append(statement)

    def ended(conn: Any) -> None:
        wrote.discard(id(conn))

    sync_engine = state.db.engine.sync_engine
    sa_event.listen(sync_engine, "before_cursor_execute", before)
    sa_event.listen(sync_engine, "commit", ended)
    sa_event.listen(sync_engine, "rollback", ended)
    try:
        async with started(state) as broker:
            with broker.watch_changes({me.person_id}) as watch:
                async with state.db.session() as session:
                    await write_settlement(session, me.person_id)
                    await session.commit()
                await woken(watch)  # still announced, on this worker's broker and every other
    finally:
        sa_event.remove(sync_engine, "before_cursor_execute", before)
        sa_event.remove(sync_engine, "commit", ended)
        sa_event.remove(sync_engine, "rollback", ended)
    assert notified_in_writes == []


@postgres_only
async def test_a_listener_that_connects_late_wakes_the_watches_made_before(state: AppState) -> None:
    """A worker whose database was not reachable at start-up serves streams before it LISTENs: what
    was committed meanwhile was announced to nobody, so its first connection wakes them all once."""
    from tests.api.test_notifications import GatedBroker

    listener = GatedBroker(state.db.engine, start_timeout_s=0, retry_initial_s=0.05)
    listener.gate.clear()
    await listener.start()  # gives up waiting: connects in the background
    try:
        assert not listener.listening.is_set()
        with listener.watch_changes({987654322}) as watch:
            listener.gate.set()
            await woken(watch)
    finally:
        await listener.stop()


async def test_a_failed_announcement_does_not_fail_the_commit(
    state: AppState, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Announcing runs after the database committed: an error there must not reach the writer, who
    would take a committed write for a failed one."""
    from api.notifications import broker as broker_module

    def broken(*_: Any) -> None:
        raise RuntimeError("announcer broken")

    me = await world.person(state)
    async with started(state) as broker:
        with broker.watch_changes({me.person_id}):
            monkeypatch.setattr(broker_module._Announcer, "add", broken)
            monkeypatch.setattr(Broker, "deliver_changes", broken)
            async with state.db.session() as session:
                written = await write_settlement(session, me.person_id)
                await session.commit()
    async with state.db.session() as session:
        assert await session.get(Settlement, written) is not None


async def test_a_commit_made_with_a_savepoint_still_open_announces_its_people(state: AppState) -> None:
    """`session.commit()` inside an open savepoint commits the whole transaction: announced once."""
    me, other = await world.person(state), await world.person(state)
    heard = Heard()
    async with started(state) as broker:
        counting(broker, heard)
        with broker.watch_changes({me.person_id}) as watch:
            async with state.db.session() as session:
                await write_settlement(session, other.person_id)
                await session.begin_nested()
                await write_settlement(session, me.person_id)
                await session.commit()  # releases the savepoint and commits the outer transaction
            await woken(watch)
        assert [x.person_ids for x in heard.announcements] == [frozenset({me.person_id, other.person_id})]
