"""Fixed-window rate limits kept in the database, so they hold across worker processes."""

from __future__ import annotations

import time

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession

from api.auth.models import RateLimitWindow
from api.db import dialect_insert
from api.errors import RateLimited

_KEEP_S = 24 * 3600


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
    # Old windows are useless: trim this key's, and whenever a window opens, everyone's stale ones too
    # (keys that never come back would otherwise stay forever). A day covers the longest window in use.
    await session.execute(delete(table).where(table.c.key == key[:128], table.c.window_start < window_start))
    if count == 1:
        await session.execute(delete(table).where(table.c.window_start < int(now) - _KEEP_S))
    await session.commit()
    if count > limit:
        retry_after = window_start + window_s - int(now)
        raise RateLimited(retry_after_s=max(retry_after, 1))
