"""Notifications (issue 11 item 7): kept per person, listed and marked read over GraphQL, and announced
live over graphql-transport-ws after (and only after) their transaction commits, across workers.

The trigger is the service itself (`service.notify` in a transaction this test commits or rolls back),
as the filings will call it. Live tests never wait for a fixed time: a subscriber is ready once it has
heard a probe notification, and from then on announcements reach it in commit order, so "nothing for
X" is shown by the next message being the one committed after X.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text, update
from sqlmodel import col
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from api.auth.models import AuthSession, Role
from api.notifications import broker as broker_module
from api.notifications import service
from api.notifications.broker import Announcement, Lagged, LocalBroker, PostgresBroker
from api.notifications.models import Notification
from api.replication.models import ChangeLogEntry
from api.settings import Settings
from api.state import AppState
from tests.api import familyworld as world
from tests.conftest import GraphQLClient, error_codes

PROTOCOL = "graphql-transport-ws"
WAIT = 15.0
"""Upper bound on waiting for one message; never an assertion on how long anything took."""

LIST = """query($first: Int, $after: String, $unread: Boolean! = false) {
  notifications(first: $first, after: $after, unreadOnly: $unread) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node { id kind title body data createdAt readAt linkId } } } }"""
COUNT = "{ unreadNotificationCount }"
MARK = "mutation($ids: [ID!]) { markNotificationsRead(ids: $ids) { markedCount unreadCount } }"
SUBSCRIBE = "subscription { notificationAdded { id kind title body data readAt } }"


async def notify(state: AppState, person_id: int, title: str = "备案状态变更", **data: Any) -> int:
    async with state.db.session() as session:
        row = await service.notify(
            session, person_id, "filing.status", title, "您的备案状态已更新。", {"filingId": "7", **data}
        )
        assert row.id is not None
        return row.id


async def resident(state: AppState) -> world.Member:
    return await world.person(state)


# --- kept, listed, marked read ------------------------------------------------------------------


async def test_list_count_and_mark_read(state: AppState, gql: GraphQLClient) -> None:
    me, other = await resident(state), await resident(state)
    ids = [await notify(state, me.person_id, f"通知{i}", to=f"s{i}") for i in range(5)]
    theirs = await notify(state, other.person_id)
    gql.token = me.token

    first = await gql(LIST, {"first": 2})
    page = first["data"]["notifications"]
    assert page["totalCount"] == 5 and page["pageInfo"]["hasNextPage"]
    assert [e["node"]["id"] for e in page["edges"]] == [str(ids[4]), str(ids[3])]  # newest first
    node = page["edges"][0]["node"]
    assert node["title"] == "通知4" and node["body"] == "您的备案状态已更新。"
    assert node["kind"] == "filing.status" and node["data"] == {"filingId": "7", "to": "s4"}
    assert node["readAt"] is None and node["linkId"] is None
    rest = await gql(LIST, {"first": 10, "after": page["pageInfo"]["endCursor"]})
    assert [e["node"]["id"] for e in rest["data"]["notifications"]["edges"]] == [str(i) for i in ids[2::-1]]
    assert (await gql(COUNT))["data"] == {"unreadNotificationCount": 5}

    # Mine are marked; someone else's id and an id that does not exist are passed over alike.
    marked = await gql(MARK, {"ids": [str(ids[0]), str(ids[1]), str(theirs), "999999999"]})
    assert marked["data"]["markNotificationsRead"] == {"markedCount": 2, "unreadCount": 3}
    again = await gql(MARK, {"ids": [str(ids[0])]})
    assert again["data"]["markNotificationsRead"] == {"markedCount": 0, "unreadCount": 3}
    unread = (await gql(LIST, {"unread": True}))["data"]["notifications"]
    assert unread["totalCount"] == 3
    assert [e["node"]["id"] for e in unread["edges"]] == [str(i) for i in ids[4:1:-1]]
    listed = (await gql(LIST, {"first": 10}))["data"]["notifications"]["edges"]
    assert [e["node"]["readAt"] is not None for e in listed] == [False, False, False, True, True]

    async with state.db.session() as session:  # the read-back a subscriber does names its person
        assert await service.get_own(session, me.person_id, theirs) is None
        assert (await service.get_own(session, other.person_id, theirs)) is not None

    # The other person's notification is untouched, and theirs to see; mine are not in their list.
    gql.token = other.token
    assert (await gql(COUNT))["data"] == {"unreadNotificationCount": 1}
    assert [e["node"]["id"] for e in (await gql(LIST))["data"]["notifications"]["edges"]] == [str(theirs)]

    # Without ids: all of mine.
    gql.token = me.token
    everything = await gql(MARK, {"ids": None})
    assert everything["data"]["markNotificationsRead"] == {"markedCount": 3, "unreadCount": 0}
    assert (await gql(MARK, {"ids": []}))["data"]["markNotificationsRead"]["markedCount"] == 0


async def test_writes_go_to_the_change_log_in_the_same_transaction(
    state: AppState, gql: GraphQLClient
) -> None:
    me = await resident(state)
    scope = f"person:{me.person_id}"

    async def entries() -> list[str]:
        async with state.db.session() as session:
            rows = await session.execute(
                select(col(ChangeLogEntry.entity_id)).where(
                    col(ChangeLogEntry.scope) == scope, col(ChangeLogEntry.entity) == "notification"
                )
            )
            return list(rows.scalars())

    kept = await notify(state, me.person_id)
    assert await entries() == [str(kept)]
    async with state.db.sessionmaker() as session:
        await service.notify(session, me.person_id, "filing.status", "不会保存", "回滚")
        await session.rollback()
    assert await entries() == [str(kept)]
    async with state.db.session() as session:
        count = await session.execute(
            select(func.count()).select_from(Notification).where(col(Notification.person_id) == me.person_id)
        )
        assert count.scalar_one() == 1
    gql.token = me.token
    await gql(MARK, {"ids": [str(kept)]})
    assert await entries() == [str(kept), str(kept)]  # marking read changes the replicated row


async def test_bad_input_and_callers(state: AppState, gql: GraphQLClient) -> None:
    me = await resident(state)
    await notify(state, me.person_id)
    gql.token = me.token
    for ids in (["abc"], ["0"], ["-1"], [str(2**63)], ["1"] * 101):
        body = await gql(MARK, {"ids": ids})
        assert error_codes(body) == ["BAD_USER_INPUT"], ids
        assert body["errors"][0]["extensions"]["field"] == "ids"
    unread_cursor = (await gql(LIST, {"first": 1, "unread": True}))["data"]["notifications"]["pageInfo"]
    wrong_list = await gql(LIST, {"after": unread_cursor["endCursor"]})  # from the unread list
    assert error_codes(wrong_list) == ["BAD_USER_INPUT"]
    assert error_codes(await gql(LIST, {"after": "garbage"})) == ["BAD_USER_INPUT"]
    assert error_codes(await gql(LIST, {"first": 101})) == ["BAD_USER_INPUT"]
    # Someone else's cursor does not page through my list either.
    other = await resident(state)
    await notify(state, other.person_id)
    await notify(state, other.person_id)
    gql.token = other.token
    theirs = (await gql(LIST, {"first": 1}))["data"]["notifications"]["pageInfo"]["endCursor"]
    gql.token = me.token
    assert error_codes(await gql(LIST, {"after": theirs})) == ["BAD_USER_INPUT"]

    # A subscription over plain HTTP is refused, not run like a query.
    over_http = await gql(SUBSCRIBE)
    assert gql.last is not None and gql.last.status_code == 400
    assert error_codes(over_http) == ["BAD_REQUEST"]

    gql.token = None
    for document in (LIST, COUNT, MARK):
        assert error_codes(await gql(document)) == ["UNAUTHENTICATED"]
    gql.token = await world.staff(state, Role.REVIEWER)
    for document in (LIST, COUNT, MARK):
        assert error_codes(await gql(document)) == ["FORBIDDEN"]


async def test_notify_refuses_what_no_resident_should_see(state: AppState) -> None:
    me = await resident(state)
    async with state.db.sessionmaker() as session:
        for kind, title, body, data in (
            ("", "标题", "正文", {}),
            ("filing.status", "", "正文", {}),
            ("filing.status", "标" * 65, "正文", {}),
            ("filing.status", "标题", " ", {}),
            ("filing.status", "标题", "正文", {"blob": "x" * 5000}),
        ):
            with pytest.raises(ValueError):
                await service.notify(session, me.person_id, kind, title, body, data)
        await session.rollback()


# --- live, one process ---------------------------------------------------------------------------


def _ws(url: str) -> str:
    return url.replace("http://", "ws://") + "/graphql"


@asynccontextmanager
async def subscribed(url: str, token: str, op_id: str = "n") -> AsyncIterator[ClientConnection]:
    async with connect(_ws(url), subprotocols=[PROTOCOL]) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {token}"}})
        )
        assert json.loads(await asyncio.wait_for(ws.recv(), WAIT)) == {"type": "connection_ack"}
        await ws.send(json.dumps({"id": op_id, "type": "subscribe", "payload": {"query": SUBSCRIBE}}))
        yield ws


async def receive(ws: ClientConnection, within: float = WAIT) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), within))
    return message


async def next_notification(ws: ClientConnection, skip: set[int]) -> dict[str, Any]:
    """The next notification that is not one of the probes in `skip` (those may still trail in)."""
    while True:
        message = await receive(ws)
        assert message["type"] == "next", message
        node: dict[str, Any] = message["payload"]["data"]["notificationAdded"]
        if int(node["id"]) not in skip:
            return node


async def until_heard(
    state: AppState, ws: ClientConnection, person_id: int, probes: set[int] | None = None
) -> set[int]:
    """Sends probe notifications until the subscriber hears one: then it is registered on its worker
    (and, on PostgreSQL, that worker LISTENs). Returns the probes' ids, added to `probes` (the earlier
    probes of other sockets of the same person, which this one may hear too)."""
    probes = set() if probes is None else probes
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        probes.add(await notify(state, person_id, "探测"))
        try:
            message = await receive(ws, within=0.5)
        except TimeoutError:
            continue
        assert message["type"] == "next", message
        assert int(message["payload"]["data"]["notificationAdded"]["id"]) in probes
        return probes
    raise AssertionError("the subscriber never heard a probe")


async def test_live_subscriber_hears_committed_not_rolled_back_nor_others(
    state: AppState, live_server: str
) -> None:
    me, other = await resident(state), await resident(state)
    assert me.token and other.token
    async with subscribed(live_server, me.token) as mine, subscribed(live_server, other.token) as theirs:
        my_probes = await until_heard(state, mine, me.person_id)
        their_probes = await until_heard(state, theirs, other.person_id)

        async with state.db.sessionmaker() as session:  # rolled back: must never be announced
            await service.notify(session, me.person_id, "filing.status", "回滚", "不应送达")
            await session.rollback()
        # A savepoint rolled back inside a transaction that commits.
        async with state.db.session() as session, session.begin_nested() as savepoint:
            await service.notify(session, me.person_id, "filing.status", "保存点回滚", "不应送达")
            await savepoint.rollback()
        for_them = await notify(state, other.person_id, "给别人")
        for_me = await notify(state, me.person_id, "已批准", to="approved")
        after_mine = await notify(state, other.person_id, "给别人2")

        heard = await next_notification(mine, my_probes)
        assert heard == {
            "id": str(for_me),
            "kind": "filing.status",
            "title": "已批准",
            "body": "您的备案状态已更新。",
            "data": {"filingId": "7", "to": "approved"},
            "readAt": None,
        }
        assert int((await next_notification(theirs, their_probes))["id"]) == for_them
        assert int((await next_notification(theirs, their_probes))["id"]) == after_mine  # not mine


async def test_subscription_refuses_without_a_valid_login(state: AppState, live_server: str) -> None:
    for payload in ({}, {"Authorization": "Bearer forged.token.here"}):
        async with connect(_ws(live_server), subprotocols=[PROTOCOL]) as ws:  # type: ignore[list-item]
            await ws.send(json.dumps({"type": "connection_init", "payload": payload}))
            with pytest.raises(ConnectionClosed) as closed:
                await receive(ws)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403

    # A reviewer has no resident's notifications to hear; a login revoked after connection_init
    # cannot subscribe. Both are refused before any stream begins (graphql-transport-ws `error`).
    reviewer = await world.staff(state, Role.REVIEWER)
    me = await resident(state)
    assert me.token
    async with subscribed(live_server, reviewer) as ws:
        message = await receive(ws)
        assert message["type"] == "error"
        assert [e["extensions"]["code"] for e in message["payload"]] == ["FORBIDDEN"]
    async with connect(_ws(live_server), subprotocols=[PROTOCOL]) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"Authorization": f"Bearer {me.token}"}})
        )
        assert (await receive(ws))["type"] == "connection_ack"
        await _revoke(state, me)
        await ws.send(json.dumps({"id": "n", "type": "subscribe", "payload": {"query": SUBSCRIBE}}))
        message = await receive(ws)
        assert message["type"] == "error"
        assert [e["extensions"]["code"] for e in message["payload"]] == ["UNAUTHENTICATED"]


async def _revoke(state: AppState, member: world.Member) -> None:
    """What a logout does to the login behind a token."""
    async with state.db.session() as session:
        await session.execute(
            update(AuthSession)
            .where(col(AuthSession.account_id) == member.account_id)
            .values(revoked_at=func.now(), revoked_reason="logout")
        )


async def test_a_logout_ends_a_live_subscription(state: AppState, live_server: str) -> None:
    me = await resident(state)
    assert me.token
    async with subscribed(live_server, me.token) as ws:
        probes = await until_heard(state, ws, me.person_id)
        await _revoke(state, me)
        await notify(state, me.person_id, "登出之后")
        while True:  # probes may trail in; then the end, not the notification
            message = await receive(ws)
            if message["type"] == "next" and "errors" not in message["payload"]:
                assert int(message["payload"]["data"]["notificationAdded"]["id"]) in probes
                continue
            break
        assert message["type"] == "next", message
        assert message["payload"]["data"] is None
        assert [e["extensions"]["code"] for e in message["payload"]["errors"]] == ["UNAUTHENTICATED"]
        assert (await receive(ws))["type"] == "complete"


# --- the broker itself ---------------------------------------------------------------------------


async def test_a_subscriber_that_falls_behind_is_ended_and_shutdown_ends_the_rest(tmp_path: Path) -> None:
    url = Settings(data_dir=tmp_path).resolved_database_url
    from sqlalchemy.engine import make_url

    local = LocalBroker(make_url(url))
    await local.start()
    try:
        async with local.subscribe(1) as slow, local.subscribe(2) as idle:
            for n in range(broker_module.QUEUE_SIZE + 5):
                local.deliver(Announcement(n + 1, 1))
            local.deliver(Announcement(10_000, 3))  # nobody's
            received = []
            with pytest.raises(Lagged):
                async for announcement in slow:
                    received.append(announcement.notification_id)
            assert received == list(range(1, broker_module.QUEUE_SIZE + 1))
            assert local.subscriber_count == 2
            await local.stop()
            assert [a async for a in idle] == []  # the worker stops: the subscription ends cleanly
        assert local.subscriber_count == 0
    finally:
        await local.stop()


# --- PostgreSQL: LISTEN/NOTIFY, reconnects, two workers ------------------------------------------

postgres_only = pytest.mark.skipif(
    not os.environ.get("YIBAO_TEST_POSTGRES_URL"),
    reason="LISTEN/NOTIFY across processes: PostgreSQL (SQLite is one process, covered above)",
)


class GatedBroker(PostgresBroker):
    """Reconnects only when the test opens the gate, so that a commit lands while it is disconnected."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.gate.set()

    async def _connect(self) -> Any:
        await self.gate.wait()
        return await super()._connect()


