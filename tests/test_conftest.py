"""The PostgreSQL leg's own plumbing: YIBAO_TEST_POSTGRES_URL names a server, not a database that must exist."""

from __future__ import annotations

import os
import uuid

import pytest

from tests.conftest import _admin_pg, _pg_url


def test_the_per_run_database_url_keeps_credentials_driver_and_query() -> None:
    base = "postgresql+asyncpg://ci:s3cret@db.internal:6543/anything?ssl=require"
    assert (
        _pg_url(base, database="yibao_test_0123456789")
        == "postgresql+asyncpg://ci:s3cret@db.internal:6543/yibao_test_0123456789?ssl=require"
    )
    assert _pg_url(base, drivername="postgresql", database="postgres") == (
        "postgresql://ci:s3cret@db.internal:6543/postgres?ssl=require"
    )


@pytest.mark.postgres
@pytest.mark.skipif(not os.environ.get("YIBAO_TEST_POSTGRES_URL"), reason="needs YIBAO_TEST_POSTGRES_URL")
async def test_a_url_naming_a_missing_database_still_creates_and_drops_the_run_database() -> None:
    import asyncpg

    absent = _pg_url(os.environ["YIBAO_TEST_POSTGRES_URL"], database=f"yibao_absent_{uuid.uuid4().hex[:10]}")
    name = f"yibao_admin_{uuid.uuid4().hex[:10]}"
    direct = _pg_url(absent, drivername="postgresql", database=name)

    await _admin_pg(absent, f'CREATE DATABASE "{name}"')
    try:
        conn = await asyncpg.connect(direct)
        assert await conn.fetchval("select current_database()") == name
        await conn.close()
    finally:
        await _admin_pg(absent, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await asyncpg.connect(direct)
