"""`api.db.one_of`: a list parameter that is one array on PostgreSQL and an expanding IN elsewhere."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlmodel import col

from api.db import one_of
from api.people.models import InsuredPerson
from api.state import AppState

_BY_ID = (
    select(col(InsuredPerson.id)).where(one_of(col(InsuredPerson.id), "ids")).order_by(col(InsuredPerson.id))
)
_BY_ID_OR_REF = select(col(InsuredPerson.id)).where(
    one_of(col(InsuredPerson.id), "ids") | one_of(col(InsuredPerson.ref), "refs")
)


@pytest.mark.asyncio
async def test_one_of_matches_the_list_whatever_its_length(state: AppState) -> None:
    async with state.db.session() as session:
        people = (await session.execute(select(col(InsuredPerson.id), col(InsuredPerson.ref)).limit(5))).all()
        ids = [int(pid) for pid, _ in people]
        assert len(ids) == 5
        for wanted in ([], ids[:1], ids[:3], ids, [*ids, -1, -2]):
            got = (await session.execute(_BY_ID, {"ids": wanted})).scalars().all()
            assert got == sorted(pid for pid in wanted if pid > 0)
        got = (await session.execute(_BY_ID_OR_REF, {"ids": ids[:1], "refs": [people[4][1]]})).scalars().all()
        assert sorted(got) == sorted([ids[0], ids[4]])


def test_one_of_is_one_array_parameter_on_postgresql_and_a_plain_in_on_sqlite(state: AppState) -> None:
    text = str(_BY_ID.compile(state.db.engine.sync_engine))
    if state.db.is_postgres:
        assert "= ANY (" in text and "::BIGINT[]" in text
    else:
        # No "= 1" around the comparison (SQLite has no booleans): it must stay usable by an index.
        assert "IN (__[POSTCOMPILE_ids])" in text and "= 1" not in text
