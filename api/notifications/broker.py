"""Live fan-out of committed notifications to the subscribers of every worker process.

Announcing is transactional, so a notification is never announced for a transaction that rolled back:

- On PostgreSQL `announce()` runs `pg_notify` inside the writer's own transaction. PostgreSQL delivers
  it when, and only if, that transaction commits (and drops it with a rolled-back savepoint), to every
  connection that LISTENs on the channel in the same database: one dedicated asyncpg connection per
  worker (`PostgresBroker`), whichever worker (or other process) made the commit.
- On SQLite (the one-process deployment) there is no NOTIFY: `announce()` stages the announcement on
  the session, and an `after_commit` event of that session hands it to the in-process `LocalBroker`s
  of the same database file; a rollback discards it.

The payload is ids only (`{"n": notification id, "p": person id}`): a subscriber reads the row itself,
with its own person's id in the query, so what it sends is what the database holds, and a row that does
not exist (a savepoint rolled back on SQLite) is never sent.

Change-log announcements ride the same machinery on a second channel: `api.replication.changelog.record`
stages the people whose scopes a transaction's entries touch (`stage_changes`), and they are announced
once, after the transaction commits (`{"c": [person ids]}`, or `{"c": "*"}` when too many to list), never
per entry; on PostgreSQL in a NOTIFY of its own, outside the writer's transaction (`_Announcer`). A
`ChangeWatch` (a mobile replication stream) is woken when one of its people is named; it then reads the
change log itself, so a wake-up for a change it cannot see sends nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import weakref
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import event, select, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session, SessionTransaction
from sqlmodel import col

from api.dbtypes import utcnow
from api.notifications.models import Notification

log = logging.getLogger(__name__)

CHANNEL = "yibao_notifications"
CHANGES_CHANNEL = "yibao_changes"
"""Change-log announcements: a channel of their own, so notification subscribers never parse them."""
QUEUE_SIZE = 256
"""Announcements one subscriber may have waiting; past this it has fallen behind and is ended (Lagged)."""
_SEEN = 1024
"""Ids a subscriber remembers, so the catch-up after a reconnect never sends one twice."""


@dataclass(frozen=True, slots=True)
class Announcement:
    """A committed notification: which one, for whom. Never its content."""

    notification_id: int
    person_id: int

    def payload(self) -> str:
        return json.dumps({"n": self.notification_id, "p": self.person_id}, separators=(",", ":"))

    @classmethod
    def parse(cls, payload: str) -> Announcement | None:
        try:
            value = json.loads(payload)
            return cls(int(value["n"]), int(value["p"]))
        except (ValueError, TypeError, KeyError):
            return None


_EVERYONE = '{"c":"*"}'
_IDS_BYTES = 7900
"""Person ids one NOTIFY carries (PostgreSQL refuses payloads of 8000 bytes or more)."""
CHANGE_PAYLOADS_MAX = 8
"""NOTIFYs one transaction sends at most; past that (a bulk import) it wakes everyone once instead."""


@dataclass(frozen=True, slots=True)
class ChangeAnnouncement:
    """Committed change-log entries touched these people's scopes (None: anyone's). Never content."""

    person_ids: frozenset[int] | None

    def payloads(self) -> list[str]:
        """As few NOTIFY payloads as hold the ids, each under PostgreSQL's limit; or one "everyone"."""
        if self.person_ids is None:
            return [_EVERYONE]
        chunks: list[list[str]] = [[]]
        size = 0
        for person_id in sorted(self.person_ids):
            digits = str(person_id)
            if size + len(digits) + 1 > _IDS_BYTES:
                if len(chunks) == CHANGE_PAYLOADS_MAX:
                    return [_EVERYONE]
                chunks.append([])
                size = 0
            chunks[-1].append(digits)
            size += len(digits) + 1
        return ['{"c":[' + ",".join(chunk) + "]}" for chunk in chunks if chunk]

    @classmethod
    def parse(cls, payload: str) -> ChangeAnnouncement | None:
        try:
            value = json.loads(payload)["c"]
            if value == "*":
                return cls(None)
            if not isinstance(value, list):
                return None
            return cls(frozenset(int(v) for v in value))
        except (ValueError, TypeError, KeyError):
            return None


