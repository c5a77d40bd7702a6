"""Pull, stream and push for the mini-program's replica (RxDB's GraphQL replication). No GraphQL here.

Pull. One checkpoint per collection, opaque to the phone: an HMAC-signed cursor bound to the viewer's
account and the collection, naming the database's log epoch, with
- `seq`: every change-log entry up to here (in the viewer's person scopes) has been sent;
- `held`: the people whose rows the phone holds in this collection (the visible set it was sent);
- `jobs`: pending per-person work, paged like a snapshot: `a` (send the person's rows, newly visible or
  a first pull) and `d` (send the person's rows as `_deleted`, no longer visible), each with the last
  row id sent.
Every pull reads the viewer's links from the database and compares the visible set with `held`: a
person who left it gets a `d` job, one who joined an `a` job. Jobs are served before deltas; deltas are
read from the change log strictly below the committed watermark (api.replication.changelog), so a
transaction that commits late is numbered late and never skipped. The first pull (no checkpoint) is an
`a` job for everyone visible, taken against the watermark fixed at that pull: any change committed
after it has a higher seq and follows as a delta (a row changed meanwhile is sent twice, never missed).

A page holds exactly `limit` documents while more remain (RxDB stops at the first short page), one per
document id (the latest state wins).

Stream. A subscription reads the log when a committed change names one of its visible people (the
change log's wake-up, api.notifications.broker.ChangeWatch, from any worker), and every STREAM_POLL_S
as a safety net for a lost wake-up, and emits the changes in the viewer's scopes as documents with a
checkpoint; it emits `resync` first (the phone pulls
from its own checkpoint, which covers what happened before the stream began), whenever the visible set
changes, when more changed at once than one event carries, and when the log was compacted past it.

Push. Filing drafts (create offline with the client's UUID, edit while a draft, discard) and
notification read marks. The server's rules decide; anything else returns the master document as a
conflict and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.auth.service import Viewer
from api.dbtypes import utcnow
from api.errors import BadUserInput, Conflict, NotFound
from api.family.models import FamilyLink, LinkStatus
from api.filings import service as filings
from api.filings.models import Filing, FilingStatus
from api.notifications import service as notifications
from api.notifications.broker import BrokerClosed, ChangeWatch
from api.replication import changelog
from api.replication.mobile.documents import (
    COLLECTIONS,
    Collection,
    Ctx,
    FilingCollection,
    Links,
    NotificationCollection,
    links_of,
    tombstone,
)
from api.replication.models import ChangeLogEntry, ReplicationState
from api.state import AppState

MAX_LIMIT = 500
MAX_PUSH_ROWS = 100
STREAM_POLL_S = 20.0
"""How often a stream looks at the change log when nothing woke it: only a safety net, since a commit
that touches the stream's people wakes it at once (a wake-up lost with a dropped LISTEN connection is
made up by a wake of everyone on reconnect; this covers whatever else may go missing)."""
STREAM_LOGIN_CHECK_S = 30.0
"""How often an idle stream checks that its login still holds (before any event it always does)."""
STREAM_MAX_CHANGES = 200
"""Change-log entries one stream event carries; more at once and the phone is told to pull (resync)."""
_VERSION = 1

Document = dict[str, Any]


def person_of(viewer: Viewer) -> int:
    if viewer.person_id is None:
        raise NotFound("账号尚未绑定参保人，请先完成实名认证")
    return viewer.person_id


def collection(name: str) -> Collection:
    return COLLECTIONS[name]


# ------------------------------------------------------------------------------------- checkpoint


@dataclass
class Checkpoint:
    epoch: str
    seq: int
    held: set[int] = field(default_factory=set)
    jobs: list[list[Any]] = field(default_factory=list)
    """[op ("a" | "d"), person id, last row id sent]."""

    def to_key(self) -> list[Any]:
        return [_VERSION, self.epoch, self.seq, sorted(self.held), self.jobs]

    @classmethod
    def from_key(cls, key: list[Any]) -> Checkpoint:
        version, epoch, seq, held, jobs = key
        if not (
            version == _VERSION
            and isinstance(epoch, str)
            and _is_int(seq)
            and isinstance(held, list)
            and all(_is_int(p) for p in held)
            and isinstance(jobs, list)
            and all(
                isinstance(j, list) and len(j) == 3 and j[0] in ("a", "d") and _is_int(j[1]) and _is_int(j[2])
                for j in jobs
            )
        ):
            raise ValueError("not a checkpoint")
        return cls(epoch, seq, set(held), jobs)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _cursor_scope(viewer: Viewer, coll: Collection) -> str:
    return f"mobile:{coll.name}:{viewer.account_id}"


def encode(state: AppState, viewer: Viewer, coll: Collection, checkpoint: Checkpoint) -> str:
    return state.cursors.encode(_cursor_scope(viewer, coll), checkpoint.to_key())


def decode(state: AppState, viewer: Viewer, coll: Collection, token: str) -> Checkpoint:
    """Signed by this server for this account and collection, or BAD_USER_INPUT on `checkpoint`."""
    if not isinstance(token, str) or len(token) > 1024:
        raise BadUserInput("同步检查点无效", field="checkpoint")
    key = state.cursors.decode(_cursor_scope(viewer, coll), token, field="checkpoint")
    try:
        return Checkpoint.from_key(key)
    except (ValueError, TypeError):
        raise BadUserInput("同步检查点无效", field="checkpoint") from None


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise BadUserInput(f"每次同步数量须在 1 到 {MAX_LIMIT} 之间", field="limit")


def _reconcile(checkpoint: Checkpoint, visible: frozenset[int]) -> None:
    """Jobs for the people who left or joined the visible set since the checkpoint was given."""
    for person in sorted(checkpoint.held - visible):
        checkpoint.jobs = [j for j in checkpoint.jobs if j[1] != person]
        checkpoint.jobs.append(["d", person, 0])
        checkpoint.held.discard(person)
    for person in sorted(visible - checkpoint.held):
        checkpoint.jobs.append(["a", person, 0])
        checkpoint.held.add(person)


class _Page:
    """One answer's documents; those of people not visible to the viewer go out as bare tombstones."""

    def __init__(self, limit: int, ctx: Ctx) -> None:
        self.limit = limit
        self.ctx = ctx
        self.now = utcnow()
        self.documents: list[Document] = []
        self._index: dict[str, int] = {}

    @property
    def room(self) -> int:
        return self.limit - len(self.documents)

    def add(self, document: Document) -> None:
        if document["deleted"] and int(document["person_id"]) not in self.ctx.persons:
            document = tombstone(document, self.now)
        key = document["id"]
        if key in self._index:
            self.documents[self._index[key]] = document
        else:
            self._index[key] = len(self.documents)
            self.documents.append(document)