async def _terminate(state: AppState, pid: int) -> None:
    async with state.db.session() as session:
        await session.execute(select(func.pg_terminate_backend(pid)))


@postgres_only
async def test_the_listener_reconnects_and_catches_up_what_it_missed(state: AppState) -> None:
    me = await resident(state)
    listener = GatedBroker(state.db.engine, health_interval_s=0.5, retry_initial_s=0.05)
    await listener.start()
    try:
        assert listener.listening.is_set()
        async with listener.subscribe(me.person_id) as subscription:
            before = await notify(state, me.person_id, "断线之前")
            assert (await asyncio.wait_for(anext(subscription), WAIT)).notification_id == before

            listener.gate.clear()
            pid = listener.backend_pid
            assert pid is not None
            await _terminate(state, pid)
            deadline = time.monotonic() + WAIT
            while listener.listening.is_set():  # the drop is noticed (termination listener, or health check)
                assert time.monotonic() < deadline, "the drop was never noticed"
                await asyncio.sleep(0.02)
            during = await notify(state, me.person_id, "断线期间")  # its NOTIFY reaches no one
            listener.gate.set()
            await asyncio.wait_for(listener.listening.wait(), WAIT)
            assert listener.connections_made == 2
            after = await notify(state, me.person_id, "重连之后")
            heard = [(await asyncio.wait_for(anext(subscription), WAIT)).notification_id for _ in range(2)]
            assert heard == [during, after]  # caught up once, `before` not sent again
    finally:
        await listener.stop()