class Lagged(Exception):
    """The subscriber did not keep up; it is ended, and its client lists what it missed."""


class BrokerClosed(Exception):
    """The worker is shutting down."""


class Subscription:
    """One subscriber: a person's announcements, in commit order, on the subscriber's event loop."""

    def __init__(self, person_id: int) -> None:
        self.person_id = person_id
        self.started_at = utcnow()
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Announcement | Exception] = asyncio.Queue(QUEUE_SIZE + 1)
        self._seen: deque[int] = deque(maxlen=_SEEN)
        self._ended = False

    def offer(self, announcement: Announcement | Exception) -> None:
        """From any thread."""
        with contextlib.suppress(RuntimeError):  # the subscriber's loop is closed: nobody listens
            self._loop.call_soon_threadsafe(self._put, announcement)

    def _put(self, item: Announcement | Exception) -> None:
        if self._ended:
            return
        if isinstance(item, Announcement):
            if item.notification_id in self._seen:
                return
            self._seen.append(item.notification_id)
            if self._queue.qsize() >= QUEUE_SIZE:
                item = Lagged()
        if isinstance(item, Exception):
            self._ended = True
        self._queue.put_nowait(item)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Announcement:
        item = await self._queue.get()
        if isinstance(item, BrokerClosed):
            raise StopAsyncIteration
        if isinstance(item, Exception):
            raise item
        return item


class ChangeWatch:
    """A stream's wake-up: set when a committed change names one of its people, and until it is taken.

    Wake-ups coalesce (a flag, not a queue): however many commits land meanwhile, the stream reads the
    change log once. Made with `Broker.watch_changes`; `watch()` changes the people it follows."""

    def __init__(self, broker: Broker, persons: Collection[int]) -> None:
        self._broker = broker
        self._loop = asyncio.get_running_loop()
        self._woken = asyncio.Event()
        self._closed = False
        self.persons: frozenset[int] = frozenset(persons)

    def watch(self, persons: Collection[int]) -> None:
        """Follows these people from now on (a stream's visible set changed)."""
        self._broker._rewatch(self, frozenset(persons))

    def wake(self) -> None:
        """From any thread."""
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if here is self._loop:
            self._woken.set()
        else:
            with contextlib.suppress(RuntimeError):  # the watcher's loop is closed: nobody waits
                self._loop.call_soon_threadsafe(self._woken.set)

    def close(self) -> None:
        """From any thread: the worker is shutting down."""
        self._closed = True
        self.wake()

    async def wait(self, seconds: float) -> bool:
        """True when woken (and takes the wake-up), False after `seconds` without one.
        Raises BrokerClosed when the worker shuts down."""
        if not self._woken.is_set():
            try:
                async with asyncio.timeout(max(seconds, 0.0)):
                    await self._woken.wait()
            except TimeoutError:
                return False
        self._woken.clear()
        if self._closed:
            raise BrokerClosed()
        return True