# -------------------------------------------------------------------------------------------- pull


async def pull(
    session: AsyncSession, state: AppState, viewer: Viewer, coll: Collection, token: str | None, limit: int
) -> tuple[list[Document], str]:
    check_limit(limit)
    me = person_of(viewer)
    current = decode(state, viewer, coll, token) if token is not None else None
    log, mark = await _watermark(session)
    visible = coll.persons(await links_of(session, me) if coll.shared else Links(me))
    if current is None:
        current = Checkpoint(log.epoch, mark)
    elif current.epoch != log.epoch or current.seq > mark:
        # Another database's checkpoint (a restored backup, a reset pilot): its ids mean nothing here.
        raise BadUserInput("同步检查点已失效，请清除本机数据后重新同步", field="checkpoint")
    elif current.seq < log.compacted_below:
        # The entries after it were pruned: everyone's rows again, from a fresh watermark.
        held = current.held
        current = Checkpoint(log.epoch, mark, set(), [["d", p, 0] for p in sorted(held - visible)])
    _reconcile(current, visible)
    ctx = Ctx(state, me, visible)
    page = _Page(limit, ctx)
    await _jobs(session, coll, ctx, current, page)
    if not current.jobs:
        await _deltas(session, coll, ctx, current, mark, page)
    await session.commit()
    return page.documents, encode(state, viewer, coll, current)


@dataclass(frozen=True)
class _Log:
    epoch: str
    compacted_below: int


async def _watermark(session: AsyncSession) -> tuple[_Log, int]:
    """The log's epoch, retention cut and committed watermark, numbering what is pending first. The
    state row and the look for unnumbered entries are one statement: an empty pull is a few round
    trips, and the sequencer runs only when something waits for a number."""
    pending = (
        select(col(ChangeLogEntry.id)).where(col(ChangeLogEntry.seq).is_(None)).limit(1).scalar_subquery()
    )
    row = (
        await session.execute(
            select(
                col(ReplicationState.epoch),
                col(ReplicationState.last_seq),
                col(ReplicationState.compacted_below),
                pending,
            ).where(col(ReplicationState.id) == 1)
        )
    ).one_or_none()
    if row is None:
        raise RuntimeError("replication_state is missing: run the migrations")
    epoch, mark, compacted, waiting = row
    if waiting is not None:
        mark = await changelog.sequence(session)
    return _Log(str(epoch), int(compacted)), int(mark)