async def _listening_processes(state: AppState) -> set[int]:
    """The process ids of the brokers LISTENing on this database, other than this test process's."""
    async with state.db.session() as session:
        names = await session.execute(
            text(
                "SELECT application_name FROM pg_stat_activity "
                "WHERE datname = current_database() AND application_name LIKE 'yibao-notifications %'"
            )
        )
        pids = {int(name.rsplit(" ", 1)[1]) for name in names.scalars()}
    return pids - {os.getpid()}


@postgres_only
async def test_two_workers_a_commit_elsewhere_reaches_subscribers_on_both(
    state: AppState, two_workers: str
) -> None:
    me = await resident(state)
    assert me.token
    # Each socket on a new connection: the kernel spreads them over the two workers. Both workers
    # LISTEN (two notification connections on the database), so wherever a socket landed, the commit
    # made by this test's process (neither worker) must reach it through PostgreSQL.
    deadline = time.monotonic() + 60  # /healthz answered on one worker; the other may still be starting
    while len(await _listening_processes(state)) < 2:
        assert time.monotonic() < deadline, "both workers never listened"
        await asyncio.sleep(0.1)
    assert len(await _listening_processes(state)) == 2
    sockets = [subscribed(two_workers, me.token, op_id=f"s{i}") for i in range(6)]
    opened = [await s.__aenter__() for s in sockets]
    try:
        probes: set[int] = set()
        for ws in opened:
            await until_heard(state, ws, me.person_id, probes)
        decided = await notify(state, me.person_id, "审核通过", to="approved")
        for ws in opened:
            assert int((await next_notification(ws, probes))["id"]) == decided
    finally:
        for s in reversed(sockets):
            await s.__aexit__(None, None, None)