class Broker(ABC):
    """Delivers announcements to this process's subscribers, by person. Subclasses receive them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # subscribers come and go on the server's loop, deliveries may not
        self._subscribers: dict[int, set[Subscription]] = {}
        self._watches: dict[int, set[ChangeWatch]] = {}
        self._all_watches: set[ChangeWatch] = set()

    @abstractmethod
    async def start(self) -> None: ...

    @abstractmethod
    async def stop(self) -> None: ...

    @contextlib.asynccontextmanager
    async def subscribe(self, person_id: int) -> AsyncIterator[Subscription]:
        subscription = Subscription(person_id)
        with self._lock:
            self._subscribers.setdefault(person_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            with self._lock:
                mine = self._subscribers.get(person_id)
                if mine is not None:
                    mine.discard(subscription)
                    if not mine:
                        del self._subscribers[person_id]

    def deliver(self, announcement: Announcement, *, created_before: datetime | None = None) -> None:
        """To the person's subscribers (with `created_before`: only those that started before then)."""
        with self._lock:
            targets = list(self._subscribers.get(announcement.person_id, ()))
        for subscription in targets:
            if created_before is None or subscription.started_at <= created_before:
                subscription.offer(announcement)

    @contextlib.contextmanager
    def watch_changes(self, persons: Iterable[int]) -> Iterator[ChangeWatch]:
        """A wake-up for committed changes in these people's scopes, for as long as the block runs."""
        watch = ChangeWatch(self, frozenset(persons))
        with self._lock:
            self._all_watches.add(watch)
            for person_id in watch.persons:
                self._watches.setdefault(person_id, set()).add(watch)
        try:
            yield watch
        finally:
            with self._lock:
                self._all_watches.discard(watch)
                self._unindex(watch)

    def _unindex(self, watch: ChangeWatch) -> None:
        for person_id in watch.persons:
            mine = self._watches.get(person_id)
            if mine is not None:
                mine.discard(watch)
                if not mine:
                    del self._watches[person_id]

    def _rewatch(self, watch: ChangeWatch, persons: frozenset[int]) -> None:
        with self._lock:
            if watch not in self._all_watches:
                watch.persons = persons
                return
            self._unindex(watch)
            watch.persons = persons
            for person_id in persons:
                self._watches.setdefault(person_id, set()).add(watch)

    def deliver_changes(self, announcement: ChangeAnnouncement) -> None:
        """Wakes the watches that follow one of the people named (all of them for "everyone")."""
        with self._lock:
            if announcement.person_ids is None:
                targets = set(self._all_watches)
            else:
                targets = set()
                for person_id in announcement.person_ids:
                    targets.update(self._watches.get(person_id, ()))
        for watch in targets:
            watch.wake()

    @property
    def watch_count(self) -> int:
        with self._lock:
            return len(self._all_watches)

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return sum(len(subs) for subs in self._subscribers.values())

    def subscribed_people(self) -> list[int]:
        with self._lock:
            return list(self._subscribers)

    def _close_all(self) -> None:
        with self._lock:
            everyone = [sub for subs in self._subscribers.values() for sub in subs]
            watches = list(self._all_watches)
        for subscription in everyone:
            subscription.offer(BrokerClosed())
        for watch in watches:
            watch.close()


# --- SQLite: one process ---------------------------------------------------------------------------

_local_lock = threading.Lock()
_local_brokers: dict[str, set[LocalBroker]] = {}
_PENDING = "yibao.notifications.pending"


def _database_key(url: URL) -> str:
    """One key per database file, however the URL spells its path."""
    database = url.database or ""
    if url.get_backend_name() == "sqlite" and database and database != ":memory:":
        database = os.path.realpath(database)
    return f"{url.get_backend_name()}:{database}"


class LocalBroker(Broker):
    """In-process fan-out, for SQLite: every started LocalBroker of one database file hears the commits
    made on that file by any session of this process (several apps in one process included)."""

    def __init__(self, url: URL) -> None:
        super().__init__()
        self.key = _database_key(url)

    async def start(self) -> None:
        with _local_lock:
            _local_brokers.setdefault(self.key, set()).add(self)

    async def stop(self) -> None:
        with _local_lock:
            brokers = _local_brokers.get(self.key)
            if brokers is not None:
                brokers.discard(self)
                if not brokers:
                    del _local_brokers[self.key]
        self._close_all()


def _publish_local(key: str, announcements: Sequence[Announcement]) -> None:
    with _local_lock:
        brokers = list(_local_brokers.get(key, ()))
    for broker in brokers:
        for announcement in announcements:
            broker.deliver(announcement)


