"""Review r4 (fresh-eyes review of the changes since 1bd3fff): defects a reviewer confirmed, as strict
xfails until they were fixed."""

from __future__ import annotations

import pytest
from sqlalchemy import String, column, select, values

from api.db import one_of
from api.state import AppState


async def test_one_of_does_not_match_a_longer_value_by_its_prefix(state: AppState) -> None:
    if not state.db.is_postgres:
        pytest.skip("the ANY(array) form is PostgreSQL's; SQLite compiles an expanding IN")
    stored = values(column("ref", String(4)), name="stored").data([("abcd",)])
    statement = select(stored.c.ref).where(one_of(stored.c.ref, "refs"))
    async with state.db.session() as session:
        found = (await session.execute(statement, {"refs": ["abcdEFGH"]})).scalars().all()
    assert found == []  # "abcdEFGH" is not "abcd"; as `stored.c.ref == "abcdEFGH"` answers
