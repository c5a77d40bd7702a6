"""A 零星报销 approval prices its visits against the person's whole insurance year: every stored, not
voided settlement of that year, also those dated after the reimbursed visit, as a terminal push does.

Without that, a reimbursed visit dated before an already-stored settlement was priced with the year as
it stood at the end of its visit day and ignored the later settlement: 30,000 fen basic pushed for
yesterday plus 33,000 approved for a visit five days earlier, against the 40,000 fen 门诊统筹 cap. The
later-arriving record is the one adjusted, whatever the visit dates; no concurrency is needed.

Also: the approval re-reads the person after it has taken the person's row lock, so that a change
committed in between (a 门诊慢特病 approval) is in what it records."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col

from api.people.models import Settlement
from api.settlement import service as settlement_service
from api.state import AppState
from tests.api import filingworld as fw
from tests.api.test_push import (
    clinic,
    create,
    items,
    local_day,
    morning,
    mutation,
    new_village,
    online_code,
    run,
    statuses,
    terminal,
    villager,
)
from tests.conftest import GraphQLClient

CAP = 40_000  # 普通门诊统筹 400 yuan a year (resident, default policy)
PUSHED_BASIC = 30_000  # 60% of the pushed 50,000 fen bill
ALONE = 33_000  # what the reimbursed 60,000 fen visit pays against an empty year


def _reimbursed_visit(day: dt.date) -> dict[str, Any]:
    return fw.visit(
        visitDate=day.isoformat(),
        hospitalName="凤台县人民医院",
        facilityLevel="primary",
        region="340421",
        items=[{"name": "诊疗费", "amountFen": 60_000, "itemClass": "class_a"}],
    )


async def _push_yesterday(state: AppState, person: int) -> None:
    """A village clinic's visit of `person` yesterday, pushed (and stored) now: 30,000 fen basic."""
    place = await clinic(state, new_village())
    term = await terminal(state, place)
    who = await villager(state, place.village_code, person_id=person)
    at = morning(1)
    answer = await run(
        state,
        term,
        [mutation(1, create(items(50_000), local_day(at), voucher=online_code(state, who, at)), at)],
    )
    assert statuses(answer) == ["applied"], answer
    assert answer["results"][0]["settlement"]["basicFen"] == PUSHED_BASIC


def _five_days_before_yesterday() -> dt.date:
    yesterday = local_day(morning(1))
    day = yesterday - dt.timedelta(days=5)
    if day.year != yesterday.year:
        pytest.skip("the two visits must fall in one insurance year")
    return day


async def _basic_paid(state: AppState, person: int, year: int) -> list[int]:
    async with state.db.session() as session:
        rows = await session.execute(
            select(col(Settlement.basic_fen)).where(
                col(Settlement.person_id) == person,
                col(Settlement.year) == year,
                col(Settlement.ytd_pool) == "general_outpatient",
                col(Settlement.voided_at).is_(None),
            )
        )
        return sorted(int(r) for r in rows.scalars())


async def _approve(state: AppState, gql: GraphQLClient, filing_id: str) -> dict[str, Any]:
    reviewers = [await fw.reviewer(state, gql) for _ in range(3)]
    done = await fw.through_stages(reviewers, filing_id)
    assert done["status"] == "APPROVED", done
    return done


async def test_a_visit_dated_before_a_stored_settlement_is_priced_against_it_not_past_the_cap(
    state: AppState, gql: GraphQLClient
) -> None:
    """Filed first (its estimate: the year then was empty), then a later-dated visit pushed, then approved."""
    day = _five_days_before_yesterday()
    who = await fw.resident(state, gql)
    person = who.member.person_id
    filing = await fw.submitted(
        state, who, "REIMBURSEMENT", fw.reimbursement(visits=[_reimbursed_visit(day)])
    )
    assert filing["amountFen"] == ALONE
    await _push_yesterday(state, person)  # priced against what was stored then: the filing was not
    done = await _approve(state, gql, filing["id"])
    paid = await _basic_paid(state, person, day.year)
    assert sum(paid) == CAP, paid  # not 63,000
    assert paid == sorted([PUSHED_BASIC, CAP - PUSHED_BASIC])
    assert done["amountFen"] == CAP - PUSHED_BASIC
    [visit] = done["computation"]["visits"]
    assert visit["basicFen"] == visit["payableFen"] == CAP - PUSHED_BASIC
    # What was shown before approval said it was an estimate; what approval recorded does not.
    assert filing["computation"].get("estimate") is True
    assert done["computation"].get("estimate") is False