# The session's commit and rollback events also fire for savepoints (begin_nested): only the outer
# transaction's end counts. A savepoint rolled back keeps the others' announcements (one of a row that
# was rolled back with it is read by its subscriber, not found, and not sent).


def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint released: announced when (and if) the outer transaction commits
    pending: list[tuple[str, Announcement]] = session.info.pop(_PENDING, [])
    by_key: dict[str, list[Announcement]] = {}
    for key, announcement in pending:
        by_key.setdefault(key, []).append(announcement)
    for key, announcements in by_key.items():
        _publish_local(key, announcements)


def _after_end(session: Session, transaction: SessionTransaction) -> None:
    """A rollback, or a close without commit (after a commit the announcements were taken already)."""
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


def _stage_local(session: AsyncSession, announcement: Announcement) -> None:
    sync = session.sync_session
    if not event.contains(sync, "after_commit", _after_commit):
        event.listen(sync, "after_commit", _after_commit)
        event.listen(sync, "after_transaction_end", _after_end)
    key = _database_key(session.get_bind().engine.url)
    sync.info.setdefault(_PENDING, []).append((key, announcement))


_CHANGED = "yibao.changes.pending"


@dataclass(slots=True)
class _StagedChanges:
    key: str
    announcer: _Announcer | None
    """PostgreSQL: who sends the NOTIFY after the commit (None on SQLite: the local brokers)."""
    person_ids: set[int]


class _Announcer:
    """Sends one engine's change announcements after their transactions commit, as NOTIFYs of their own.

    Not in the writer's transaction: a transaction that ran NOTIFY takes PostgreSQL's database-wide
    NOTIFY lock at commit and holds it through its WAL flush, so every writer (each terminal push)
    would commit one at a time. After the commit, the announcement also never reaches a listener
    before the change is visible. Commits that land while a send is in flight are merged into the next
    one (a burst of pushes costs a few NOTIFYs, not one each). A send that fails, or a process that
    ends before it ran, loses a wake-up: the streams' safety-net poll finds the change."""

    def __init__(self, engine: Engine) -> None:
        self._engine = weakref.ref(engine)  # held weakly: the announcers' map must not keep it alive
        self._pending: set[int] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, person_ids: Collection[int]) -> None:
        """On the engine's event loop (a session's after_commit runs there)."""
        self._pending.update(person_ids)
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._send(), name="change-announcer")

    async def _send(self) -> None:
        while self._pending:
            ids, self._pending = frozenset(self._pending), set()
            engine = self._engine()
            if engine is None:
                return  # the engine is gone, and its streams with it
            try:
                async with AsyncEngine(engine).connect() as connection:
                    for payload in ChangeAnnouncement(ids).payloads():
                        await connection.execute(
                            text("SELECT pg_notify(:channel, :payload)"),
                            {"channel": CHANGES_CHANNEL, "payload": payload},
                        )
                    await connection.commit()
            except Exception:  # the database is unreachable: the safety-net poll covers it
                log.warning("change announcement of %d people not sent", len(ids), exc_info=True)


_announcers: weakref.WeakKeyDictionary[Engine, _Announcer] = weakref.WeakKeyDictionary()


def _announcer(engine: Engine) -> _Announcer:
    found = _announcers.get(engine)
    if found is None:
        found = _announcers[engine] = _Announcer(engine)
    return found


