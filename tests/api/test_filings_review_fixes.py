"""Regression tests for five defects a reviewer found in the online filings, through real HTTP:
a resubmission whose changed fields need a new proof, one birth claimed twice, invoices blocked by
drafts, a repeated createFiling after the family link ended, and notices after the link ended."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import select, update
from sqlmodel import col

from api.family.models import AccessAudit, FamilyLink, LinkStatus, Permission
from api.notifications.models import Notification
from api.state import AppState
from tests.api import familyworld as world
from tests.api import filingworld as fw
from tests.api.filingworld import CLAIM, CREATE, DECIDE, SUBMIT, WITHDRAW, create_input, data
from tests.conftest import GraphQLClient, error_codes


async def end_link(state: AppState, link_id: int) -> None:
    async with state.db.session() as session:
        await session.execute(
            update(FamilyLink).where(col(FamilyLink.id) == link_id).values(status=LinkStatus.REMOVED.value)
        )


async def ask_for(reviewer: fw.Resident, filing_id: str, *codes: str) -> None:
    data(await reviewer(CLAIM, {"id": filing_id}))
    data(
        await reviewer(
            DECIDE,
            {
                "id": filing_id,
                "decision": "NEEDS_MATERIALS",
                "reason": "请更正",
                "missing": [{"code": c} for c in codes],
            },
        )
    )


# ------------------------------------------------------- 1. a changed field needing a new proof


async def _resubmission_needs_the_new_proof(
    state: AppState,
    gql: GraphQLClient,
    who: fw.Resident,
    kind: str,
    fields: dict[str, Any],
    asked: tuple[str, ...],
    changes: dict[str, Any],
    material: str,
    label: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    filing = await fw.submitted(state, who, kind, fields)
    assert material not in {m["code"] for m in filing["requiredMaterials"]}
    reviewer = await fw.reviewer(state, gql)
    await ask_for(reviewer, filing["id"], *asked)

    body = await who(SUBMIT, {"id": filing["id"], "changes": changes})
    assert error_codes(body) == ["BAD_USER_INPUT"], body
    assert label in body["errors"][0]["message"]
    assert body["errors"][0]["extensions"]["field"] == "attachments"

    # The proof the change needs may be uploaded while the filing waits for materials, then it goes.
    response = await fw.upload(gql, who.token, filing["id"], material)
    assert response.status_code == 201, response.text
    resubmitted = data(await who(SUBMIT, {"id": filing["id"], "changes": changes}))["submitFiling"]
    assert resubmitted["status"] == "RESUBMITTED"
    assert material in {m["code"] for m in resubmitted["requiredMaterials"]}
    return filing, resubmitted


async def test_a_difficult_birth_changed_on_resubmission_needs_its_proof(
    state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql, employee_woman=True)
    before, after = await _resubmission_needs_the_new_proof(
        state,
        gql,
        who,
        "MATERNITY",
        fw.maternity(),
        ("difficultBirth",),
        {"difficultBirth": True},
        "difficult_birth_proof",
        "难产证明",
    )
    assert after["amountFen"] > before["amountFen"]


async def test_a_referral_changed_on_resubmission_needs_its_letter(
    state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql)
    await _resubmission_needs_the_new_proof(
        state,
        gql,
        who,
        "CROSS_REGION",
        fw.cross_region(),
        ("registrationType", "hospital"),
        {"registrationType": "referral", "hospital": "复旦大学附属中山医院"},
        "referral_letter",
        "转诊转院证明",
    )


async def test_an_inpatient_visit_changed_on_resubmission_needs_its_discharge_summary(
    state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql)
    original = fw.visit()
    await _resubmission_needs_the_new_proof(
        state,
        gql,
        who,
        "REIMBURSEMENT",
        fw.reimbursement(visits=[original]),
        ("visits",),
        {"visits": [{**original, "category": "inpatient"}]},
        "discharge_summary",
        "出院",
    )


async def test_an_unrelated_material_is_still_refused_while_materials_are_asked_for(
    state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql, employee_woman=True)
    filing = await fw.submitted(state, who, "MATERNITY", fw.maternity())
    await ask_for(await fw.reviewer(state, gql), filing["id"], "babies")
    response = await fw.upload(gql, who.token, filing["id"], "difficult_birth_proof")
    assert response.status_code == 422, response.text


# ------------------------------------------------------------------ 2. one birth, one allowance


async def test_one_birth_is_claimed_once_until_its_filing_ends(state: AppState, gql: GraphQLClient) -> None:
    who = await fw.resident(state, gql, employee_woman=True)
    first = data(await who(CREATE, create_input("MATERNITY", fw.maternity())))["createFiling"]
    again = await who(CREATE, create_input("MATERNITY", fw.maternity(employer="另一单位")))
    assert error_codes(again) == ["CONFLICT"], again
    assert again["errors"][0]["extensions"]["reason"] == "birth_claimed"
    # Another person's birth on the same day is theirs to claim.
    other = await fw.resident(state, gql, employee_woman=True)
    data(await other(CREATE, create_input("MATERNITY", fw.maternity())))
    # Freed when the filing ends without payment.
    data(await who(WITHDRAW, {"id": first["id"]}))
    data(await who(CREATE, create_input("MATERNITY", fw.maternity())))


async def test_one_birth_filed_twice_at_once_is_taken_once(state: AppState, gql: GraphQLClient) -> None:
    who = await fw.resident(state, gql, employee_woman=True)
    bodies = await asyncio.gather(
        *(who(CREATE, create_input("MATERNITY", fw.maternity(babies=n))) for n in (1, 2, 3))
    )
    outcomes = sorted("ok" if "errors" not in b else error_codes(b)[0] for b in bodies)
    assert outcomes == ["CONFLICT"] * 2 + ["ok"], bodies


async def test_a_resubmission_may_not_move_a_filing_onto_a_claimed_birth(
    state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql, employee_woman=True)
    await fw.submitted(state, who, "MATERNITY", fw.maternity())
    other = await fw.submitted(state, who, "MATERNITY", fw.maternity(deliveryDate=fw.days(-31)))
    await ask_for(await fw.reviewer(state, gql), other["id"], "deliveryDate")
    body = await who(SUBMIT, {"id": other["id"], "changes": {"deliveryDate": fw.days(-30)}})
    assert error_codes(body) == ["CONFLICT"], body


# --------------------------------------------------------------------- 3. drafts hold no invoice


async def test_a_draft_holds_no_invoice_and_a_refusal_says_nothing_of_the_other_filing(
    state: AppState, gql: GraphQLClient
) -> None:
    shared = fw.visit()
    squatter = await fw.resident(state, gql)
    squat = data(await squatter(CREATE, create_input("REIMBURSEMENT", fw.reimbursement(visits=[shared]))))[
        "createFiling"
    ]
    owner = await fw.resident(state, gql)
    mine = await fw.submitted(state, owner, "REIMBURSEMENT", fw.reimbursement(visits=[shared]))
    assert mine["status"] == "SUBMITTED"

    for material in squat["requiredMaterials"]:
        assert (await fw.upload(gql, squatter.token, squat["id"], material["code"])).status_code == 201
    body = await squatter(SUBMIT, {"id": squat["id"]})
    assert error_codes(body) == ["CONFLICT"], body
    message = body["errors"][0]["message"]
    assert "其他申请" not in message and "已提交" in message
    assert mine["id"] not in str(body)
    again = await squatter(CREATE, create_input("REIMBURSEMENT", fw.reimbursement(visits=[shared])))
    assert error_codes(again) == ["CONFLICT"] and "其他申请" not in again["errors"][0]["message"]

    # Withdrawn, the invoice is free for the next submission.
    data(await owner(WITHDRAW, {"id": mine["id"]}))
    assert data(await squatter(SUBMIT, {"id": squat["id"]}))["submitFiling"]["status"] == "SUBMITTED"


# ---------------------------------------------------- 4. a repeated create after the link ended


async def test_a_repeated_create_is_authorised_like_a_fresh_one_and_audited(
    state: AppState, gql: GraphQLClient
) -> None:
    holder = await fw.resident(state, gql)
    parent = await fw.resident(state, gql, age=78)
    link = await world.link(state, holder.member, parent.member, set(Permission))
    request = create_input("CHRONIC_DISEASE", fw.chronic(), linkId=str(link))
    filed = data(await holder(CREATE, request))["createFiling"]
    assert data(await holder(CREATE, request))["createFiling"]["id"] == filed["id"]
    async with state.db.session() as session:
        audited = (
            (
                await session.execute(
                    select(col(AccessAudit.action)).where(
                        col(AccessAudit.link_id) == link, col(AccessAudit.action) == "filing:create"
                    )
                )
            )
            .scalars()
            .all()
        )
    assert len(audited) == 2  # the repeat read the filing, and is on the relative's record

    await end_link(state, link)
    body = await holder(CREATE, request)
    assert error_codes(body) == ["FORBIDDEN"], body


# ------------------------------------------------------ 5. notices to the holder while linked only


async def _notices(state: AppState, person_id: int, filing_id: str) -> list[tuple[str, str]]:
    async with state.db.session() as session:
        rows = (
            await session.execute(select(Notification).where(col(Notification.person_id) == person_id))
        ).scalars()
        return [(n.data["action"], n.body) for n in rows if n.data.get("filingId") == filing_id]


async def test_the_holder_hears_of_the_relatives_filing_only_while_linked_and_as_theirs(
    state: AppState, gql: GraphQLClient
) -> None:
    holder = await fw.resident(state, gql)
    parent = await fw.resident(state, gql, age=78)
    link = await world.link(state, holder.member, parent.member, set(Permission))
    filed = data(await holder(CREATE, create_input("CHRONIC_DISEASE", fw.chronic(), linkId=str(link))))[
        "createFiling"
    ]
    for material in filed["requiredMaterials"]:
        assert (await fw.upload(gql, holder.token, filed["id"], material["code"])).status_code == 201
    data(await holder(SUBMIT, {"id": filed["id"]}))
    reviewer = await fw.reviewer(state, gql)
    data(await reviewer(CLAIM, {"id": filed["id"]}))

    heard = await _notices(state, holder.member.person_id, filed["id"])
    assert [action for action, _ in heard] == ["claim"]
    assert heard[0][1].startswith(f"您为{parent.member.name}") and "您的" not in heard[0][1]
    theirs = await _notices(state, parent.member.person_id, filed["id"])
    assert theirs[-1][0] == "claim" and theirs[-1][1].startswith("您的")

    await end_link(state, link)
    data(await reviewer(DECIDE, {"id": filed["id"], "decision": "REJECT", "reason": "材料不符"}))
    assert [action for action, _ in await _notices(state, holder.member.person_id, filed["id"])] == ["claim"]
    assert (await _notices(state, parent.member.person_id, filed["id"]))[-1][0] == "reject"
