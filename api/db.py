"""Engine and sessions. SQLite (WAL) by default, PostgreSQL through ``YIBAO_DATABASE_URL``; same code."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import Boolean, String, any_, bindparam, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from api.settings import Settings


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the single writer; busy_timeout waits for the writer instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def create_engine(database_url: str, *, pool_size: int = 10) -> AsyncEngine:
    if database_url.startswith("sqlite"):
        engine = create_async_engine(database_url, poolclass=NullPool if ":memory:" in database_url else None)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    if database_url.startswith("postgresql+asyncpg") and "prepared_statement_cache_size" not in database_url:
        # asyncpg keeps 100 prepared statements per connection by default; the sync endpoints alone use
        # more than 100 statement texts, so an LRU of 100 prepares again (a round trip and a parse) what it
        # just evicted.
        database_url += ("&" if "?" in database_url else "?") + "prepared_statement_cache_size=1000"
    return create_async_engine(
        database_url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, pool_recycle=1800
    )


class OneOf(ColumnElement[bool]):
    """`column IN (<the list bound as `name` at execution>)`, compiled per dialect: on PostgreSQL
    `column = ANY($1)` with the whole list as one array parameter, elsewhere an expanding IN.

    An expanding IN renders one placeholder per value, so every distinct length is a statement text of
    its own: on PostgreSQL another prepared statement per connection (a round trip and a parse) and a
    bind parameter rendered per value. One array parameter is one text whatever the length."""

    inherit_cache = True
    type = Boolean()
    _is_implicitly_boolean = True  # a comparison: no "= 1" around it where booleans are integers
    _traverse_internals = [  # noqa: RUF012 (SQLAlchemy reads this class attribute for the cache key)
        ("column", InternalTraversal.dp_clauseelement),
        ("name", InternalTraversal.dp_string),
    ]

    def __init__(self, column: ColumnElement[Any], name: str) -> None:
        self.column = column
        self.name = name


def one_of(column: Any, name: str) -> OneOf:
    """`column` is one of the list passed as parameter `name` when the statement is executed."""
    return OneOf(column, name)


@compiles(OneOf)
def _expanding_in(element: OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.column.in_(bindparam(element.name, expanding=True)), **kw)


@compiles(OneOf, "postgresql")
def _any_of_array(element: OneOf, compiler: SQLCompiler, **kw: Any) -> str:
    item = element.column.type
    if isinstance(item, String):
        # Without its length: a cast to varchar(n)[] cuts longer values down to n characters, so a
        # value longer than the column would match a stored value that is its prefix.
        item = String()
    array = bindparam(element.name, type_=postgresql.ARRAY(item))
    return compiler.process(element.column == any_(array), **kw)


def dialect_name(session: AsyncSession) -> str:
    """The dialect the session's engine speaks: "postgresql" or "sqlite"."""
    return session.bind.dialect.name if session.bind is not None else "sqlite"


def dialect_insert(session: AsyncSession) -> Any:
    """The dialect's INSERT, which has ON CONFLICT (SQLAlchemy's generic insert does not)."""
    return postgresql.insert if dialect_name(session) == "postgresql" else sqlite.insert


class Database:
    """Owns the engine; hands out sessions that commit on success and roll back on error."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.resolved_database_url
        self.engine = create_engine(self.url)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessionmaker() as session:
            try:
                yield session
                await session.commit()
            except BaseException:
                await session.rollback()
                raise

    async def ping(self) -> bool:
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:  # any driver error means "not answering" to a health check
            return False
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()
