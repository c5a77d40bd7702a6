"""Insured people and their records: look-ups, keyset pages, per-year totals. No HTTP, no GraphQL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col

from api.errors import BadUserInput, Conflict, NotFound
from api.pagination import CursorCodec, Page, page_size, utc_range
from api.people.models import (
    AccountFlow,
    Contribution,
    Enrolment,
    Facility,
    InsuredPerson,
    PersonalAccount,
    Settlement,
)
from api.replication import changelog


@dataclass(frozen=True)
class RecordList:
    """A per-person record table, newest first by ``time_column`` then id."""

    name: str
    model: type[SQLModel]
    time_column: str


SETTLEMENTS = RecordList("settlements", Settlement, "settled_at")
CONTRIBUTIONS = RecordList("contributions", Contribution, "paid_at")
ACCOUNT_FLOWS = RecordList("account_flows", AccountFlow, "occurred_at")


async def get_person(session: AsyncSession, person_id: int) -> InsuredPerson:
    person = await session.get(InsuredPerson, person_id)
    if person is None:
        raise NotFound("未找到参保人信息")
    return person


async def list_records(
    session: AsyncSession,
    cursors: CursorCodec,
    records: RecordList,
    person_id: int,
    *,
    first: int | None,
    after: str | None,
    start: date | None,
    end: date | None,
) -> Page[Any]:
    limit = page_size(first)
    lower, upper = utc_range(start, end)
    model: Any = records.model
    moment = getattr(model, records.time_column)
    filters: list[ColumnElement[bool]] = [model.person_id == person_id]
    if lower is not None:
        filters.append(moment >= lower)
    if upper is not None:
        filters.append(moment < upper)
    scope = f"{records.name}:{person_id}"
    page_filters = list(filters)
    if after is not None:
        when, row_id = _cursor_key(cursors.decode(scope, after))
        page_filters.append(tuple_(moment, model.id) < tuple_(when, row_id))
    statement = select(model).where(*page_filters).order_by(moment.desc(), model.id.desc()).limit(limit + 1)
    rows = list((await session.execute(statement)).scalars())
    has_next = len(rows) > limit
    rows = rows[:limit]
    return Page(
        rows=rows,
        cursors=[
            cursors.encode(scope, [getattr(row, records.time_column).isoformat(), row.id]) for row in rows
        ],
        has_next_page=has_next,
        count_query=select(func.count()).select_from(model).where(*filters),
    )


def _cursor_key(key: list[Any]) -> tuple[datetime, int]:
    try:
        when, row_id = key
        return datetime.fromisoformat(when), int(row_id)
    except (TypeError, ValueError) as exc:
        raise BadUserInput("分页游标无效", field="after") from exc


async def personal_account(session: AsyncSession, person_id: int) -> PersonalAccount | None:
    return await session.get(PersonalAccount, person_id)


async def enrolments(session: AsyncSession, person_id: int) -> Sequence[Enrolment]:
    statement = (
        select(Enrolment)
        .where(col(Enrolment.person_id) == person_id)
        .order_by(col(Enrolment.start_on).desc())
    )
    return (await session.execute(statement)).scalars().all()


async def end_enrolment(session: AsyncSession, person_id: int, end_on: date, today: date) -> Enrolment:
    """Closes the person's open enrolment (参保终止) on ``end_on``; the caller revokes what it names."""
    person = await get_person(session, person_id)
    statement = select(Enrolment).where(
        col(Enrolment.person_id) == person_id, col(Enrolment.end_on).is_(None)
    )
    current = (await session.execute(statement.with_for_update())).scalars().first()
    if current is None:
        raise Conflict("该参保人没有进行中的参保记录")
    if end_on < current.start_on:
        raise BadUserInput("终止日期不能早于参保开始日期", field="endOn")
    if end_on > today:
        # Ending takes effect at once (vouchers are revoked now), so it is recorded when it happens,
        # not scheduled ahead.
        raise BadUserInput("终止日期不能晚于今天", field="endOn")
    current.end_on = end_on
    await changelog.record(session, changelog.person_changed(person_id, person.village_code))
    return current


@dataclass
class YearTotal:
    year: int
    contributions_fen: int = 0
    contribution_subsidy_fen: int = 0
    settlement_count: int = 0
    total_fen: int = 0
    basic_fen: int = 0
    critical_illness_fen: int = 0
    assistance_fen: int = 0
    personal_account_fen: int = 0
    cash_fen: int = 0


async def year_totals(session: AsyncSession, person_id: int) -> list[YearTotal]:
    s = Settlement
    settled = await session.execute(
        select(
            col(s.year),
            func.count(),
            func.sum(col(s.total_fen)),
            func.sum(col(s.basic_fen)),
            func.sum(col(s.critical_illness_fen)),
            func.sum(col(s.assistance_fen)),
            func.sum(col(s.personal_account_fen)),
            func.sum(col(s.cash_fen)),
        )
        .where(col(s.person_id) == person_id, col(s.voided_at).is_(None))  # voided ones count nowhere
        .group_by(col(s.year))
    )
    totals: dict[int, YearTotal] = {}
    for year, n, total, basic, critical, assistance, account, cash in settled:
        totals[year] = YearTotal(
            year=year,
            settlement_count=n,
            total_fen=int(total),
            basic_fen=int(basic),
            critical_illness_fen=int(critical),
            assistance_fen=int(assistance),
            personal_account_fen=int(account),
            cash_fen=int(cash),
        )
    c = Contribution
    paid = await session.execute(
        select(col(c.year), func.sum(col(c.amount_fen)), func.sum(col(c.subsidy_fen)))
        .where(col(c.person_id) == person_id)
        .group_by(col(c.year))
    )
    for year, amount, subsidy in paid:
        entry = totals.setdefault(year, YearTotal(year=year))
        entry.contributions_fen = int(amount)
        entry.contribution_subsidy_fen = int(subsidy)
    return [totals[year] for year in sorted(totals, reverse=True)]


async def facilities_by_ids(session: AsyncSession, ids: Sequence[int]) -> list[Facility | None]:
    rows = (await session.execute(select(Facility).where(Facility.id.in_(ids)))).scalars()  # type: ignore[union-attr]
    by_id = {row.id: row for row in rows}
    return [by_id.get(i) for i in ids]
