"""Issue 11, the gaps left after the first build: the locality a settlement computes with is the
server's (facility region + approved 异地就医备案), on estimateSettlement and on a terminal's push;
conflicts of interest beyond the reviewer's own links; the payment stage's audited reveal of the bank
account; the index behind "claimed by me"; and what an attacker tried."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import text, update
from sqlmodel import col

from api.auth.models import Role
from api.auth.service import Viewer
from api.family.models import FamilyLink, LinkStatus, Permission
from api.filings import calendar, service
from api.pagination import SHANGHAI
from api.people.models import Facility
from api.state import AppState
from tests.api import familyworld as world
from tests.api import filingworld as fw
from tests.api.filingworld import CLAIM, CREATE, create_input, data
from tests.conftest import GraphQLClient

ESTIMATE = """query($input: EstimateSettlementInput!) { estimateSettlement(input: $input) {
  insuranceFen basicFen basicRatioPermille cashFen lines } }"""


def code(body: dict[str, Any]) -> str:
    codes = {e.get("extensions", {}).get("code") for e in body.get("errors", [])}
    assert len(codes) == 1, body
    return str(codes.pop())


def field_of(body: dict[str, Any]) -> str | None:
    return body["errors"][0].get("extensions", {}).get("field")


async def reviewers(state: AppState, gql: GraphQLClient, n: int) -> list[fw.Resident]:
    return [await fw.reviewer(state, gql) for _ in range(n)]


async def hospital(state: AppState, region: str, level: str = "tertiary") -> Facility:
    async with state.db.session() as session:
        row = Facility(
            code=f"H{uuid.uuid4().hex[:12]}",
            name="测试异地医院",
            level=level,
            kind="hospital",
            region_code=region,
        )
        session.add(row)
        await session.flush()
        return row


async def registered(state: AppState, gql: GraphQLClient, who: fw.Resident, region: str) -> None:
    fields = fw.cross_region(destinationRegion=region, startOn=fw.days(-5), endOn=fw.days(30))
    filing = data(await who(CREATE, create_input("CROSS_REGION", fields, submit=True)))["createFiling"]
    assert (await fw.through_stages(await reviewers(state, gql, 2), filing["id"]))["status"] == "APPROVED"


# ------------------------------------------------------------------------------------ locality


async def test_estimate_takes_the_locality_from_the_facility_and_the_registrations(
    state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql)
    shanghai = await hospital(state, "310104")
    visit = {
        "category": "general_outpatient",
        "facilityId": str(shanghai.id),
        "items": [{"amountFen": 50_000}],
        "usePersonalAccount": False,
    }
    # A hospital in another pooling area, no registration: unregistered, whatever the client says.
    before = data(await who(ESTIMATE, {"input": visit}))["estimateSettlement"]
    assert any("未备案" in line for line in before["lines"]), before["lines"]
    claimed = await who(ESTIMATE, {"input": {**visit, "locality": "registered"}})
    assert code(claimed) == "BAD_USER_INPUT" and field_of(claimed) == "input.locality"
    # Nor can a bare level claim registered care the server cannot see.
    bare = {**visit, "facilityId": None, "facilityLevel": "tertiary", "locality": "registered"}
    bare = {k: v for k, v in bare.items() if v is not None}
    assert field_of(await who(ESTIMATE, {"input": bare})) == "input.locality"
    # The facility's region is where the visit is: another visitRegion contradicts it.
    other = await who(ESTIMATE, {"input": {**visit, "visitRegion": "340421"}})
    assert code(other) == "BAD_USER_INPUT" and field_of(other) == "input.visitRegion"

    await registered(state, gql, who, "310000")
    after = data(await who(ESTIMATE, {"input": visit}))["estimateSettlement"]
    assert any("已备案" in line for line in after["lines"]), after["lines"]
    assert after["basicRatioPermille"] == before["basicRatioPermille"] + 200
    # Saying what the server would decide anyway is accepted.
    same = data(await who(ESTIMATE, {"input": {**visit, "locality": "registered"}}))["estimateSettlement"]
    assert same == after


async def test_a_terminal_push_settles_registered_cross_region_care_as_registered(
    state: AppState, gql: GraphQLClient
) -> None:
    from sync.protocol import Bill, SettlementCreate
    from tests.api import test_push as tp

    who = await fw.resident(state, gql)
    nowhere = await fw.resident(state, gql)
    away = await hospital(state, "310104", level="village")
    term = await tp.terminal(state, away)
    at = tp.morning(1)
    day = tp.local_day(at)

    async def settle(person_id: int, locality: str, seq: int) -> str:
        person = await tp.villager(state, None, person_id=person_id)
        split, version = tp.estimate(tp.items(20_000), day)
        payload = SettlementCreate(
            Bill(day, "general_outpatient", locality, tp.items(20_000), "village", False),
            split,
            version,
            voucher=tp.online_code(state, person, at),
        ).to_payload()
        answer = await tp.run(state, term, [tp.mutation(seq, payload, at)])
        assert answer["results"][0]["status"] in ("applied", "adjusted"), answer
        [row] = await tp.settlements_of(state, person_id)
        return row.visit_scope

    await registered(state, gql, who, "310104")
    # The terminal said "unregistered"; the server knows of the approved registration.
    assert await settle(who.member.person_id, "unregistered", 1) == "registered"
    # And a terminal's "registered" for someone without one is not believed.
    assert await settle(nowhere.member.person_id, "registered", 2) == "unregistered"


# ----------------------------------------------------------------------------------- the queue


async def test_claimed_by_me_is_a_range_scan_of_the_claimer_index(state: AppState) -> None:
    # The bench's slowest PostgreSQL scenario walked ix_filings_queue_due filtering on the claimer.
    viewer = Viewer(1, Role.REVIEWER, "s", None)
    flt = service.QueueFilter(claimed="mine")
    statement = service.queue_statement(service.queue_filters(flt, viewer, fw.today()), (fw.today(), 1), 20)
    async with state.db.session() as session:
        assert session.bind is not None
        dialect = session.bind.dialect
        sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        if state.db.is_postgres:
            await session.execute(text("SET LOCAL enable_seqscan = off"))
            plan = "\n".join((await session.execute(text("EXPLAIN " + sql))).scalars())
        else:
            plan = "\n".join(str(row[3]) for row in await session.execute(text("EXPLAIN QUERY PLAN " + sql)))
    assert "ix_filings_queue_claimer_due" in plan, plan


# -------------------------------------------------------------------------- conflicts of interest


async def test_a_reviewer_is_recused_from_in_laws_and_from_relatives_whose_link_ended(
    state: AppState, gql: GraphQLClient
) -> None:
    staff = await fw.reviewer(state, gql)
    spouse = await fw.resident(state, gql)  # another household
    mother_in_law = await fw.resident(state, gql, age=68)  # a third one
    await world.link(state, staff.member, spouse.member, {Permission.READ_RECORDS})
    await world.link(state, spouse.member, mother_in_law.member, {Permission.FILE_ON_BEHALF})
    theirs = data(await mother_in_law(CREATE, create_input("CROSS_REGION", fw.cross_region(), submit=True)))
    body = await staff(CLAIM, {"id": theirs["createFiling"]["id"]})
    assert code(body) == "FORBIDDEN" and body["errors"][0]["extensions"]["reason"] == "family_filing"

    # Unlinking ends the sharing of data, not the kinship: a former link still recuses.
    son = await fw.resident(state, gql, age=18)
    link_id = await world.link(state, staff.member, son.member, {Permission.READ_RECORDS})
    async with state.db.session() as session:
        await session.execute(
            update(FamilyLink)
            .where(col(FamilyLink.id) == link_id)
            .values(status=LinkStatus.REMOVED.value, pair_key=None)
        )
    filing = data(await son(CREATE, create_input("CROSS_REGION", fw.cross_region(), submit=True)))
    body = await staff(CLAIM, {"id": filing["createFiling"]["id"]})
    assert code(body) == "FORBIDDEN" and body["errors"][0]["extensions"]["reason"] == "family_filing"

    # A stranger's filing is the reviewer's to take.
    stranger = await fw.resident(state, gql)
    other = data(await stranger(CREATE, create_input("CROSS_REGION", fw.cross_region(), submit=True)))
    data(await staff(CLAIM, {"id": other["createFiling"]["id"]}))


# ------------------------------------------------------------------------------- the payout


REVEAL = """mutation($id: ID!) { revealFilingBankAccount(id: $id) { bankName accountName accountNumber } }"""
AUDIT = """query { accessAudit(first: 50) { edges { node { action detail actorName actorRole } } } }"""


async def test_the_payment_stage_sees_the_whole_account_and_every_reveal_is_audited(
    state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql)
    filing = await fw.submitted(state, who, "REIMBURSEMENT")
    first, second, payer, other = await reviewers(state, gql, 4)
    # Before the payment stage no one sees more than the mask, not even the stage's own reviewer.
    data(await first(fw.CLAIM, {"id": filing["id"]}))
    body = await first(REVEAL, {"id": filing["id"]})
    assert code(body) == "FORBIDDEN" and body["errors"][0]["extensions"]["reason"] == "not_payment_stage"
    data(await first(fw.DECIDE, {"id": filing["id"], "decision": "APPROVE"}))
    data(await second(fw.CLAIM, {"id": filing["id"]}))
    data(await second(fw.DECIDE, {"id": filing["id"], "decision": "APPROVE"}))
    # At the payment stage: only the reviewer who claimed it.
    body = await payer(REVEAL, {"id": filing["id"]})
    assert code(body) == "FORBIDDEN" and body["errors"][0]["extensions"]["reason"] == "not_claimed"
    data(await payer(fw.CLAIM, {"id": filing["id"]}))
    assert code(await other(REVEAL, {"id": filing["id"]})) == "FORBIDDEN"
    assert code(await who(REVEAL, {"id": filing["id"]})) == "FORBIDDEN"  # residents never
    revealed = data(await payer(REVEAL, {"id": filing["id"]}))["revealFilingBankAccount"]
    assert revealed == {
        "bankName": fw.bank()["bankName"],
        "accountName": fw.bank()["accountName"],
        "accountNumber": fw.bank()["accountNumber"],
    }
    # The resident's answers stay masked; the reveal is in their access audit: who, when, which filing.
    mine = data(await who(fw.FILING, {"id": filing["id"]}))["filing"]
    assert "accountNumber" not in mine["fields"]["bankAccount"]
    assert mine["fields"]["bankAccount"]["accountNumberMasked"].endswith("6789")
    assert fw.bank()["accountNumber"] not in str(mine)
    audit = [e["node"] for e in data(await who(AUDIT))["accessAudit"]["edges"]]
    reveals = [e for e in audit if e["action"] == "reveal:bank_account"]
    assert len(reveals) == 1, audit
    assert reveals[0]["actorRole"] == "reviewer" and f"filing {filing['id']}" in reveals[0]["detail"]
    # Once paid (approved), the account is no one's to read again.
    data(await payer(fw.DECIDE, {"id": filing["id"], "decision": "APPROVE"}))
    body = await payer(REVEAL, {"id": filing["id"]})
    assert code(body) == "FORBIDDEN"


# -------------------------------------------------------------------------------- what an attacker tried


async def test_a_reviewer_with_a_second_login_cannot_decide_the_next_stage(
    state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql)
    staff = await fw.reviewer(state, gql)
    async with state.db.session() as session:
        _, token = await world._account(session, state, Role.REVIEWER, staff.member.person_id)
    filing = data(await who(CREATE, create_input("CROSS_REGION", fw.cross_region(), submit=True)))
    filing_id = filing["createFiling"]["id"]
    data(await staff(CLAIM, {"id": filing_id}))
    data(await staff(fw.DECIDE, {"id": filing_id, "decision": "APPROVE"}))
    body = await gql(CLAIM, {"id": filing_id}, token=token)
    assert code(body) == "FORBIDDEN" and body["errors"][0]["extensions"]["reason"] == "second_stage"


def test_spring_festival_deadlines_count_the_make_up_saturdays() -> None:
    # 2026: 15-23 February off; Saturdays 14 and 28 February are make-up working days.
    assert calendar.add_working_days(dt.date(2026, 2, 13), 1).due_on == dt.date(2026, 2, 14)
    assert calendar.add_working_days(dt.date(2026, 2, 13), 2).due_on == dt.date(2026, 2, 24)
    assert calendar.add_working_days(dt.date(2026, 2, 16), 3).due_on == dt.date(2026, 2, 26)
    assert calendar.add_working_days(dt.date(2026, 2, 26), 2).due_on == dt.date(2026, 2, 28)
    assert calendar.working_days_between(dt.date(2026, 2, 13), dt.date(2026, 2, 24)) == 2


async def test_a_filing_submitted_before_spring_festival_is_due_after_it(
    state: AppState, gql: GraphQLClient
) -> None:
    # Submitted on Friday 13 February 2026 (Shanghai): 初审 3 working days = 14 (a make-up Saturday),
    # 24 and 25 February; the days of the festival do not count, nor does the day of receipt.
    who = await fw.resident(state, gql)
    viewer = Viewer(who.member.account_id or 0, Role.RESIDENT, "s", who.member.person_id)
    at = dt.datetime(2026, 2, 13, 9, tzinfo=SHANGHAI).astimezone(dt.UTC)
    fields = fw.cross_region(startOn="2026-02-13", endOn="2026-04-13")
    async with state.db.sessionmaker() as session:
        filing = await service.create(
            session,
            state.bank_accounts,
            viewer,
            client_id=str(uuid.uuid4()),
            kind_code="cross_region",
            fields=fields,
            submit_now=True,
            now=at,
        )
    assert (filing.stage, filing.due_on, filing.due_estimated) == (
        "first_review",
        dt.date(2026, 2, 25),
        False,
    )


async def test_a_resident_probing_other_filings_and_attachments_learns_nothing(
    state: AppState, gql: GraphQLClient
) -> None:
    victim = await fw.resident(state, gql)
    prober = await fw.resident(state, gql)
    theirs = await fw.submitted(state, victim, "REIMBURSEMENT")
    [attachment] = [a for a in theirs["attachments"] if a["material"] == "invoice"]
    own = data(await prober(CREATE, create_input("CROSS_REGION", fw.cross_region())))["createFiling"]
    missing = str(int(theirs["id"]) + 10_000)

    def answer(body: dict[str, Any]) -> tuple[str, str]:
        return code(body), body["errors"][0]["message"]

    for filing_id in (theirs["id"], missing):
        seen = {
            answer(await prober(fw.FILING, {"id": filing_id})),
            answer(await prober(fw.SUBMIT, {"id": filing_id, "changes": {"visits": []}})),
            answer(await prober(fw.WITHDRAW, {"id": filing_id})),
        }
        assert seen == {("NOT_FOUND", "未找到该申请")}, seen
        upload = await fw.upload(gql, prober.token, filing_id, "invoice")
        assert upload.status_code == 404
    headers = {"authorization": f"Bearer {prober.token}"}
    for path in (
        attachment["downloadPath"],  # their filing, their attachment
        f"/filings/{own['id']}/attachments/{attachment['id']}",  # my filing, their attachment
    ):
        response = await gql.http.get(path, headers=headers)
        assert response.status_code == 404 and fw.PDF not in response.content
    # Their filing is untouched and nothing of the probing is in their audit as an access.
    after = data(await victim(fw.FILING, {"id": theirs["id"]}))["filing"]
    assert after["status"] == "SUBMITTED" and len(after["attachments"]) == len(theirs["attachments"])
    audit = [e["node"] for e in data(await victim(AUDIT))["accessAudit"]["edges"]]
    assert audit == [], audit


async def test_a_resubmission_carries_no_proof_that_was_not_asked_for(
    state: AppState, gql: GraphQLClient
) -> None:
    # Asked to correct the registration type, the filer may upload the proofs another type would need;
    # if the corrected type needs none of them, the resubmission must not carry them.
    who = await fw.resident(state, gql)
    referral = fw.cross_region(registrationType="referral", hospital="复旦大学附属中山医院")
    filing = await fw.submitted(state, who, "CROSS_REGION", referral)
    reviewer = await fw.reviewer(state, gql)
    data(await reviewer(CLAIM, {"id": filing["id"]}))
    missing = [{"code": "registrationType"}]
    data(
        await reviewer(
            fw.DECIDE,
            {"id": filing["id"], "decision": "NEEDS_MATERIALS", "reason": "请核对", "missing": missing},
        )
    )
    uploaded = await fw.upload(gql, who.token, filing["id"], "residence_proof")
    assert uploaded.status_code == 201, uploaded.text
    extra = uploaded.json()["attachment"]
    same = {"registrationType": "referral"}
    body = await who(fw.SUBMIT, {"id": filing["id"], "changes": same})
    assert code(body) == "BAD_USER_INPUT" and field_of(body) == "attachments", body
    assert "异地居住证明" in body["errors"][0]["message"]

    headers = {"authorization": f"Bearer {who.token}"}
    path = f"/filings/{filing['id']}/attachments/{extra['id']}"
    stranger = await fw.resident(state, gql)
    refused = await gql.http.delete(path, headers={"authorization": f"Bearer {stranger.token}"})
    assert refused.status_code == 404
    removed = await gql.http.delete(path, headers=headers)
    assert removed.status_code == 200, removed.text
    assert (await gql.http.get(path, headers=headers)).status_code == 404
    resubmitted = data(await who(fw.SUBMIT, {"id": filing["id"], "changes": same}))["submitFiling"]
    assert resubmitted["status"] == "RESUBMITTED"
    assert extra["id"] not in {a["id"] for a in resubmitted["attachments"]}
    # What was already submitted stays: it is evidence the reviewers saw.
    [letter] = resubmitted["attachments"]
    assert letter["material"] == "referral_letter"
    kept = await gql.http.delete(f"/filings/{filing['id']}/attachments/{letter['id']}", headers=headers)
    assert kept.status_code == 409
