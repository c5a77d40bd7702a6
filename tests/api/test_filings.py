"""Online filings (issue 11 items 1 and 6) through real GraphQL requests: each kind's typed fields and
their validation, idempotent create and submit, what approval changes in estimateSettlement."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from sqlalchemy import select
from sqlmodel import col

from api.filings import calendar
from api.filings.kinds.chronic_disease import catalogue
from api.filings.kinds.maternity import allowance_fen, leave_days
from api.filings.models import Filing
from api.people.models import InsuredPerson
from api.replication.models import ChangeLogEntry
from api.state import AppState
from tests.api import filingworld as fw
from tests.api.filingworld import CREATE, SUBMIT, create_input, data
from tests.conftest import GraphQLClient, error_codes


def bad_input(body: dict[str, Any]) -> str:
    assert error_codes(body) == ["BAD_USER_INPUT"], body
    return str(body["errors"][0]["extensions"]["field"])


# ------------------------------------------------------------------------- kinds and catalogue


async def test_kinds_describe_their_fields_materials_and_stages(gql: GraphQLClient) -> None:
    kinds = data(
        await gql(
            "{ filingKinds { code label fields materials { code label } stages { code limitWorkingDays } sources } }"
        )
    )["filingKinds"]
    by_code = {k["code"]: k for k in kinds}
    assert set(by_code) == {"CROSS_REGION", "CHRONIC_DISEASE", "REIMBURSEMENT", "MATERNITY"}
    assert [s["code"] for s in by_code["REIMBURSEMENT"]["stages"]] == [
        "first_review",
        "second_review",
        "payment",
    ]
    assert [s["code"] for s in by_code["CROSS_REGION"]["stages"]] == ["first_review", "second_review"]
    names = {f["name"] for f in by_code["MATERNITY"]["fields"]["fields"]}
    assert {"averageMonthlyWageFen", "leaveStart", "difficultBirth", "babies", "bankAccount"} <= names
    assert any("第七条" in s for s in by_code["MATERNITY"]["sources"])


async def test_the_catalogue_has_80_plus_diseases_and_the_codes_people_carry(
    gql: GraphQLClient, state: AppState
) -> None:
    rows = data(await gql("{ chronicDiseaseCatalogue { code name category categoryLabel } }"))[
        "chronicDiseaseCatalogue"
    ]
    assert len(rows) >= 80 and len({r["code"] for r in rows}) == len(rows)
    assert {r["category"] for r in rows} == {"chronic", "special"}
    # Every code a person already carries (the demo county, loaded by the engine's own settlements) is in it.
    async with state.db.session() as session:
        carried = {
            c
            for row in (await session.execute(select(col(InsuredPerson.chronic_diseases)))).scalars()
            for c in row
        }
    assert carried and carried <= set(catalogue())


# ---------------------------------------------------------------------------- bad input per kind


@pytest.mark.parametrize("kind", ["CROSS_REGION", "CHRONIC_DISEASE", "REIMBURSEMENT", "MATERNITY"])
async def test_every_required_field_missing_is_named(kind: str, state: AppState, gql: GraphQLClient) -> None:
    who = await fw.resident(state, gql, employee_woman=kind == "MATERNITY")
    valid = fw.VALID[kind]()
    for name in valid:
        fields = {k: v for k, v in valid.items() if k != name}
        assert bad_input(await who(CREATE, create_input(kind, fields))) == f"input.fields.{name}", name
    # ... and nested ones (a visit's invoice number, the bank account number)
    if "bankAccount" in valid:
        fields = copy.deepcopy(valid)
        del fields["bankAccount"]["accountNumber"]
        assert (
            bad_input(await who(CREATE, create_input(kind, fields)))
            == "input.fields.bankAccount.accountNumber"
        )
    if kind == "REIMBURSEMENT":
        fields = copy.deepcopy(valid)
        del fields["visits"][0]["invoiceNumber"]
        assert (
            bad_input(await who(CREATE, create_input(kind, fields))) == "input.fields.visits[0].invoiceNumber"
        )


WRONG_TYPES: dict[str, list[tuple[str, Any]]] = {
    "CROSS_REGION": [
        ("registrationType", "holiday"),
        ("destinationRegion", 310104),
        ("destinationRegion", "31010"),
        ("startOn", "2026/10/01"),
        ("endOn", "2026-02-30"),
        ("reason", ["x"]),
    ],
    "CHRONIC_DISEASE": [
        ("diseaseCode", "flu"),
        ("diagnosedOn", 20260101),
        ("diagnosingHospital", True),
        ("evidence", ""),
    ],
    "REIMBURSEMENT": [
        ("visits", {"visitDate": "2026-01-01"}),
        ("visits", []),
        ("bankAccount", "6228480000123456789"),
    ],
    "MATERNITY": [
        ("averageMonthlyWageFen", 6000.5),
        ("averageMonthlyWageFen", "600000"),
        ("averageMonthlyWageFen", True),
        ("difficultBirth", "no"),
        ("babies", 0),
        ("babies", 1.0),
        ("leaveStart", "yesterday"),
    ],
}


@pytest.mark.parametrize("kind", list(WRONG_TYPES))
async def test_wrongly_typed_fields_are_refused_naming_the_field(
    kind: str, state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql, employee_woman=kind == "MATERNITY")
    for name, value in WRONG_TYPES[kind]:
        fields = {**fw.VALID[kind](), name: value}
        assert bad_input(await who(CREATE, create_input(kind, fields))) == f"input.fields.{name}", (
            name,
            value,
        )
    unknown = {**fw.VALID[kind](), "surprise": 1}
    assert bad_input(await who(CREATE, create_input(kind, unknown))) == "input.fields.surprise"
    assert bad_input(await who(CREATE, create_input(kind, "not an object"))) == "input.fields"


async def test_reimbursement_amounts_are_integer_fen_and_must_add_up(
    state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql)
    float_item = fw.visit(items=[{"name": "检查费", "amountFen": 100.5, "itemClass": "class_a"}])
    float_item["invoiceAmountFen"] = 100
    assert bad_input(
        await who(CREATE, create_input("REIMBURSEMENT", fw.reimbursement(visits=[float_item])))
    ) == ("input.fields.visits[0].items[0].amountFen")
    for amount in (0, -100, 100_000_001):  # positive, and at most 1,000,000 yuan an amount
        huge = fw.visit(items=[{"name": "检查费", "amountFen": amount, "itemClass": "class_a"}])
        huge["invoiceAmountFen"] = 100
        body = await who(CREATE, create_input("REIMBURSEMENT", fw.reimbursement(visits=[huge])))
        assert bad_input(body) == "input.fields.visits[0].items[0].amountFen", amount
    mismatch = fw.visit()
    mismatch["invoiceAmountFen"] += 1
    assert bad_input(
        await who(CREATE, create_input("REIMBURSEMENT", fw.reimbursement(visits=[mismatch])))
    ) == ("input.fields.visits[0].invoiceAmountFen")
    same = fw.visit()
    twice = fw.reimbursement(visits=[same, {**fw.visit(), "invoiceNumber": same["invoiceNumber"]}])
    assert (
        bad_input(await who(CREATE, create_input("REIMBURSEMENT", twice)))
        == "input.fields.visits[1].invoiceNumber"
    )
    future = fw.visit(visitDate=fw.days(1))
    assert bad_input(await who(CREATE, create_input("REIMBURSEMENT", fw.reimbursement(visits=[future])))) == (
        "input.fields.visits[0].visitDate"
    )


async def test_date_ranges_backwards_or_too_long_are_refused(state: AppState, gql: GraphQLClient) -> None:
    who = await fw.resident(state, gql)
    backwards = fw.cross_region(startOn=fw.days(10), endOn=fw.days(9))
    assert bad_input(await who(CREATE, create_input("CROSS_REGION", backwards))) == "input.fields.endOn"
    too_long = fw.cross_region(startOn=fw.days(0), endOn=fw.days(366))  # 367 days for a temporary trip
    assert bad_input(await who(CREATE, create_input("CROSS_REGION", too_long))) == "input.fields.endOn"
    long_term = fw.cross_region(registrationType="long_term_residence", endOn=fw.days(700))
    assert "errors" not in await who(CREATE, create_input("CROSS_REGION", long_term))
    referral = fw.cross_region(registrationType="referral")
    assert bad_input(await who(CREATE, create_input("CROSS_REGION", referral))) == "input.fields.hospital"
    at_home = fw.cross_region(destinationRegion="340402")  # same city (淮南): no registration needed
    assert (
        bad_input(await who(CREATE, create_input("CROSS_REGION", at_home)))
        == "input.fields.destinationRegion"
    )

    mother = await fw.resident(state, gql, employee_woman=True)
    delivered_before_leave = fw.maternity(leaveStart=fw.days(-10), deliveryDate=fw.days(-11))
    assert (
        bad_input(await mother(CREATE, create_input("MATERNITY", delivered_before_leave)))
        == "input.fields.deliveryDate"
    )
    prenatal_too_long = fw.maternity(
        leaveStart=fw.days(-40), deliveryDate=fw.days(-24)
    )  # 16 days before birth
    assert (
        bad_input(await mother(CREATE, create_input("MATERNITY", prenatal_too_long)))
        == "input.fields.leaveStart"
    )


async def test_maternity_needs_an_insured_employee_who_gave_birth(
    state: AppState, gql: GraphQLClient
) -> None:
    resident_insured = await fw.resident(state, gql, gender="F")
    assert (
        bad_input(await resident_insured(CREATE, create_input("MATERNITY", fw.maternity()))) == "input.kind"
    )


# ------------------------------------------------------------------------------ computations


def test_maternity_allowance_follows_the_regulation_and_rounds_half_up() -> None:
    assert leave_days(False, 1) == 98
    assert leave_days(True, 1) == 113
    assert leave_days(True, 3) == 143  # +15 difficult birth, +15 for each of two extra babies
    assert allowance_fen(600_000, 98) == 1_960_000  # 6,000 yuan ÷ 30 × 98 = 19,600 yuan
    assert allowance_fen(100, 1) == 3  # 3.333… fen -> 3
    assert allowance_fen(45, 1) == 2  # 1.5 fen -> 2 (half up)


async def test_maternity_allowance_is_computed_on_create(state: AppState, gql: GraphQLClient) -> None:
    mother = await fw.resident(state, gql, employee_woman=True)
    fields = fw.maternity(averageMonthlyWageFen=612_345, difficultBirth=True, babies=2)
    filing = data(await mother(CREATE, create_input("MATERNITY", fields)))["createFiling"]
    assert filing["computation"]["leaveDays"] == 98 + 15 + 15
    assert filing["amountFen"] == allowance_fen(612_345, 128) == (612_345 * 128 * 2 + 30) // 60
    assert filing["fields"]["bankAccount"] == {
        "bankName": "中国农业银行凤台支行",
        "accountName": "测试",
        "accountNumberMasked": "***************6789",
    }
    assert "6228480000123456789" not in json.dumps(filing)
    async with state.db.session() as session:
        row = await session.get(Filing, int(filing["id"]))
        assert row is not None and row.bank_account_cipher is not None
        assert b"6228480000123456789" not in row.bank_account_cipher
        assert state.bank_accounts.decrypt(row.bank_account_cipher) == "6228480000123456789"


async def test_reimbursement_payable_comes_from_the_engine_with_the_year_so_far(
    state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql)
    items = [{"name": "门诊检查费", "amountFen": 30_000, "itemClass": "class_a"}]
    first, second = (
        fw.visit(items=items, visitDate=fw.days(-20)),
        fw.visit(items=items, visitDate=fw.days(-10)),
    )
    estimate = (
        """query($input: EstimateSettlementInput!) { estimateSettlement(input: $input) { insuranceFen } }"""
    )
    request = {
        "category": "general_outpatient",
        "facilityLevel": "tertiary",
        "visitDate": fw.days(-20),
        "visitRegion": "310104",
        "usePersonalAccount": False,
        "items": [{"amountFen": 30_000}],
    }
    alone = data(await who(estimate, {"input": request}))["estimateSettlement"]["insuranceFen"]
    filing = data(await who(CREATE, create_input("REIMBURSEMENT", fw.reimbursement(visits=[second, first]))))[
        "createFiling"
    ]
    per_visit = {v["index"]: v for v in filing["computation"]["visits"]}
    assert per_visit[1]["payableFen"] == alone  # the earlier visit, priced first
    assert per_visit[0]["payableFen"] > alone  # the later one: the year's deductible was used by the first
    assert filing["amountFen"] == per_visit[0]["payableFen"] + per_visit[1]["payableFen"]
    assert per_visit[0]["locality"] == "unregistered"


# ------------------------------------------------------------------------------- idempotency


async def test_a_repeated_create_returns_the_same_filing_and_a_changed_one_conflicts(
    state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql)
    request = create_input("CROSS_REGION", fw.cross_region())
    first = data(await who(CREATE, request))["createFiling"]
    again = data(await who(CREATE, request))["createFiling"]
    assert again["id"] == first["id"] and again["clientId"] == request["input"]["clientId"]
    changed = copy.deepcopy(request)
    changed["input"]["fields"]["reason"] = "另一个原因"
    body = await who(CREATE, changed)
    assert error_codes(body) == ["CONFLICT"] and body["errors"][0]["extensions"]["field"] == "input.clientId"
    # Someone else reusing the id learns nothing about the filing.
    other = await fw.resident(state, gql)
    body = await other(CREATE, request)
    assert error_codes(body) == ["CONFLICT"] and body["data"] is None
    async with state.db.session() as session:
        count = (
            await session.execute(
                select(col(Filing.id)).where(col(Filing.client_id) == request["input"]["clientId"])
            )
        ).all()
    assert len(count) == 1
    assert bad_input(
        await who(CREATE, create_input("CROSS_REGION", fw.cross_region(), clientId="not-a-uuid"))
    ) == ("input.clientId")


async def test_concurrent_repeats_of_one_create_make_one_filing(state: AppState, gql: GraphQLClient) -> None:
    import asyncio

    who = await fw.resident(state, gql)
    request = create_input("CROSS_REGION", fw.cross_region())
    bodies = await asyncio.gather(*(who(CREATE, request) for _ in range(4)))
    ids = {data(b)["createFiling"]["id"] for b in bodies}
    assert len(ids) == 1
    async with state.db.session() as session:
        rows = (
            await session.execute(
                select(col(Filing.id)).where(col(Filing.client_id) == request["input"]["clientId"])
            )
        ).all()
    assert len(rows) == 1


async def test_submit_needs_the_materials_listed_at_once_and_a_repeat_is_harmless(
    state: AppState, gql: GraphQLClient
) -> None:
    who = await fw.resident(state, gql)
    draft = data(await who(CREATE, create_input("CHRONIC_DISEASE", fw.chronic())))["createFiling"]
    assert draft["status"] == "DRAFT" and {m["code"] for m in draft["requiredMaterials"]} == {
        "diagnosis_proof",
        "medical_record",
    }
    body = await who(SUBMIT, {"id": draft["id"]})
    assert bad_input(body) == "attachments"
    assert set(body["errors"][0]["extensions"]["missing"]) == {
        "诊断证明书",
        "病历或检查报告",
    }  # both, at once
    for code in ("diagnosis_proof", "medical_record"):
        assert (await fw.upload(gql, who.token, draft["id"], code)).status_code == 201
    done = data(await who(SUBMIT, {"id": draft["id"]}))["submitFiling"]
    assert done["status"] == "SUBMITTED" and done["stage"] == "first_review"
    assert done["dueOn"] == calendar.add_working_days(fw.today(), 10).due_on.isoformat()
    again = data(await who(SUBMIT, {"id": draft["id"]}))["submitFiling"]
    assert again["status"] == "SUBMITTED" and [h["action"] for h in again["history"]] == ["create", "submit"]


async def test_create_and_submit_write_the_change_log(state: AppState, gql: GraphQLClient) -> None:
    who = await fw.resident(state, gql)
    filing = data(await who(CREATE, create_input("CROSS_REGION", fw.cross_region(), submit=True)))[
        "createFiling"
    ]
    assert filing["status"] == "SUBMITTED"
    async with state.db.session() as session:
        entries = (
            (
                await session.execute(
                    select(col(ChangeLogEntry.scope)).where(
                        col(ChangeLogEntry.entity) == "filing", col(ChangeLogEntry.entity_id) == filing["id"]
                    )
                )
            )
            .scalars()
            .all()
        )
    assert entries and set(entries) == {f"person:{who.member.person_id}"}


async def test_no_person_no_filing_and_anonymous_is_refused(gql: GraphQLClient) -> None:
    body = await gql(CREATE, create_input("CROSS_REGION", fw.cross_region()))
    assert error_codes(body) == ["UNAUTHENTICATED"]