async def _jobs(session: AsyncSession, coll: Collection, ctx: Ctx, current: Checkpoint, page: _Page) -> None:
    while current.jobs and page.room > 0:
        job = current.jobs[0]
        room = page.room
        rows = await coll.snapshot(session, ctx, int(job[1]), int(job[2]), room + 1)
        for row_id, document in rows[:room]:
            page.add(document)
            job[2] = row_id
        if len(rows) > room:
            return
        current.jobs.pop(0)


async def _documents(
    session: AsyncSession, coll: Collection, ctx: Ctx, entries: Sequence[changelog.LoggedChange]
) -> list[Document]:
    """The current documents of these entries (this collection's entities only), in entry order."""
    wanted: dict[str, list[int]] = {}
    for entry in entries:
        if entry.entity in coll.entities and entry.entity_id.isdigit():
            wanted.setdefault(entry.entity, []).append(int(entry.entity_id))
    found = {
        entity: await coll.by_ids(session, ctx, entity, sorted(set(ids))) for entity, ids in wanted.items()
    }
    documents: list[Document] = []
    for entry in entries:
        if entry.entity_id.isdigit():  # rows are never deleted: a missing one was rolled back
            documents.extend(found.get(entry.entity, {}).get(int(entry.entity_id), []))
    return documents


async def _deltas(
    session: AsyncSession, coll: Collection, ctx: Ctx, current: Checkpoint, mark: int, page: _Page
) -> None:
    if current.seq >= mark:
        return  # nothing numbered since: the common empty pull reads no log at all
    scopes = [changelog.person_scope(p) for p in sorted(current.held)]
    while page.room > 0:
        room = page.room
        entries = await changelog.read(session, scopes, current.seq, mark, room + 1)
        taken = entries[:room]
        for document in await _documents(session, coll, ctx, taken):
            page.add(document)
        if taken:
            current.seq = taken[-1].seq
        if len(entries) <= room:
            current.seq = max(current.seq, mark)
            return


# ------------------------------------------------------------------------------------------ stream

RESYNC: dict[str, Any] = {"documents": [], "checkpoint": None, "resync": True}


