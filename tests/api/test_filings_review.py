"""The filings' workflow and reviewers (issue 11 items 3-5) through real GraphQL requests: stages and
their working-day deadlines, 一次告知 and resubmission, transitions the state machine refuses, claims,
conflicts of interest, filing for a relative, and what approval changes in estimateSettlement."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col

from api.auth.models import Role
from api.auth.service import Viewer
from api.family.models import Permission
from api.filings import calendar, service
from api.filings.models import Filing
from api.notifications.models import Notification
from api.pagination import SHANGHAI
from api.people.models import InsuredPerson, Settlement
from api.state import AppState
from tests.api import familyworld as world
from tests.api import filingworld as fw
from tests.api.filingworld import (
    CLAIM,
    CREATE,
    DECIDE,
    FILING,
    MINE,
    QUEUE,
    RELEASE,
    SUBMIT,
    WITHDRAW,
    create_input,
    data,
)
from tests.conftest import GraphQLClient

ESTIMATE = """query($input: EstimateSettlementInput!) { estimateSettlement(input: $input) {
  insuranceFen basicFen basicRatioPermille cashFen lines } }"""


def code(body: dict[str, Any]) -> str:
    codes = {e.get("extensions", {}).get("code") for e in body.get("errors", [])}
    assert len(codes) == 1, body
    return str(codes.pop())


async def reviewers(state: AppState, gql: GraphQLClient, n: int) -> list[fw.Resident]:
    return [await fw.reviewer(state, gql) for _ in range(n)]


# ------------------------------------------------------------------------------ the calendar


def test_working_days_skip_national_day_and_count_its_make_up_saturday() -> None:
    # 2026: National Day and Mid-Autumn, 1-7 October off; Saturday 10 October is a make-up working day.
    assert calendar.is_working_day(dt.date(2026, 9, 30))
    assert not calendar.is_working_day(dt.date(2026, 10, 5))
    assert calendar.is_working_day(dt.date(2026, 10, 10))  # a Saturday
    assert not calendar.is_working_day(dt.date(2026, 10, 11))  # the Sunday after is not
    deadline = calendar.add_working_days(dt.date(2026, 9, 30), 3)
    assert deadline == calendar.Deadline(dt.date(2026, 10, 10), estimated=False)  # 8, 9, 10 October
    assert calendar.add_working_days(dt.date(2026, 9, 30), 4).due_on == dt.date(2026, 10, 12)
    # Without the calendar a plain weekday count would say 5 October (and a weekend count 7 October).


def test_the_working_day_test_agrees_with_the_official_calendar_on_every_covered_day() -> None:
    import chinese_calendar

    day = dt.date(calendar.FIRST_YEAR, 1, 1)
    while day.year <= calendar.LAST_YEAR:
        assert calendar.is_working_day(day) == chinese_calendar.is_workday(day), day
        day += dt.timedelta(days=1)


def test_past_the_calendar_data_weekdays_and_fixed_holidays_count_and_the_deadline_is_estimated() -> None:
    last = dt.date(calendar.LAST_YEAR, 12, 31)
    beyond = calendar.add_working_days(last, 1)
    assert beyond.estimated
    assert beyond.due_on.month == 1 and beyond.due_on.day > 1  # 1 January is a fixed holiday
    assert not calendar.is_working_day(dt.date(calendar.LAST_YEAR + 1, 10, 2))
    assert calendar.add_working_days(dt.date(calendar.LAST_YEAR, 3, 2), 5).estimated is False


async def test_a_deadline_across_national_day_2026(state: AppState, gql: GraphQLClient) -> None:
    who = await fw.resident(state, gql)
    filing = data(await who(CREATE, create_input("CROSS_REGION", fw.cross_region())))["createFiling"]
    viewer = Viewer(who.member.account_id or 0, Role.RESIDENT, "s", who.member.person_id)
    on_30_september = dt.datetime(2026, 9, 30, 9, 0, tzinfo=SHANGHAI)
    async with state.db.sessionmaker() as session:
        row = await service.submit(session, state.bank_accounts, viewer, filing["id"], now=on_30_september)
    # 初审 has 3 working days: 8, 9 and the make-up Saturday 10 October.
    assert row.due_on == dt.date(2026, 10, 10) and not row.due_estimated
    shown = data(await who(FILING, {"id": filing["id"]}))["filing"]
    assert shown["dueOn"] == "2026-10-10" and shown["overdue"] is True  # today is past it
    overdue = await reviewers(state, gql, 1)
    queue = data(await overdue[0](QUEUE, {"filter": {"overdue": True, "region": "340421"}, "first": 100}))
    assert filing["id"] in {e["node"]["id"] for e in queue["reviewQueue"]["edges"]}


# ---------------------------------------------------------------------------------- workflow


async def test_a_reimbursement_goes_through_three_stages_and_records_its_settlement(
    state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql)
    filing = await fw.submitted(state, who, "REIMBURSEMENT")
    assert filing["status"] == "SUBMITTED" and filing["stage"] == "first_review"
    first, second, finance = await reviewers(state, gql, 3)

    claimed = data(await first(CLAIM, {"id": filing["id"]}))["claimFiling"]
    assert claimed["status"] == "IN_REVIEW" and claimed["claimedByMe"]
    advanced = data(await first(DECIDE, {"id": filing["id"], "decision": "APPROVE", "reason": "初审通过"}))[
        "decideFiling"
    ]
    assert (
        advanced["stage"] == "second_review"
        and advanced["status"] == "IN_REVIEW"
        and not advanced["claimedByMe"]
    )
    assert advanced["dueOn"] == calendar.add_working_days(fw.today(), 5).due_on.isoformat()

    # The first reviewer may not decide a second stage of the same filing.
    assert code(await first(CLAIM, {"id": filing["id"]})) == "FORBIDDEN"
    result = await fw.through_stages([second, finance], filing["id"])
    assert result["status"] == "APPROVED" and result["stage"] is None and result["dueOn"] is None
    assert [h["action"] for h in result["history"]] == [
        "create",
        "submit",
        "claim",
        "advance",
        "claim",
        "advance",
        "claim",
        "approve",
    ]
    assert result["history"][3]["reason"] == "初审通过" and result["history"][3]["actorRole"] == "reviewer"

    async with state.db.session() as session:
        rows = (
            (
                await session.execute(
                    select(Settlement).where(col(Settlement.client_ref).like(f"filing:{filing['id']}:%"))
                )
            )
            .scalars()
            .all()
        )
    assert len(rows) == 1 and rows[0].source == "reimbursement" and rows[0].person_id == who.member.person_id
    assert rows[0].basic_fen + rows[0].critical_illness_fen + rows[0].assistance_fen == result["amountFen"]
    # The filer sees every transition and hears of each reviewer's step.
    mine = data(await who(FILING, {"id": filing["id"]}))["filing"]
    assert len(mine["history"]) == 8
    async with state.db.session() as session:
        kinds = (
            (
                await session.execute(
                    select(col(Notification.data))
                    .where(col(Notification.person_id) == who.member.person_id)
                    .order_by(col(Notification.id))
                )
            )
            .scalars()
            .all()
        )
    assert [d["action"] for d in kinds if d["filingId"] == filing["id"]] == [
        "claim",
        "advance",
        "advance",
        "approve",
    ]


async def test_needs_materials_lists_everything_and_a_resubmission_adds_only_that(
    state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql)
    filing = await fw.submitted(state, who, "REIMBURSEMENT")
    (first,) = await reviewers(state, gql, 1)
    data(await first(CLAIM, {"id": filing["id"]}))
    ask = {"id": filing["id"], "decision": "NEEDS_MATERIALS", "reason": "材料不全"}
    for bad, field in (([{"code": "nonsense"}], "missing[0].code"), ([], "missing"), (None, "missing")):
        body = await first(DECIDE, {**ask, "missing": bad})
        assert code(body) == "BAD_USER_INPUT" and body["errors"][0]["extensions"]["field"] == field, body
    assert (
        code(await first(DECIDE, {**ask, "reason": None, "missing": [{"code": "invoice"}]}))
        == "BAD_USER_INPUT"
    )
    missing = [{"code": "invoice", "note": "第2页不清晰"}, {"code": "bankAccount", "note": "户名与本人不符"}]
    asked = data(
        await first(
            DECIDE,
            {"id": filing["id"], "decision": "NEEDS_MATERIALS", "reason": "材料不全", "missing": missing},
        )
    )["decideFiling"]
    assert asked["status"] == "NEEDS_MATERIALS" and asked["dueOn"] is None
    assert [(m["code"], m["label"], m["note"]) for m in asked["requestedMaterials"]] == [
        ("invoice", "医疗收费票据（发票）", "第2页不清晰"),
        ("bankAccount", "收款银行账户", "户名与本人不符"),
    ]
    # Once asked, the filing waits for the filer: no second request on top.
    again = {"id": filing["id"], "decision": "NEEDS_MATERIALS", "reason": "x", "missing": missing}
    assert code(await first(DECIDE, again)) == "CONFLICT"

    # Resubmitting without what was asked lists all of it, at once.
    body = await who(SUBMIT, {"id": filing["id"]})
    assert code(body) == "BAD_USER_INPUT" and set(body["errors"][0]["extensions"]["missing"]) == {
        "医疗收费票据（发票）",
        "收款银行账户",
    }
    # Only what was asked may change or be added.
    body = await who(SUBMIT, {"id": filing["id"], "changes": {"visits": fw.reimbursement()["visits"]}})
    assert code(body) == "BAD_USER_INPUT" and body["errors"][0]["extensions"]["field"] == "changes.visits"
    refused = await fw.upload(gql, who.token, filing["id"], "expense_list")
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "material"
    assert (
        await fw.upload(gql, who.token, filing["id"], "invoice", fw.PNG, "invoice.png", "image/png")
    ).status_code == 201
    new_account = {**fw.bank(), "accountNumber": "6217000000000004321"}
    again = data(await who(SUBMIT, {"id": filing["id"], "changes": {"bankAccount": new_account}}))[
        "submitFiling"
    ]
    assert (
        again["status"] == "RESUBMITTED"
        and again["stage"] == "first_review"
        and again["requestedMaterials"] == []
    )
    assert again["fields"]["bankAccount"]["accountNumberMasked"].endswith("4321")
    assert again["dueOn"] == calendar.add_working_days(fw.today(), 10).due_on.isoformat()
    # The reviewer who asked carries on with the same stage.
    data(await first(CLAIM, {"id": filing["id"]}))
    moved = data(await first(DECIDE, {"id": filing["id"], "decision": "APPROVE"}))["decideFiling"]
    assert moved["stage"] == "second_review"


async def test_transitions_the_state_machine_does_not_allow(state: AppState, gql: GraphQLClient) -> None:
    who = await fw.resident(state, gql)
    (rev,) = await reviewers(state, gql, 1)
    draft = data(await who(CREATE, create_input("CROSS_REGION", fw.cross_region())))["createFiling"]
    assert (
        code(await rev(DECIDE, {"id": draft["id"], "decision": "APPROVE"})) == "CONFLICT"
    )  # approve a draft
    assert code(await rev(CLAIM, {"id": draft["id"]})) == "CONFLICT"
    data(await who(SUBMIT, {"id": draft["id"]}))
    result = await fw.through_stages(await reviewers(state, gql, 2), draft["id"])
    assert result["status"] == "APPROVED"
    body = await who(WITHDRAW, {"id": draft["id"]})  # withdraw an approved filing
    assert code(body) == "CONFLICT" and body["errors"][0]["extensions"]["reason"] == "invalid_transition"
    assert code(await who(SUBMIT, {"id": draft["id"], "changes": {"reason": "x"}})) == "CONFLICT"
    assert code(await rev(CLAIM, {"id": draft["id"]})) == "CONFLICT"

    # Withdrawn before a decision: final too.
    other = data(await who(CREATE, create_input("CROSS_REGION", fw.cross_region(), submit=True)))[
        "createFiling"
    ]
    gone = data(await who(WITHDRAW, {"id": other["id"], "reason": "行程取消"}))["withdrawFiling"]
    assert gone["status"] == "WITHDRAWN" and gone["history"][-1]["reason"] == "行程取消"
    assert code(await who(WITHDRAW, {"id": other["id"]})) == "CONFLICT"
    assert code(await rev(CLAIM, {"id": other["id"]})) == "CONFLICT"


async def test_a_reviewer_cannot_decide_what_they_did_not_claim(state: AppState, gql: GraphQLClient) -> None:
    who = await fw.resident(state, gql)
    filing = data(await who(CREATE, create_input("CROSS_REGION", fw.cross_region(), submit=True)))[
        "createFiling"
    ]
    holder, other = await reviewers(state, gql, 2)
    body = await other(DECIDE, {"id": filing["id"], "decision": "APPROVE"})
    assert code(body) == "FORBIDDEN" and body["errors"][0]["extensions"]["reason"] == "not_claimed"
    data(await holder(CLAIM, {"id": filing["id"]}))
    assert code(await other(CLAIM, {"id": filing["id"]})) == "CONFLICT"
    assert code(await other(DECIDE, {"id": filing["id"], "decision": "REJECT", "reason": "x"})) == "FORBIDDEN"
    assert code(await other(RELEASE, {"id": filing["id"]})) == "FORBIDDEN"
    # A reason is needed to reject; released, the other reviewer can take it.
    assert code(await holder(DECIDE, {"id": filing["id"], "decision": "REJECT"})) == "BAD_USER_INPUT"
    released = data(await holder(RELEASE, {"id": filing["id"]}))["releaseFiling"]
    assert not released["claimedByMe"] and released["status"] == "IN_REVIEW"
    data(await other(CLAIM, {"id": filing["id"]}))
    rejected = data(
        await other(DECIDE, {"id": filing["id"], "decision": "REJECT", "reason": "不符合备案条件"})
    )["decideFiling"]
    assert rejected["status"] == "REJECTED" and rejected["decisionReason"] == "不符合备案条件"
    # Residents are not reviewers.
    assert code(await who(CLAIM, {"id": filing["id"]})) == "FORBIDDEN"


async def test_no_one_reviews_their_own_or_their_familys_filings(state: AppState, gql: GraphQLClient) -> None:
    staff = await fw.reviewer(state, gql)
    # A reviewer's own filing (they are insured too): through the service, as a reviewer login has no resident role.
    own = Viewer(staff.member.account_id or 0, Role.RESIDENT, "s", staff.member.person_id)
    async with state.db.sessionmaker() as session:
        mine = await service.create(
            session,
            state.bank_accounts,
            own,
            client_id=str(uuid.uuid4()),
            kind_code="cross_region",
            fields=fw.cross_region(),
            submit_now=True,
        )
    body = await staff(CLAIM, {"id": str(mine.id)})
    assert code(body) == "FORBIDDEN" and body["errors"][0]["extensions"]["reason"] == "own_filing"
    # A relative linked to the reviewer.
    parent = await fw.resident(state, gql, age=70)
    await world.link(state, staff.member, parent.member, {Permission.READ_RECORDS})
    theirs = data(await parent(CREATE, create_input("CROSS_REGION", fw.cross_region(), submit=True)))[
        "createFiling"
    ]
    body = await staff(CLAIM, {"id": theirs["id"]})
    assert code(body) == "FORBIDDEN" and body["errors"][0]["extensions"]["reason"] == "family_filing"
    # Someone of the same household.
    housemate = await fw.resident(state, gql, household_id=staff.member.household_id)
    theirs = data(await housemate(CREATE, create_input("CROSS_REGION", fw.cross_region(), submit=True)))[
        "createFiling"
    ]
    assert code(await staff(CLAIM, {"id": theirs["id"]})) == "FORBIDDEN"


# ------------------------------------------------------------------------------ the queue


async def test_the_queue_filters_and_pages_by_deadline(state: AppState, gql: GraphQLClient) -> None:
    who = await fw.resident(state, gql)
    ids = [
        data(await who(CREATE, create_input("CROSS_REGION", fw.cross_region(), submit=True)))["createFiling"][
            "id"
        ]
        for _ in range(3)
    ]
    (rev,) = await reviewers(state, gql, 1)
    seen: list[dict[str, Any]] = []
    after = None
    while True:
        page = data(
            await rev(
                QUEUE,
                {"filter": {"kind": "CROSS_REGION", "stage": "first_review"}, "first": 2, "after": after},
            )
        )["reviewQueue"]
        seen += [e["node"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    keys = [(n["dueOn"], int(n["id"])) for n in seen]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert set(ids) <= {n["id"] for n in seen} and {n["kind"] for n in seen} == {"CROSS_REGION"}
    assert page["totalCount"] == len(seen)
    data(await rev(CLAIM, {"id": ids[0]}))
    mine = data(await rev(QUEUE, {"filter": {"claimed": "MINE"}}))["reviewQueue"]["edges"]
    assert [e["node"]["id"] for e in mine] == [ids[0]]
    soon = data(await rev(QUEUE, {"filter": {"dueBefore": fw.days(-1)}, "first": 100}))["reviewQueue"][
        "edges"
    ]
    assert not set(ids) & {e["node"]["id"] for e in soon}
    body = await rev(QUEUE, {"filter": {"status": "APPROVED"}})
    assert code(body) == "BAD_USER_INPUT"
    body = await rev(QUEUE, {"after": page["pageInfo"]["endCursor"] or "x", "filter": {"kind": "MATERNITY"}})
    assert code(body) == "BAD_USER_INPUT"  # a cursor only works on the list it came from
    assert code(await who(QUEUE, {})) == "FORBIDDEN"


# ------------------------------------------------------------------------ filing for a relative


async def test_filing_for_a_relative_needs_file_on_behalf_and_is_audited(
    state: AppState, gql: GraphQLClient
) -> None:
    holder = await fw.resident(state, gql)
    parent = await fw.resident(state, gql, age=78)
    reader = await world.link(state, holder.member, parent.member, {Permission.READ_RECORDS})
    body = await holder(CREATE, create_input("CHRONIC_DISEASE", fw.chronic(), linkId=str(reader)))
    assert code(body) == "FORBIDDEN" and body["errors"][0]["extensions"]["reason"] == "missing_file_on_behalf"
    stranger = await fw.resident(state, gql)
    assert (
        code(await stranger(CREATE, create_input("CHRONIC_DISEASE", fw.chronic(), linkId=str(reader))))
        == "NOT_FOUND"
    )

    other_holder = await fw.resident(state, gql)
    parent2 = await fw.resident(state, gql, age=80)
    link = await world.link(state, other_holder.member, parent2.member, set(Permission))
    filed = data(await other_holder(CREATE, create_input("CHRONIC_DISEASE", fw.chronic(), linkId=str(link))))[
        "createFiling"
    ]
    assert filed["filedOnBehalf"] and filed["linkId"] == str(link)
    assert filed["personName"] == parent2.member.name and filed["filedByName"] == other_holder.member.name
    for material in ("diagnosis_proof", "medical_record"):
        assert (await fw.upload(gql, other_holder.token, filed["id"], material)).status_code == 201
    data(await other_holder(SUBMIT, {"id": filed["id"]}))
    data(await other_holder(MINE, {"linkId": str(link)}))
    attachment = data(await other_holder(FILING, {"id": filed["id"]}))["filing"]["attachments"][0]
    assert (
        await gql.http.get(
            attachment["downloadPath"], headers={"authorization": f"Bearer {other_holder.token}"}
        )
    ).status_code == 200

    # The relative sees it as theirs, and who filed it.
    theirs = data(await parent2(MINE, {}))["myFilings"]["edges"]
    assert [e["node"]["id"] for e in theirs] == [filed["id"]]
    assert (
        theirs[0]["node"]["filedByName"] == other_holder.member.name
        and theirs[0]["node"]["history"][0]["actorRole"] == "holder"
    )
    audit = data(await parent2("{ accessAudit(first: 50) { edges { node { action linkId actorName } } } }"))[
        "accessAudit"
    ]
    actions = [e["node"]["action"] for e in audit["edges"] if e["node"]["linkId"] == str(link)]
    for expected in (
        "filing:create",
        "filing:upload",
        "filing:submit",
        "read:filings",
        "read:filing",
        "read:attachment",
    ):
        assert expected in actions, (expected, actions)
    # They heard of it, and of the submission made in their name.
    async with state.db.session() as session:
        notes = (
            (
                await session.execute(
                    select(col(Notification.data)).where(
                        col(Notification.person_id) == parent2.member.person_id
                    )
                )
            )
            .scalars()
            .all()
        )
    assert [n["action"] for n in notes] == ["create", "submit"]

    # Narrowed at once: to the holder it is now as if it did not exist.
    async with state.db.session() as session:
        from api.family.models import FamilyLink

        row = await session.get(FamilyLink, link)
        assert row is not None
        row.can_file_on_behalf = False
    body = await other_holder(WITHDRAW, {"id": filed["id"]})
    assert code(body) == "NOT_FOUND"
    assert code(await other_holder(FILING, {"id": filed["id"]})) == "NOT_FOUND"
    denied = await gql.http.get(
        attachment["downloadPath"], headers={"authorization": f"Bearer {other_holder.token}"}
    )
    assert denied.status_code == 404
    # The relative themselves can still withdraw it.
    assert data(await parent2(WITHDRAW, {"id": filed["id"]}))["withdrawFiling"]["status"] == "WITHDRAWN"


async def test_other_residents_do_not_see_a_filing(state: AppState, gql: GraphQLClient) -> None:
    who = await fw.resident(state, gql)
    filing = data(await who(CREATE, create_input("CROSS_REGION", fw.cross_region())))["createFiling"]
    stranger = await fw.resident(state, gql)
    for query, variables in (
        (FILING, {"id": filing["id"]}),
        (SUBMIT, {"id": filing["id"]}),
        (WITHDRAW, {"id": filing["id"]}),
    ):
        assert code(await stranger(query, variables)) == "NOT_FOUND"
    assert data(await stranger(MINE, {}))["myFilings"]["totalCount"] == 0


# ------------------------------------------------------------------- approval changes settlement


async def test_approved_chronic_disease_changes_the_estimate_and_reaches_terminals(
    state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql)
    visit = {
        "category": "chronic_outpatient",
        "facilityLevel": "primary",
        "items": [{"amountFen": 20_000}],
        "usePersonalAccount": False,
    }
    before = await who(ESTIMATE, {"input": visit})
    assert code(before) == "BAD_USER_INPUT"  # no recognised disease yet
    filing = await fw.submitted(state, who, "CHRONIC_DISEASE", fw.chronic(diseaseCode="copd"))
    result = await fw.through_stages(await reviewers(state, gql, 2), filing["id"])
    assert result["status"] == "APPROVED"
    after = data(await who(ESTIMATE, {"input": visit}))["estimateSettlement"]
    assert (
        after["basicRatioPermille"] == 750 and after["basicFen"] == 15_000
    )  # 门诊慢特病 75% at a township centre
    async with state.db.session() as session:
        person = await session.get(InsuredPerson, who.member.person_id)
        assert person is not None and person.chronic_diseases == ["copd"]
        from api.replication.models import ChangeLogEntry

        entries = (
            (
                await session.execute(
                    select(col(ChangeLogEntry.scope)).where(
                        col(ChangeLogEntry.entity) == "person",
                        col(ChangeLogEntry.entity_id) == str(who.member.person_id),
                    )
                )
            )
            .scalars()
            .all()
        )
    assert f"person:{who.member.person_id}" in entries


async def test_approved_cross_region_registration_makes_visits_there_registered(
    state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql)
    visit = {
        "category": "general_outpatient",
        "facilityLevel": "tertiary",
        "visitRegion": "310104",
        "items": [{"amountFen": 50_000}],
        "usePersonalAccount": False,
    }
    before = data(await who(ESTIMATE, {"input": visit}))["estimateSettlement"]
    assert any("未备案" in line for line in before["lines"])
    fields = fw.cross_region(
        destinationRegion="310000", startOn=fw.days(-5), endOn=fw.days(30)
    )  # all of 上海
    filing = data(await who(CREATE, create_input("CROSS_REGION", fields, submit=True)))["createFiling"]
    await fw.through_stages(await reviewers(state, gql, 2), filing["id"])
    after = data(await who(ESTIMATE, {"input": visit}))["estimateSettlement"]
    assert any("已备案" in line for line in after["lines"])
    assert (
        after["basicRatioPermille"] == before["basicRatioPermille"] + 200
    )  # no 20-point cut for unregistered care
    assert after["insuranceFen"] > before["insuranceFen"]
    # Outside the period, or elsewhere, it is still unregistered; at home it is local.
    later = data(await who(ESTIMATE, {"input": {**visit, "visitDate": fw.days(31)}}))["estimateSettlement"]
    assert later["basicRatioPermille"] == before["basicRatioPermille"]
    elsewhere = data(await who(ESTIMATE, {"input": {**visit, "visitRegion": "320102"}}))["estimateSettlement"]
    assert elsewhere["basicRatioPermille"] == before["basicRatioPermille"]
    home = data(await who(ESTIMATE, {"input": {**visit, "visitRegion": "340421"}}))["estimateSettlement"]
    assert any("参保地就医" in line for line in home["lines"])
    assert code(await who(ESTIMATE, {"input": {**visit, "visitRegion": "31"}})) == "BAD_USER_INPUT"


# ---------------------------------------------------------------------------- PostgreSQL races


@pytest.mark.postgres
async def test_two_reviewers_claiming_at_once_one_wins(state: AppState, gql: GraphQLClient) -> None:
    if not state.db.is_postgres:
        pytest.skip("concurrent claims on real PostgreSQL connections")
    who = await fw.resident(state, gql)
    staff = await reviewers(state, gql, 6)
    for _ in range(5):
        filing = data(await who(CREATE, create_input("CROSS_REGION", fw.cross_region(), submit=True)))[
            "createFiling"
        ]
        viewers = [Viewer(r.member.account_id or 0, Role.REVIEWER, "s", r.member.person_id) for r in staff]

        async def take(viewer: Viewer, filing_id: str = filing["id"]) -> str:
            async with state.db.sessionmaker() as session:  # each its own connection and transaction
                try:
                    await service.claim(session, viewer, filing_id)
                except Exception as exc:  # the loser's CONFLICT
                    return type(exc).__name__
                return "claimed"

        outcomes = await asyncio.gather(*(take(v) for v in viewers))
        assert sorted(outcomes) == ["Conflict"] * 5 + ["claimed"], outcomes
        async with state.db.session() as session:
            row = await session.get(Filing, int(filing["id"]))
            assert row is not None and row.claimed_by_account_id in {v.account_id for v in viewers}