async def test_the_estimate_before_approval_already_counts_a_later_dated_stored_settlement(
    state: AppState, gql: GraphQLClient
) -> None:
    """Pushed first, then filed: what the resident and the reviewers are shown is what approval pays."""
    day = _five_days_before_yesterday()
    who = await fw.resident(state, gql)
    person = who.member.person_id
    await _push_yesterday(state, person)
    filing = await fw.submitted(
        state, who, "REIMBURSEMENT", fw.reimbursement(visits=[_reimbursed_visit(day)])
    )
    assert filing["amountFen"] == CAP - PUSHED_BASIC
    done = await _approve(state, gql, filing["id"])
    assert done["amountFen"] == filing["amountFen"]
    assert sum(await _basic_paid(state, person, day.year)) == CAP


async def test_two_visits_of_one_filing_share_the_remaining_cap_in_date_order(
    state: AppState, gql: GraphQLClient
) -> None:
    """Estimate and approval agree for a filing of several visits around a stored settlement."""
    day = _five_days_before_yesterday()
    who = await fw.resident(state, gql)
    person = who.member.person_id
    await _push_yesterday(state, person)
    small = fw.visit(
        visitDate=(day - dt.timedelta(days=1)).isoformat(),
        hospitalName="凤台县人民医院",
        facilityLevel="primary",
        region="340421",
        items=[{"name": "诊疗费", "amountFen": 10_000, "itemClass": "class_a"}],
    )
    filing = await fw.submitted(
        state, who, "REIMBURSEMENT", fw.reimbursement(visits=[_reimbursed_visit(day), small])
    )
    estimated = {v["index"]: v["basicFen"] for v in filing["computation"]["visits"]}
    assert sum(estimated.values()) == CAP - PUSHED_BASIC
    done = await _approve(state, gql, filing["id"])
    assert {v["index"]: v["basicFen"] for v in done["computation"]["visits"]} == estimated
    assert done["amountFen"] == filing["amountFen"]
    assert sum(await _basic_paid(state, person, day.year)) == CAP


async def test_the_approval_records_the_person_as_they_are_once_it_holds_their_lock(
    state: AppState, gql: GraphQLClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 门诊慢特病 approval commits after the reimbursement's decision has loaded the person and before it
    takes the person's lock (forced: it runs just before the lock is taken). The recorded settlement's
    visit carries the person as they are under the lock, the disease included."""
    who = await fw.resident(state, gql)
    chronic = await fw.submitted(state, who, "CHRONIC_DISEASE")
    chronic_first, chronic_second = await fw.reviewer(state, gql), await fw.reviewer(state, gql)
    fw.data(await chronic_first(fw.CLAIM, {"id": chronic["id"]}))
    fw.data(await chronic_first(fw.DECIDE, {"id": chronic["id"], "decision": "APPROVE", "reason": "齐全"}))
    fw.data(await chronic_second(fw.CLAIM, {"id": chronic["id"]}))

    filing = await fw.submitted(state, who, "REIMBURSEMENT", fw.reimbursement(visits=[fw.visit()]))
    first, second, finance = [await fw.reviewer(state, gql) for _ in range(3)]
    assert (await fw.through_stages([first, second], filing["id"]))["stage"] == "payment"
    fw.data(await finance(fw.CLAIM, {"id": filing["id"]}))

    original = settlement_service.lock_people
    approved: list[str] = []

    async def chronic_approval_first(session: Any, person_ids: Iterable[int]) -> None:
        ids = list(person_ids)
        if not approved and who.member.person_id in ids:
            decided = fw.data(
                await chronic_second(
                    fw.DECIDE, {"id": chronic["id"], "decision": "APPROVE", "reason": "认定"}
                )
            )["decideFiling"]
            approved.append(decided["status"])
        await original(session, ids)

    monkeypatch.setattr(settlement_service, "lock_people", chronic_approval_first)
    done = fw.data(
        await finance(fw.DECIDE, {"id": filing["id"], "decision": "APPROVE", "reason": "材料齐全"})
    )["decideFiling"]
    assert approved == ["APPROVED"] and done["status"] == "APPROVED"
    async with state.db.session() as session:
        [recorded] = (
            await session.execute(
                select(Settlement).where(
                    col(Settlement.person_id) == who.member.person_id,
                    col(Settlement.source) == "reimbursement",
                )
            )
        ).scalars()
    assert recorded.visit["chronic_diseases"] == ["copd"]