async def stream(
    state: AppState,
    viewer: Viewer,
    coll: Collection,
    still_valid: Callable[[], Awaitable[Any]],
    *,
    poll_s: float | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Events `{documents, checkpoint, resync}` for the viewer's replica of `coll`, until cancelled.
    `still_valid` is awaited before each event, and every STREAM_LOGIN_CHECK_S while idle (it
    raises when the login has ended). `poll_s` (default STREAM_POLL_S) is the safety-net poll."""
    me = person_of(viewer)
    sessions = state.db.sessionmaker
    poll = STREAM_POLL_S if poll_s is None else poll_s

    async def look() -> tuple[str, int, int, frozenset[int]]:
        async with sessions() as session:
            log, mark = await _watermark(session)
            visible = coll.persons(await links_of(session, me) if coll.shared else Links(me))
            await session.commit()
            return log.epoch, mark, log.compacted_below, visible

    # Watching before the first look: a commit after it is either seen by that look or wakes the stream.
    with state.broker.watch_changes({me}) as watch:
        epoch, position, _, visible = await look()
        woken = _follow(watch, me, visible)
        checked = time.monotonic()
        next_poll = checked + poll
        yield RESYNC
        while True:
            if not woken:
                now = time.monotonic()
                try:
                    woken = await watch.wait(min(next_poll, checked + STREAM_LOGIN_CHECK_S) - now)
                except BrokerClosed:
                    return  # the worker is shutting down
            if time.monotonic() - checked >= STREAM_LOGIN_CHECK_S:
                await still_valid()  # an idle stream of a login that ended ends too
                checked = time.monotonic()
            if not woken and time.monotonic() < next_poll:
                continue  # only the login check was due
            woken = False
            next_poll = time.monotonic() + poll
            now_epoch, mark, compacted, now_visible = await look()
            if now_visible != visible or now_epoch != epoch or position < compacted:
                woken = _follow(watch, me, now_visible)
                epoch, position, visible = now_epoch, mark, now_visible
                await still_valid()
                yield RESYNC
                continue
            if mark == position:
                continue  # woken for a change of someone else's it follows, or one not numbered yet
            async with sessions() as session:
                scopes = [changelog.person_scope(p) for p in sorted(visible)]
                entries = await changelog.read(session, scopes, position, mark, STREAM_MAX_CHANGES + 1)
                if len(entries) > STREAM_MAX_CHANGES:
                    documents = None
                else:
                    ctx = Ctx(state, me, visible)
                    page = _Page(STREAM_MAX_CHANGES, ctx)
                    for document in await _documents(session, coll, ctx, entries):
                        page.add(document)
                    documents = page.documents
                await session.commit()
            position = mark
            if documents is None or documents:
                await still_valid()  # checked before anything is sent
                checked = time.monotonic()
            if documents is None:
                yield RESYNC
            elif documents:
                checkpoint = encode(state, viewer, coll, Checkpoint(epoch, mark, set(visible)))
                yield {"documents": documents, "checkpoint": checkpoint, "resync": False}


def _follow(watch: ChangeWatch, me: int, visible: frozenset[int]) -> bool:
    """Makes the wake-up follow the viewer and the visible people; True if it follows someone new,
    whose commits between the look that found them and now woke nobody: the stream looks once more."""
    wanted = visible | {me}
    added = bool(wanted - watch.persons)
    if wanted != watch.persons:
        watch.watch(wanted)
    return added


# -------------------------------------------------------------------------------------------- push


def _decimal_id(value: str) -> bool:
    """A stored id in ASCII digits: `str.isdigit` also takes "²" (which int() refuses) and "١"."""
    return value.isascii() and value.isdigit() and len(value) <= 18


def check_rows(rows: Sequence[Any]) -> None:
    if len(rows) > MAX_PUSH_ROWS:
        raise BadUserInput(f"每次最多推送 {MAX_PUSH_ROWS} 条", field="rows")


def _client_id(value: str, index: int) -> str:
    try:
        parsed = uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        raise BadUserInput("草稿编号须为UUID", field=f"rows[{index}].newDocumentState.id") from None
    if len(value) != 36 or str(parsed) != value.lower():
        raise BadUserInput("草稿编号须为UUID（8-4-4-4-12格式）", field=f"rows[{index}].newDocumentState.id")
    return str(parsed)


async def _link_to(session: AsyncSession, me: int, person: int) -> int | None:
    found = await session.execute(
        select(col(FamilyLink.id))
        .where(
            col(FamilyLink.holder_person_id) == me,
            col(FamilyLink.relative_person_id) == person,
            col(FamilyLink.status) == LinkStatus.ACTIVE.value,
        )
        .order_by(col(FamilyLink.id))
        .limit(1)
    )
    return found.scalar_one_or_none()


_FILING_COMPARED = ("person_id", "kind", "status", "fields", "deleted")


def _same(new: Mapping[str, Any], master: Mapping[str, Any], names: Sequence[str]) -> bool:
    return all(new.get(name) == master.get(name) for name in names)


async def push_filings(
    session: AsyncSession,
    state: AppState,
    viewer: Viewer,
    rows: Sequence[tuple[Mapping[str, Any] | None, Mapping[str, Any]]],
    now: dt.datetime | None = None,
) -> list[Document]:
    """Applies (assumed master, new state) rows in order; returns the master documents in conflict.

    Rules: a document the server does not have yet is a new draft (created through the filings
    service with its client UUID, for the viewer or, through a link with file_on_behalf, a relative);
    one the server has may change only while it is a draft and only if the assumed master's version is
    the server's: its fields edited, or `_deleted` (the draft is withdrawn, so it leaves every replica).
    Anything else (a stale version, a filing no longer a draft, another kind, person or status) is a
    conflict: the master is returned and nothing of that row is written."""
    check_rows(rows)
    me = person_of(viewer)
    coll = collection("Filing")
    assert isinstance(coll, FilingCollection)
    conflicts: list[Document] = []
    for index, (assumed, new) in enumerate(rows):
        client_id = _client_id(str(new.get("id")), index)
        visible = coll.persons(await links_of(session, me))
        ctx = Ctx(state, me, visible)
        master = (
            await session.execute(
                select(Filing)
                .where(col(Filing.client_id) == client_id)
                .execution_options(populate_existing=True)
            )
        ).scalar_one_or_none()
        if master is None:
            await _create_draft(session, state, viewer, me, new, index, client_id, now)
            continue
        if master.person_id not in visible:
            await session.rollback()
            raise NotFound("未找到该申请")  # someone else's, or a relative's no longer shared: not confirmed
        document = coll.doc(ctx, master)
        if _same(new, document, _FILING_COMPARED):
            continue  # already so (a repeat after a lost answer)
        stale = assumed is None or assumed.get("version") != master.version
        if stale or document["deleted"] or master.status != FilingStatus.DRAFT.value:
            conflicts.append(document)
            continue
        try:
            if new.get("deleted"):
                await filings.withdraw(session, viewer, master.id or 0, None, now=now)
            elif _same(new, document, ("person_id", "kind", "status")):
                await filings.edit_draft(
                    session,
                    state.bank_accounts,
                    viewer,
                    master,
                    new.get("fields"),
                    path=f"rows[{index}].newDocumentState.fields",
                    now=now,
                )
            else:
                conflicts.append(document)
        except Conflict as exc:
            if exc.extra.get("reason") != "concurrent_change":
                raise
            await session.rollback()
            fresh = await session.get(Filing, master.id, populate_existing=True)
            assert fresh is not None
            conflicts.append(coll.doc(ctx, fresh))
    await session.commit()
    return conflicts


async def _create_draft(
    session: AsyncSession,
    state: AppState,
    viewer: Viewer,
    me: int,
    new: Mapping[str, Any],
    index: int,
    client_id: str,
    now: dt.datetime | None,
) -> None:
    if new.get("deleted"):
        return  # made and discarded offline: nothing to keep
    at = f"rows[{index}].newDocumentState"
    if new.get("status") != FilingStatus.DRAFT.value:
        raise BadUserInput("离线只能保存草稿，提交请联网后在申请页办理", field=f"{at}.status")
    person = str(new.get("person_id") or "")
    if not _decimal_id(person):
        raise BadUserInput("参保人编号无效", field=f"{at}.personId")
    link_id: str | None = None
    if int(person) != me:
        found = await _link_to(session, me, int(person))
        if found is None:
            raise NotFound("未找到该亲属关联")
        link_id = str(found)
    try:
        await filings.create(
            session,
            state.bank_accounts,
            viewer,
            client_id=client_id,
            kind_code=str(new.get("kind") or ""),
            fields=new.get("fields"),
            link_id=link_id,
            now=now,
        )
    except (BadUserInput, Conflict) as exc:
        exc.field = _in_row(exc.field, at)
        raise


_CREATE_INPUT = {
    "input.fields": "fields",
    "input.kind": "kind",
    "input.clientId": "id",
    "input.linkId": "personId",
}


def _in_row(name: str | None, at: str) -> str | None:
    """The filings service names its own input (`input.fields.endOn`); a push names its row's."""
    for prefix, renamed in _CREATE_INPUT.items():
        if name is not None and (
            name == prefix or name.startswith(prefix + ".") or name.startswith(prefix + "[")
        ):
            return f"{at}.{renamed}{name[len(prefix) :]}"
    return name


_NOTIFICATION_FIXED = ("person_id", "kind", "title", "body", "data", "created_at", "link_id", "deleted")


async def push_notifications(
    session: AsyncSession,
    state: AppState,
    viewer: Viewer,
    rows: Sequence[tuple[Mapping[str, Any] | None, Mapping[str, Any]]],
) -> list[Document]:
    """Only `readAt` may change, from unread to read (the server's time is kept). Ids that are not the
    viewer's are passed over like ids that do not exist; any other difference is a conflict."""
    check_rows(rows)
    me = person_of(viewer)
    coll = collection("Notification")
    assert isinstance(coll, NotificationCollection)
    ctx = Ctx(state, me, frozenset({me}))
    conflicts: list[Document] = []
    marks: list[int] = []
    for index, (_, new) in enumerate(rows):
        raw = str(new.get("id") or "")
        if not _decimal_id(raw):
            raise BadUserInput("通知编号无效", field=f"rows[{index}].newDocumentState.id")
        master = await notifications.get_own(session, me, int(raw))
        if master is None:
            continue
        document = coll.doc(ctx, master)
        if not _same(new, document, _NOTIFICATION_FIXED) or (new.get("read_at") is None and master.read_at):
            conflicts.append(document)
        elif new.get("read_at") is not None and master.read_at is None:
            marks.append(int(raw))
    if marks:
        await notifications.mark_read(session, me, sorted(set(marks)))
    await session.commit()
    return conflicts
