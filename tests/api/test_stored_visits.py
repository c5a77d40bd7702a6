"""Settlements keep their bill (issue 9 item 2): the demo county stores each settlement's engine input,
the migration backfills a bill reconstructed from the amounts for rows stored before, and an auditor's
replay of either through the engine gives the stored amounts back."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.auth.models import Account
from api.db import create_engine
from api.people.models import InsuredPerson, Settlement
from api.settings import Settings
from api.settlement import service as settlement_service
from api.state import AppState
from sync.settlement import Visit, YearToDate, compute


async def replay(state_or_url: AppState | str, person_ids: Sequence[int] | None = None) -> int:
    """The auditor's replay: each person's stored settlements, in the order they were settled, through
    the engine with the stored visit and version and the totals the replay carried; returns how many
    matched (and asserts that every one did, amounts and year-to-date increments alike)."""
    engine = create_engine(state_or_url) if isinstance(state_or_url, str) else state_or_url.db.engine
    count = 0
    try:
        async with AsyncSession(engine) as session:
            statement = select(Settlement).order_by(
                col(Settlement.person_id), col(Settlement.settled_at), col(Settlement.id)
            )
            if person_ids is not None:
                statement = statement.where(col(Settlement.person_id).in_(list(person_ids)))
            policies = await settlement_service.policy_set(session)
            carried: dict[tuple[int, int], YearToDate] = {}
            for row in (await session.execute(statement)).scalars():
                assert row.visit is not None, f"settlement {row.id} has no stored visit"
                visit = Visit.from_dict({k: v for k, v in row.visit.items() if k != "reconstructed"})
                before = carried.get((row.person_id, row.year)) or YearToDate(row.year)
                version = policies.get(row.policy_version)
                result = compute(version, visit, before, today=visit.visit_date)
                stored = (
                    row.total_fen,
                    row.compliant_fen,
                    row.deductible_fen,
                    row.basic_fen,
                    row.critical_illness_fen,
                    row.assistance_fen,
                    row.personal_account_fen,
                    row.cash_fen,
                )
                again = (
                    result.total_fen,
                    result.compliant_fen,
                    result.deductible_fen,
                    result.basic_fen,
                    result.critical_illness_fen,
                    result.assistance_fen,
                    result.personal_account_fen,
                    result.cash_fen,
                )
                assert again == stored, (row.id, row.visit, stored, again)
                columns = settlement_service.ytd_columns(version, visit, before, result)
                assert columns == {
                    "ytd_pool": row.ytd_pool,
                    "critical_oop_fen": row.critical_oop_fen,
                    "assistance_threshold_fen": row.assistance_threshold_fen,
                }, row.id
                carried[(row.person_id, row.year)] = result.ytd
                count += 1
    finally:
        if isinstance(state_or_url, str):
            await engine.dispose()
    return count


async def test_demo_settlements_keep_their_bill_and_replay_to_their_amounts(state: AppState) -> None:
    async with state.db.session() as session:
        demo_people = list(
            (
                await session.execute(
                    select(col(Account.person_id)).where(
                        col(Account.provider) == "demo", col(Account.person_id).is_not(None)
                    )
                )
            ).scalars()
        )
        hospital_only = select(col(Settlement.person_id)).where(col(Settlement.source) != "hospital")
        sample = list(
            (
                await session.execute(
                    select(col(InsuredPerson.id))
                    .where(col(InsuredPerson.id).not_in(hospital_only))
                    .order_by(col(InsuredPerson.id))
                    .limit(40)
                )
            ).scalars()
        )
    people = sorted({p for p in demo_people + sample if p is not None})
    replayed = await replay(state, people)
    assert replayed > 300  # three years of visits of the named demo people and 40 villagers


async def test_the_migration_backfills_a_reconstructed_bill_that_replays(tmp_path: Path) -> None:
    from alembic import command

    from api.demo import load_demo_county
    from api.migrate import alembic_config, upgrade

    settings = Settings(data_dir=tmp_path, demo_people=50)
    url = settings.resolved_database_url
    upgrade(url)
    populated = AppState.build(settings)
    try:
        await load_demo_county(populated, people=50, seed=3)
    finally:
        await populated.db.dispose()
    config = alembic_config(url)
    # Back to the previous head (its settlements have no bill), then forward through the data step.
    await asyncio.to_thread(command.downgrade, config, "7420e5c26349")
    await asyncio.to_thread(command.upgrade, config, "head")
    engine = create_engine(url)
    try:
        async with AsyncSession(engine) as session:
            visits = list((await session.execute(select(col(Settlement.visit)))).scalars())
    finally:
        await engine.dispose()
    assert len(visits) > 300 and all(v is not None and v["reconstructed"] is True for v in visits)
    assert any(len(v["items"]) == 3 for v in visits)  # employees' accounts paid 乙类 self-pay shares
    assert await replay(url) == len(visits)