def stage_changes(session: AsyncSession, person_ids: Iterable[int]) -> None:
    """Adds people whose scopes the session's transaction changed; the transaction announces them all
    once, after it commits: one NOTIFY (a few for thousands of people) on PostgreSQL, sent outside the
    transaction (`_Announcer`); the local brokers on SQLite. A rollback (or a close without commit)
    drops them. Costs a set update per call: `changelog.record` calls it."""
    sync = session.sync_session
    staged: _StagedChanges | None = sync.info.get(_CHANGED)
    if staged is None:
        if not event.contains(sync, "after_commit", _changes_after_commit):
            event.listen(sync, "after_commit", _changes_after_commit)
            event.listen(sync, "after_transaction_end", _changes_after_end)
        engine = session.get_bind().engine
        announcer = _announcer(engine) if engine.dialect.name == "postgresql" else None
        staged = _StagedChanges(_database_key(engine.url), announcer, set())
        sync.info[_CHANGED] = staged
    staged.person_ids.update(person_ids)


# As for notifications, savepoints are left alone: the ids are announced by the outer transaction's
# commit, and a savepoint rolled back keeps the others' (a spare wake-up reads the log and finds
# nothing, a lost one would wait for the safety-net poll).


def _changes_after_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return
    staged: _StagedChanges | None = session.info.pop(_CHANGED, None)
    if staged is None or not staged.person_ids:
        return
    try:  # the commit has happened: a failure to announce must not look like a failed commit
        if staged.announcer is not None:
            staged.announcer.add(staged.person_ids)
            return
        with _local_lock:
            brokers = list(_local_brokers.get(staged.key, ()))
        announcement = ChangeAnnouncement(frozenset(staged.person_ids))
        for broker in brokers:
            broker.deliver_changes(announcement)
    except Exception:
        log.exception("change announcement of %d people not made", len(staged.person_ids))


def _changes_after_end(session: Session, transaction: SessionTransaction) -> None:
    """A rollback, or a close without commit (after a commit the ids were taken already)."""
    if transaction.parent is None:
        session.info.pop(_CHANGED, None)


