"""Notifications: written by any capability in its own transaction, listed and marked read by their
person, and announced live once (and only if) that transaction commits. No HTTP, no GraphQL.

How a capability notifies a resident (e.g. the filings, when a filing changes status)::

    async with state.db.session() as session:          # or any session the caller commits
        filing.status = "approved"
        await notifications.notify(
            session, filing.person_id, "filing.status", "备案已通过", "您的异地就医备案已审核通过。",
            {"filingId": str(filing.id), "from": "in_review", "to": "approved"},
            actor_account_id=reviewer.account_id,
        )
    # committed: the resident's notificationAdded subscriptions hear it, on every worker

Nothing to call after the commit: the announcement is part of the transaction (see
api/notifications/broker.py): PostgreSQL delivers its NOTIFY on commit, SQLite's `after_commit` event
hands it to the in-process broker, and a rollback announces nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from api.dbtypes import utcnow
from api.errors import BadUserInput
from api.ids import parse_id
from api.notifications.broker import Announcement, Broker, announce
from api.notifications.models import Notification
from api.pagination import CursorCodec, Page, page_size
from api.replication import changelog

ENTITY = "notification"
MAX_DATA_BYTES = 4096
MAX_MARK_IDS = 100


def _check(kind: str, title: str, body: str, data: dict[str, Any]) -> None:
    """The callers are other capabilities, not clients: a bad argument is a bug, said loudly."""
    if not kind or len(kind) > 48:
        raise ValueError("a notification kind is 1 to 48 characters")
    if not title.strip() or len(title) > 64:
        raise ValueError("a notification title is 1 to 64 characters")
    if not body.strip() or len(body) > 500:
        raise ValueError("a notification body is 1 to 500 characters")
    if len(json.dumps(data, ensure_ascii=False).encode()) > MAX_DATA_BYTES:
        raise ValueError(f"notification data is at most {MAX_DATA_BYTES} bytes of JSON")


def _changes(person_id: int, ids: Sequence[int]) -> list[changelog.Change]:
    scope = changelog.person_scope(person_id)
    return [changelog.Change(ENTITY, str(notification_id), scope) for notification_id in ids]


async def notify(
    session: AsyncSession,
    person_id: int,
    kind: str,
    title: str,
    body: str,
    data: dict[str, Any] | None = None,
    *,
    actor_account_id: int | None = None,
    link_id: int | None = None,
) -> Notification:
    """Keeps a notification for `person_id` in the caller's transaction, with its change-log entry,
    and announces it to the person's live subscribers once that transaction commits (never if it
    rolls back). The caller commits. `title` and `body` are zh-CN; `data` is small JSON for the app."""
    data = dict(data or {})
    _check(kind, title, body, data)
    row = Notification(
        person_id=person_id,
        kind=kind,
        title=title,
        body=body,
        data=data,
        created_at=utcnow(),
        actor_account_id=actor_account_id,
        link_id=link_id,
    )
    session.add(row)
    await session.flush()
    assert row.id is not None
    await changelog.record(session, _changes(person_id, [row.id]))
    await announce(session, Announcement(row.id, person_id))
    return row


def _list_filters(person_id: int, unread_only: bool) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = [col(Notification.person_id) == person_id]
    if unread_only:
        filters.append(col(Notification.read_at).is_(None))
    return filters


async def list_notifications(
    session: AsyncSession,
    cursors: CursorCodec,
    person_id: int,
    *,
    first: int | None,
    after: str | None,
    unread_only: bool = False,
) -> Page[Notification]:
    """A person's notifications, newest first (by id: the order they were written in)."""
    limit = page_size(first)
    filters = _list_filters(person_id, unread_only)
    scope = f"notifications:{person_id}:{'unread' if unread_only else 'all'}"
    page_filters = list(filters)
    if after is not None:
        key = cursors.decode(scope, after)
        if len(key) != 1 or not isinstance(key[0], int) or isinstance(key[0], bool):
            raise BadUserInput("分页游标无效", field="after")
        page_filters.append(col(Notification.id) < key[0])
    rows = list(
        (
            await session.execute(
                select(Notification)
                .where(*page_filters)
                .order_by(col(Notification.id).desc())
                .limit(limit + 1)
            )
        ).scalars()
    )
    has_next = len(rows) > limit
    rows = rows[:limit]
    return Page(
        rows=rows,
        cursors=[cursors.encode(scope, [row.id]) for row in rows],
        has_next_page=has_next,
        count_query=select(func.count()).select_from(Notification).where(*filters),
    )


async def unread_count(session: AsyncSession, person_id: int) -> int:
    result = await session.execute(
        select(func.count()).select_from(Notification).where(*_list_filters(person_id, True))
    )
    return int(result.scalar_one())


def parse_ids(values: Sequence[str] | None) -> list[int] | None:
    if values is None:
        return None
    if len(values) > MAX_MARK_IDS:
        raise BadUserInput(f"一次最多标记 {MAX_MARK_IDS} 条通知", field="ids")
    return sorted({parse_id(value, "ids") for value in values})


async def mark_read(session: AsyncSession, person_id: int, ids: Sequence[int] | None) -> int:
    """Marks the person's unread notifications among `ids` (all of them when None) read, and returns
    how many changed. Ids that are not the person's are passed over exactly like ids that do not
    exist, so the answer says nothing about anyone else's notifications. The caller commits."""
    if ids is not None and not ids:
        return 0
    filters = _list_filters(person_id, True)
    if ids is not None:
        filters.append(col(Notification.id).in_(list(ids)))
    result = await session.execute(
        update(Notification)
        .where(*filters)
        .values(read_at=utcnow())
        .returning(col(Notification.id))
        .execution_options(synchronize_session=False)
    )
    changed = sorted(int(found) for found in result.scalars() if found is not None)
    await changelog.record(session, _changes(person_id, changed))
    return len(changed)


async def get_own(session: AsyncSession, person_id: int, notification_id: int) -> Notification | None:
    """The notification, if it is the person's (and exists: committed, not rolled back)."""
    return (
        await session.execute(
            select(Notification).where(
                col(Notification.id) == notification_id, col(Notification.person_id) == person_id
            )
        )
    ).scalar_one_or_none()


async def live(
    sessions: async_sessionmaker[AsyncSession], broker: Broker, person_id: int
) -> AsyncIterator[Notification]:
    """The person's notifications as they are committed, read back one by one (ids travel, content is
    read here, with the person's id in the query). Ends when the worker shuts down; raises
    broker.Lagged when the subscriber fell behind."""
    async with broker.subscribe(person_id) as subscription:
        async for announcement in subscription:
            async with sessions() as session:
                row = await get_own(session, person_id, announcement.notification_id)
            if row is not None:
                yield row
