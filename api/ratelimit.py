"""Fixed-window rate limits kept in the database, so they hold across worker processes."""

from __future__ import annotations

import time

from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.models import RateLimitWindow
from api.db import dialect_insert
from api.errors import RateLimited

_KEEP_S = 24 * 3600
_PURGE_BATCH = 1000


async def _purge_stale(session: AsyncSession, cutoff: int) -> None:
    """In its own transaction, and on PostgreSQL skipping rows that another request holds: two purges
    (or a purge and a key's own update) never wait on each other, so they cannot deadlock."""
    table = RateLimitWindow.__table__  # type: ignore[attr-defined]
    stale = select(table.c.key, table.c.window_start).where(table.c.window_start < cutoff).limit(_PURGE_BATCH)
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        stale = stale.with_for_update(skip_locked=True)
    await session.execute(delete(table).where(tuple_(table.c.key, table.c.window_start).in_(stale)))
    await session.commit()


async def hit(
    session: AsyncSession, key: str, *, limit: int, window_s: int, now: float | None = None
) -> None:
    """Counts one attempt under ``key``; raises RateLimited past ``limit`` in the current window.

    Runs in its own committed statement: an attempt counts even when the request it guards fails.
    """
    now = time.time() if now is None else now
    window_start = int(now) // window_s * window_s
    table = RateLimitWindow.__table__  # type: ignore[attr-defined]
    statement = (
        dialect_insert(session)(table)
        .values(key=key[:128], window_start=window_start, count=1)
        .on_conflict_do_update(index_elements=["key", "window_start"], set_={"count": table.c.count + 1})
        .returning(table.c.count)
    )
    count = (await session.execute(statement)).scalar_one()
    # Old windows are useless: trim this key's (only its own rows, so no lock order across keys)...
    await session.execute(delete(table).where(table.c.key == key[:128], table.c.window_start < window_start))
    await session.commit()
    if count == 1:
        # ...and whenever a window opens, everyone's stale ones too: keys that never come back would
        # otherwise stay forever. A day covers the longest window in use.
        await _purge_stale(session, int(now) - _KEEP_S)
    if count > limit:
        retry_after = window_start + window_s - int(now)
        raise RateLimited(retry_after_s=max(retry_after, 1))