async def announce(session: AsyncSession, announcement: Announcement) -> None:
    """Announces a notification written in `session`'s transaction, to be heard once it commits."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_notify(:channel, :payload)"),
            {"channel": CHANNEL, "payload": announcement.payload()},
        )
    else:
        _stage_local(session, announcement)


# --- PostgreSQL: many workers ----------------------------------------------------------------------


class PostgresBroker(Broker):
    """LISTENs on one dedicated asyncpg connection per worker and hands what it hears to subscribers.

    The connection is watched (asyncpg's termination listener, and a `SELECT 1` every
    `health_interval_s` for a connection that died silently) and made again with backoff when it drops.
    NOTIFYs sent while it was down are not queued for it: after reconnecting it reads the notifications
    of its subscribers created since shortly before the drop (`catch_up_slack`) and delivers those,
    each subscriber skipping ids it already has, and wakes every change watch once, at every connection
    (change announcements are not listed anywhere; a first connection made late has streams too). The
    list stays the record; live delivery is a hint.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        health_interval_s: float = 10.0,
        retry_initial_s: float = 0.1,
        retry_max_s: float = 5.0,
        start_timeout_s: float = 10.0,
        catch_up_slack: timedelta = timedelta(seconds=30),
    ) -> None:
        super().__init__()
        self._engine = engine
        self._health_interval_s = health_interval_s
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._start_timeout_s = start_timeout_s
        self._catch_up_slack = catch_up_slack
        self._task: asyncio.Task[None] | None = None
        self._connection: Any = None
        self.listening = asyncio.Event()
        """Set while the LISTEN connection is up (tests and /healthz-style checks may wait on it)."""
        self.connections_made = 0

    async def start(self) -> None:
        if self._task is not None:
            return
        self.listening = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="notification-listener")
        try:
            await asyncio.wait_for(self.listening.wait(), self._start_timeout_s)
        except TimeoutError:
            log.warning("notification listener not connected yet; retrying in the background")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop_connection()
        self._close_all()

    @property
    def backend_pid(self) -> int | None:
        """The LISTEN connection's server process id, while connected."""
        connection = self._connection
        return None if connection is None or connection.is_closed() else int(connection.get_server_pid())

    async def _connect(self) -> Any:
        import asyncpg

        dialect: Any = self._engine.dialect
        args, params = dialect.create_connect_args(self._engine.url)
        for option in ("prepared_statement_cache_size", "prepared_statement_name_func", "async_creator_fn"):
            params.pop(option, None)
        settings = dict(params.pop("server_settings", None) or {})
        settings.setdefault("application_name", f"yibao-notifications {os.getpid()}")
        return await asyncpg.connect(*args, server_settings=settings, timeout=10, **params)

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        self.listening.clear()
        if connection is not None and not connection.is_closed():
            try:
                await asyncio.wait_for(connection.close(), 2)
            except Exception:  # a dead connection may not close cleanly: drop it
                connection.terminate()

    def _on_notify(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        announcement = Announcement.parse(payload)
        if announcement is None:
            log.warning("ignoring a malformed notification payload on %s", channel)
            return
        self.deliver(announcement)

    def _on_changes(self, connection: Any, pid: int, channel: str, payload: str) -> None:
        announcement = ChangeAnnouncement.parse(payload)
        if announcement is None:
            log.warning("ignoring a malformed change announcement on %s", channel)
            return
        self.deliver_changes(announcement)

    async def _run(self) -> None:
        delay = self._retry_initial_s
        lost_at: datetime | None = None
        while True:
            try:
                connection = await self._connect()
            except Exception as exc:  # the server is down, refuses or times out: retry
                log.warning("notification listener cannot connect (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
                continue
            closed = asyncio.Event()
            connection.add_termination_listener(lambda _connection, closed=closed: closed.set())
            try:
                await connection.add_listener(CHANNEL, self._on_notify)
                await connection.add_listener(CHANGES_CHANNEL, self._on_changes)
            except Exception as exc:
                log.warning("notification listener could not LISTEN (%s); retrying", exc)
                connection.terminate()
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max_s)
                continue
            self._connection = connection
            self.connections_made += 1
            self.listening.set()
            delay = self._retry_initial_s
            # Change announcements made before this LISTEN (while it was down, or before a late first
            # connection) are not listed anywhere: every stream looks once.
            self.deliver_changes(ChangeAnnouncement(None))
            if lost_at is not None:
                log.info("notification listener reconnected")
                await self._catch_up(lost_at - self._catch_up_slack)
            await self._watch(connection, closed)
            lost_at = utcnow()
            log.warning("notification listener lost its connection; reconnecting")
            await self._drop_connection()

    async def _watch(self, connection: Any, closed: asyncio.Event) -> None:
        """Returns when the connection is gone."""
        while not closed.is_set():
            try:
                await asyncio.wait_for(closed.wait(), self._health_interval_s)
            except TimeoutError:
                try:
                    await asyncio.wait_for(connection.fetchval("SELECT 1"), 5)
                except Exception:
                    return

    async def _catch_up(self, since: datetime) -> None:
        people = self.subscribed_people()
        try:
            async with self._engine.connect() as conn:
                for start in range(0, len(people), 1000):
                    rows = await conn.execute(
                        select(
                            col(Notification.id), col(Notification.person_id), col(Notification.created_at)
                        )
                        .where(
                            col(Notification.person_id).in_(people[start : start + 1000]),
                            col(Notification.created_at) >= since,
                        )
                        .order_by(col(Notification.id))
                    )
                    for notification_id, person_id, created_at in rows:
                        assert notification_id is not None
                        # Only to subscribers that could have heard it live (a margin for clocks).
                        self.deliver(
                            Announcement(int(notification_id), int(person_id)),
                            created_before=created_at + self._catch_up_slack,
                        )
        except Exception:
            log.exception("notification catch-up after a reconnect failed")


def build_broker(engine: AsyncEngine) -> Broker:
    if engine.dialect.name == "postgresql":
        return PostgresBroker(engine)
    return LocalBroker(engine.url)
