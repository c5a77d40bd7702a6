"""Settlement on the server through real GraphQL requests: stored policy versions (seed, list, admin
create and its rules), 预结算 estimates with the real year-to-date totals, and bad input."""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import uuid
from typing import Any

import pytest
from sqlalchemy import delete, func, select
from sqlmodel import col

from api.auth.models import Account
from api.people.models import Facility, InsuredPerson, Settlement
from api.settlement import service
from api.settlement.models import PolicyVersionRow
from api.state import AppState
from sync.settlement import Visit, compute, load_default_policies
from tests.conftest import GraphQLClient, error_codes

VERSIONS = """query($region: String) { policyVersions(region: $region) {
  id region name effectiveFrom effectiveTo tables seeded } }"""
CREATE = """mutation($input: CreatePolicyVersionInput!) { createPolicyVersion(input: $input) {
  id region name effectiveFrom effectiveTo tables seeded } }"""
YTD_FIELDS = """year deductibleUsedFen { category amountFen } basicPaidFen { category amountFen }
  criticalOopFen criticalPaidFen assistanceThresholdUsedFen assistancePaidFen"""
ESTIMATE = f"""query($input: EstimateSettlementInput!) {{ estimateSettlement(input: $input) {{
  policyVersion policyVersionName visitDate insuranceType ageGroup facilityLevel assistanceCategory
  totalFen nonCompliantFen classBSelfPayFen compliantFen deductibleFen basicRatioPermille basicFen
  criticalIllnessFen assistanceFen personalAccountFen cashFen insuranceFen personalAccountBalanceFen lines
  yearToDateBefore {{ {YTD_FIELDS} }} yearToDateAfter {{ {YTD_FIELDS} }} }} }}"""

BILL = [
    {"amountFen": 420_000, "itemClass": "class_a"},
    {"amountFen": 180_000, "itemClass": "class_b", "selfPayPermille": 100},
    {"amountFen": 25_000, "itemClass": "class_c"},
]


def today() -> dt.date:
    return service.shanghai_today()


def data(body: dict[str, Any]) -> Any:
    assert "errors" not in body, body
    return body["data"]


def field_of(body: dict[str, Any]) -> str | None:
    errors = body.get("errors") or [{}]
    field: str | None = errors[0].get("extensions", {}).get("field")
    return field


def new_version(
    vid: str, region: str, start: dt.date, end: dt.date | None = None, **changes: Any
) -> dict[str, Any]:
    """A complete version in the engine's JSON form, from the shipped 2025 tables."""
    body = copy.deepcopy(load_default_policies().get("cn-default-2025").to_dict())
    body.update(id=vid, region=region, name=f"测试政策{vid}", effective_from=start.isoformat())
    body.pop("effective_to", None)
    if end is not None:
        body["effective_to"] = end.isoformat()
    body.update(changes)
    return body


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def person_of(state: AppState, login: str) -> InsuredPerson:
    async with state.db.session() as session:
        account = (
            await session.execute(
                select(Account).where(col(Account.provider) == "demo", col(Account.subject) == login)
            )
        ).scalar_one()
        assert account.person_id is not None
        person = await session.get(InsuredPerson, account.person_id)
        assert person is not None
        return person


# ------------------------------------------------------------------------------ policy versions


async def test_default_versions_are_seeded_and_listed(gql: GraphQLClient) -> None:
    assert error_codes(await gql(VERSIONS)) == ["UNAUTHENTICATED"]
    await gql.login("resident")
    versions = {v["id"]: v for v in data(await gql(VERSIONS, {"region": "000000"}))["policyVersions"]}
    assert {"cn-default-2024", "cn-default-2025"} <= versions.keys()
    v2024, v2025 = versions["cn-default-2024"], versions["cn-default-2025"]
    assert (v2024["effectiveFrom"], v2024["effectiveTo"]) == ("2024-01-01", "2025-01-01")
    assert v2025["seeded"] and v2025["region"] == "000000" and v2025["name"]
    # The tables are the engine's resolved JSON: what the shipped file says, after `extends`.
    assert v2025["tables"] == load_default_policies().get("cn-default-2025").to_dict()
    assert data(await gql(VERSIONS, {"region": "999999"}))["policyVersions"] == []


async def test_seeding_is_idempotent(state: AppState) -> None:
    async with state.db.session() as session:
        assert await service.seed_default_policies(session) == []
        count = (await session.execute(select(func.count()).select_from(PolicyVersionRow))).scalar_one()
        assert await service.seed_default_policies(session) == []
        assert (
            await session.execute(select(func.count()).select_from(PolicyVersionRow))
        ).scalar_one() == count


async def test_every_stored_settlement_names_a_stored_version(state: AppState) -> None:
    async with state.db.session() as session:
        used = set((await session.execute(select(col(Settlement.policy_version)).distinct())).scalars())
        stored = set((await session.execute(select(col(PolicyVersionRow.id)))).scalars())
    assert used and used <= stored, used - stored


@pytest.mark.parametrize("login", ["resident", "reviewer", "pharmacy"])
async def test_only_an_admin_creates_versions(gql: GraphQLClient, login: str) -> None:
    await gql.login(login)
    body = await gql(
        CREATE, {"input": {"version": new_version(unique("x"), "340600", today() + dt.timedelta(days=3))}}
    )
    assert error_codes(body) == ["FORBIDDEN"]


def _ratio_120(v: dict[str, Any]) -> None:
    v["resident"]["categories"]["inpatient"]["ratio_permille"]["tertiary"] = 1200


def _no_assistance(v: dict[str, Any]) -> None:
    del v["assistance"]


def _segment_gap(v: dict[str, Any]) -> None:
    v["resident"]["critical"]["segments"][1]["from_fen"] += 100


def _negative_cap(v: dict[str, Any]) -> None:
    v["employee"]["basic_annual_cap_fen"] = -1


def _bad_id(v: dict[str, Any]) -> None:
    v["id"] = "bad id!"


def _taken_id(v: dict[str, Any]) -> None:
    v["id"] = "cn-default-2025"


def _starts_today(v: dict[str, Any]) -> None:
    v["effective_from"] = today().isoformat()


def _starts_in_the_past(v: dict[str, Any]) -> None:
    v["effective_from"] = "2025-06-01"


def _ends_before_start(v: dict[str, Any]) -> None:
    v["effective_to"] = today().isoformat()


def _bad_region(v: dict[str, Any]) -> None:
    v["region"] = "34"


@pytest.mark.parametrize(
    ("mutate", "code", "field"),
    [
        (_ratio_120, "BAD_USER_INPUT", "version.resident.categories.inpatient.ratio_permille.tertiary"),
        (_no_assistance, "BAD_USER_INPUT", "version.assistance"),
        (_segment_gap, "BAD_USER_INPUT", "version.resident.critical.segments[1].from_fen"),
        (_negative_cap, "BAD_USER_INPUT", "version.employee.basic_annual_cap_fen"),
        (_bad_id, "BAD_USER_INPUT", "version.id"),
        (_taken_id, "CONFLICT", "version.id"),
        (_starts_today, "BAD_USER_INPUT", "version.effective_from"),
        (_starts_in_the_past, "BAD_USER_INPUT", "version.effective_from"),
        (_ends_before_start, "BAD_USER_INPUT", "version.effective_to"),
        (_bad_region, "BAD_USER_INPUT", "version.region"),
    ],
)
async def test_bad_versions_are_refused_with_the_field(
    gql: GraphQLClient, mutate: Any, code: str, field: str
) -> None:
    await gql.login("admin")
    version = new_version(unique("bad"), "340600", today() + dt.timedelta(days=5))
    mutate(version)
    body = await gql(CREATE, {"input": {"version": version}})
    assert error_codes(body) == [code], body
    assert field_of(body) == field
    listed = data(await gql(VERSIONS, {"region": "340600"}))["policyVersions"]
    assert version["id"] not in {v["id"] for v in listed} or version["id"] == "cn-default-2025"


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({}, "input.version"),
        ({"version": {"id": "a"}, "text": "id = 'a'"}, "input.version"),
        ({"text": "this is = = not toml"}, "input.text"),
        ({"text": "[1, 2]"}, "input.text"),
        ({"version": [1, 2]}, "input.version"),
        ({"text": "schema = 1\n[[versions]]\nid = 'a'\n[[versions]]\nid = 'b'\n"}, "input.text.versions"),
    ],
)
async def test_malformed_create_input(gql: GraphQLClient, payload: dict[str, Any], field: str) -> None:
    await gql.login("admin")
    body = await gql(CREATE, {"input": payload})
    assert error_codes(body) == ["BAD_USER_INPUT"], body
    assert field_of(body) == field


async def test_overlapping_versions_are_refused(gql: GraphQLClient) -> None:
    await gql.login("admin")
    start = today() + dt.timedelta(days=10)
    first = new_version(unique("a"), "340998", start, start + dt.timedelta(days=10))
    assert data(await gql(CREATE, {"input": {"version": first}}))["createPolicyVersion"]["id"] == first["id"]
    clash = new_version(unique("b"), "340998", start + dt.timedelta(days=5), start + dt.timedelta(days=30))
    body = await gql(CREATE, {"input": {"version": clash}})
    assert error_codes(body) == ["BAD_USER_INPUT"] and field_of(body) == "version.effective_from"
    # Back to back is fine: effective_to is exclusive.
    after = new_version(unique("c"), "340998", start + dt.timedelta(days=10))
    assert (
        data(await gql(CREATE, {"input": {"version": after}}))["createPolicyVersion"]["effectiveTo"] is None
    )


async def test_toml_text_may_extend_a_stored_version(gql: GraphQLClient) -> None:
    await gql.login("admin")
    vid = unique("toml")
    text = f"""
id = "{vid}"
extends = "cn-default-2025"
region = "340700"
name = "测试：特药比例提高到90%"
effective_from = {(today() + dt.timedelta(days=3)).isoformat()}

[resident.critical]
special_drug_ratio_permille = 900
"""
    created = data(await gql(CREATE, {"input": {"text": text}}))["createPolicyVersion"]
    assert created["id"] == vid and not created["seeded"] and created["effectiveTo"] is None
    tables = created["tables"]
    assert tables["resident"]["critical"]["special_drug_ratio_permille"] == 900
    base = load_default_policies().get("cn-default-2025").to_dict()
    assert tables["employee"] == base["employee"] and "extends" not in tables


async def test_superseding_closes_the_open_version_unless_it_already_priced_those_days(
    gql: GraphQLClient, state: AppState
) -> None:
    await gql.login("admin")
    start = today() + dt.timedelta(days=5)
    first = new_version(unique("open"), "340500", start)
    data(await gql(CREATE, {"input": {"version": first}}))
    # A terminal with a clock ahead stored a settlement dated day 15 with the open version.
    async with state.db.session() as session:
        some = (await session.execute(select(Settlement).limit(1))).scalar_one()
        ahead = Settlement(
            **{
                **some.model_dump(exclude={"id", "client_ref"}),
                "settled_at": service._local_midnight_utc(today() + dt.timedelta(days=15)),
                "policy_version": first["id"],
            }
        )
        session.add(ahead)
    try:
        too_early = new_version(unique("late"), "340500", today() + dt.timedelta(days=12))
        body = await gql(CREATE, {"input": {"version": too_early}})
        assert error_codes(body) == ["BAD_USER_INPUT"] and field_of(body) == "version.effective_from"
        later = new_version(unique("late"), "340500", today() + dt.timedelta(days=16))
        data(await gql(CREATE, {"input": {"version": later}}))
    finally:
        async with state.db.session() as session:
            await session.execute(delete(Settlement).where(col(Settlement.id) == ahead.id))
    listed = {v["id"]: v for v in data(await gql(VERSIONS, {"region": "340500"}))["policyVersions"]}
    assert listed[first["id"]]["effectiveTo"] == later["effective_from"]
    assert listed[first["id"]]["tables"]["effective_to"] == later["effective_from"]
    assert listed[later["id"]]["effectiveTo"] is None


# ---------------------------------------------------------------------------------- estimates


async def test_estimate_for_me_matches_the_engine_with_the_stored_year(
    gql: GraphQLClient, state: AppState
) -> None:
    await gql.login("resident")
    estimate = data(
        await gql(ESTIMATE, {"input": {"category": "inpatient", "facilityLevel": "secondary", "items": BILL}})
    )["estimateSettlement"]
    person = await person_of(state, "resident")
    assert person.id is not None
    day = today()
    async with state.db.session() as session:
        ytd = await service.year_to_date(session, person.id, day.year)
        policies = await service.policy_set(session)
    expected = compute(
        policies,
        Visit.from_dict(
            {
                "visit_date": day.isoformat(),
                "region": person.region_code,
                "insurance_type": person.insurance_type,
                "age_group": service.age_group(person.birth_date, day),
                "facility_level": "secondary",
                "locality": "local",
                "category": "inpatient",
                "items": [
                    {"amount_fen": 420_000, "item_class": "class_a"},
                    {"amount_fen": 180_000, "item_class": "class_b", "self_pay_permille": 100},
                    {"amount_fen": 25_000, "item_class": "class_c"},
                ],
                "assistance_category": person.assistance_category,
                "chronic_diseases": list(person.chronic_diseases),
                "personal_account_balance_fen": estimate["personalAccountBalanceFen"],
            }
        ),
        ytd,
    )
    assert estimate["policyVersion"] == expected.policy_version_id == "cn-default-2025"
    assert estimate["insuranceType"] == person.insurance_type == "employee"
    assert estimate["ageGroup"] == "adult" and estimate["visitDate"] == day.isoformat()
    for key, value in expected.to_dict().items():
        if key in ("ytd", "policy_version_id"):
            continue
        camel = "".join(w.capitalize() if i else w for i, w in enumerate(key.split("_")))
        assert estimate[camel] == value, key
    assert estimate["insuranceFen"] == expected.insurance_fen
    after = estimate["yearToDateAfter"]
    assert {e["category"]: e["amountFen"] for e in after["basicPaidFen"]} == expected.ytd.basic_paid_fen
    assert after["criticalOopFen"] == expected.ytd.critical_oop_fen
    before = estimate["yearToDateBefore"]
    assert before["year"] == day.year and before["basicPaidFen"], (
        "the demo resident has settlements this year"
    )
    assert (
        sum(
            layer
            for layer in (
                estimate[k]
                for k in ("basicFen", "criticalIllnessFen", "assistanceFen", "personalAccountFen", "cashFen")
            )
        )
        == estimate["totalFen"]
    )
    assert estimate["lines"][0].startswith("结算政策：")


async def test_year_to_date_is_the_engine_carried_through_every_stored_settlement(state: AppState) -> None:
    """Settle a year of visits for a new person with the engine, store them (in shuffled order, as late
    offline settlements arrive), and rebuild the totals from the database: the same to the fen."""
    policies = load_default_policies()
    async with state.db.session() as session:
        facility = (await session.execute(select(Facility).limit(1))).scalar_one()
        person = InsuredPerson(
            ref=uuid.uuid4().hex,
            name="测试救助对象",
            id_number_cipher=b"-",
            id_number_hash=uuid.uuid4().hex,
            gender="F",
            birth_date=dt.date(1950, 5, 1),
            insurance_type="resident",
            region_code="340421",
            assistance_category="dibao_edge",
            chronic_diseases=["copd"],
        )
        session.add(person)
        await session.flush()
        assert person.id is not None and facility.id is not None
        plan = [
            ("inpatient", "tertiary", 3_800_000),
            ("chronic_outpatient", "primary", 45_000),
            ("general_outpatient", "village", 8_000),
            ("pharmacy", "primary", 12_000),
            ("inpatient", "secondary", 2_600_000),
            ("special_drug", "tertiary", 900_000),
            ("general_outpatient", "secondary", 61_000),
        ]
        rows, carried, snapshots = [], None, []
        for n, (category, level, total) in enumerate(plan):
            day = dt.date(2025, 2 + n, 10)
            visit = Visit.from_dict(
                {
                    "visit_date": day.isoformat(),
                    "region": "340421",
                    "insurance_type": "resident",
                    "age_group": "elderly",
                    "facility_level": level,
                    "locality": "local",
                    "category": category,
                    "items": [
                        {"amount_fen": total * 7 // 10, "item_class": "class_a"},
                        {
                            "amount_fen": total - total * 7 // 10,
                            "item_class": "class_b",
                            "self_pay_permille": 150,
                        },
                    ],
                    "assistance_category": "dibao_edge",
                    "chronic_diseases": ["copd"],
                }
            )
            before = carried or service.YearToDate(2025)
            snapshots.append(before)
            result = compute(policies, visit, before, today=dt.date(2025, 12, 31))
            carried = result.ytd
            rows.append(
                Settlement(
                    person_id=person.id,
                    facility_id=facility.id,
                    settled_at=dt.datetime.combine(day, dt.time(9), service.SHANGHAI).astimezone(dt.UTC),
                    year=2025,
                    category=category,
                    total_fen=result.total_fen,
                    compliant_fen=result.compliant_fen,
                    deductible_fen=result.deductible_fen,
                    basic_fen=result.basic_fen,
                    critical_illness_fen=result.critical_illness_fen,
                    assistance_fen=result.assistance_fen,
                    personal_account_fen=result.personal_account_fen,
                    cash_fen=result.cash_fen,
                    policy_version=result.policy_version_id,
                    **service.ytd_columns(policies.get(result.policy_version_id), visit, before, result),
                )
            )
        assert carried is not None and carried.critical_paid_fen and carried.assistance_threshold_used_fen
        session.add_all(reversed(rows))
        await session.flush()
        try:
            assert await service.year_to_date(session, person.id, 2025) == carried
            for row, snapshot in zip(rows, snapshots, strict=True):
                assert await service.year_to_date(session, person.id, 2025, before=row.settled_at) == snapshot
            assert await service.year_to_date(session, person.id, 2024) == service.YearToDate(2024)
        finally:
            await session.rollback()


async def test_estimate_follows_the_version_in_force_on_the_visit_date(gql: GraphQLClient) -> None:
    """The county (340421) falls back to its city (340400): a city version from day 10, superseded on
    day 20, prices exactly the days it covers."""
    await gql.login("admin")
    d10, d20 = today() + dt.timedelta(days=10), today() + dt.timedelta(days=20)
    versions = []
    for start, ratio in ((d10, 700), (d20, 800)):
        v = new_version(unique("city"), "340400", start)
        v["employee"]["categories"]["inpatient"]["ratio_permille"]["secondary"] = ratio
        versions.append(data(await gql(CREATE, {"input": {"version": v}}))["createPolicyVersion"])
    listed = {v["id"]: v for v in data(await gql(VERSIONS, {"region": "340400"}))["policyVersions"]}
    assert listed[versions[0]["id"]]["effectiveTo"] == d20.isoformat()

    await gql.login("resident")
    expected = {
        d10 - dt.timedelta(days=1): ("cn-default-2025", 930),
        d10: (versions[0]["id"], 700),
        d20 - dt.timedelta(days=1): (versions[0]["id"], 700),
        d20: (versions[1]["id"], 800),
    }
    for day, (vid, ratio) in expected.items():
        body = await gql(
            ESTIMATE,
            {
                "input": {
                    "category": "inpatient",
                    "facilityLevel": "secondary",
                    "items": BILL,
                    "visitDate": day.isoformat(),
                }
            },
        )
        estimate = data(body)["estimateSettlement"]
        assert (estimate["policyVersion"], estimate["basicRatioPermille"]) == (vid, ratio), day


async def test_estimate_for_a_linked_relative_is_audited(gql: GraphQLClient, state: AppState) -> None:
    await gql.login("resident")
    links = data(await gql("{ familyLinks { id method } }"))["familyLinks"]
    link_id = next(link["id"] for link in links if link["method"] == "PROXY")
    estimate = data(
        await gql(
            ESTIMATE,
            {
                "input": {
                    "category": "chronic_outpatient",
                    "facilityLevel": "primary",
                    "items": BILL[:1],
                    "linkId": link_id,
                }
            },
        )
    )["estimateSettlement"]
    elder = await person_of(state, "elder")
    assert estimate["insuranceType"] == elder.insurance_type == "resident"
    assert estimate["ageGroup"] == "elderly" and estimate["basicFen"] > 0

    await gql.login("elder")
    audit = data(await gql("{ accessAudit(first: 50) { edges { node { action linkId } } } }"))["accessAudit"]
    assert any(
        e["node"]["action"] == "estimate:settlement" and e["node"]["linkId"] == link_id
        for e in audit["edges"]
    )

    await gql.login("stranger")
    body = await gql(
        ESTIMATE,
        {"input": {"category": "inpatient", "facilityLevel": "primary", "items": BILL, "linkId": link_id}},
    )
    assert error_codes(body) == ["NOT_FOUND"]


async def test_estimate_at_a_facility_uses_its_level(gql: GraphQLClient, state: AppState) -> None:
    async with state.db.session() as session:
        clinic = (
            await session.execute(select(Facility).where(col(Facility.level) == "village").limit(1))
        ).scalar_one()
    await gql.login("stranger")
    body = await gql(
        ESTIMATE,
        {
            "input": {
                "category": "general_outpatient",
                "facilityId": str(clinic.id),
                "items": BILL[:1],
                "usePersonalAccount": False,
            }
        },
    )
    estimate = data(body)["estimateSettlement"]
    assert estimate["facilityLevel"] == "village" and estimate["personalAccountFen"] == 0
    assert estimate["insuranceType"] == "resident"


async def test_only_residents_estimate(gql: GraphQLClient) -> None:
    query = {"input": {"category": "inpatient", "facilityLevel": "primary", "items": BILL}}
    assert error_codes(await gql(ESTIMATE, query)) == ["UNAUTHENTICATED"]
    await gql.login("admin")
    assert error_codes(await gql(ESTIMATE, query)) == ["FORBIDDEN"]


def _far_future() -> str:
    return (today() + dt.timedelta(days=60)).isoformat()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"items": [{"amountFen": -100}]}, "visit.items[0].amount_fen"),
        ({"items": [{"amountFen": 2_000_000_000}]}, "visit.items[0].amount_fen"),
        ({"items": [{"amountFen": 900_000_000}, {"amountFen": 900_000_000}]}, "visit.items"),
        ({"items": []}, "visit.items"),
        ({"items": [{"amountFen": 0}]}, "visit.items"),
        ({"items": [{"amountFen": 100}] * 501}, "visit.items"),
        (
            {"items": [{"amountFen": 100, "itemClass": "class_b", "selfPayPermille": 1500}]},
            "visit.items[0].self_pay_permille",
        ),
        (
            {"items": [{"amountFen": 100, "itemClass": "class_b", "selfPayPermille": -1}]},
            "visit.items[0].self_pay_permille",
        ),
        (
            {"items": [{"amountFen": 100, "itemClass": "class_a", "selfPayPermille": 100}]},
            "visit.items[0].self_pay_permille",
        ),
        ({"items": [{"amountFen": 100, "itemClass": "class_z"}]}, "visit.items[0].item_class"),
        ({"category": "cosmetic"}, "visit.category"),
        ({"locality": "moon"}, "visit.locality"),
        ({"facilityLevel": "palace"}, "visit.facility_level"),
        ({"facilityLevel": None}, "input.facilityId"),
        ({"facilityId": "1"}, "input.facilityId"),
        ({"facilityLevel": None, "facilityId": "999999999"}, "input.facilityId"),
        ({"facilityLevel": None, "facilityId": "abc"}, "input.facilityId"),
        ({"visitDate": "FAR"}, "visit.visit_date"),
        ({"visitDate": "1900-01-01"}, "visit.visit_date"),
        ({"visitDate": "9999-12-31"}, "visit.visit_date"),
        ({"facilityLevel": None, "facilityId": "9223372036854775808"}, "input.facilityId"),
        ({"facilityLevel": None, "facilityId": "99999999999999999999"}, "input.facilityId"),
        ({"category": "two_diseases_outpatient"}, "visit.two_diseases"),
    ],
)
async def test_bad_estimate_input_names_the_field(
    gql: GraphQLClient, change: dict[str, Any], field: str
) -> None:
    await gql.login("resident")
    data_in: dict[str, Any] = {"category": "general_outpatient", "facilityLevel": "primary", "items": BILL}
    data_in.update(change)
    if data_in.get("visitDate") == "FAR":
        data_in["visitDate"] = _far_future()
    data_in = {k: v for k, v in data_in.items() if v is not None}
    body = await gql(ESTIMATE, {"input": data_in})
    assert error_codes(body) == ["BAD_USER_INPUT"], body
    assert field_of(body) == field


async def test_two_diseases_estimate_uses_the_persons_managed_diseases(gql: GraphQLClient) -> None:
    # The demo elder's hypertension is under 两病 management: the 两病 outpatient scheme pays.
    await gql.login("elder")
    me = (await gql("{ me { twoDiseases } }"))["data"]["me"]
    assert me["twoDiseases"] == ["hypertension"]
    bill = [{"amountFen": 8_000, "itemClass": "class_a"}]
    body = await gql(
        ESTIMATE,
        {"input": {"category": "two_diseases_outpatient", "facilityLevel": "village", "items": bill}},
    )
    assert "errors" not in body, body
    assert body["data"]["estimateSettlement"]["basicFen"] > 0
    # Someone without 两病 management is refused the scheme, naming why.
    await gql.login("stranger")
    body = await gql(
        ESTIMATE,
        {"input": {"category": "two_diseases_outpatient", "facilityLevel": "village", "items": bill}},
    )
    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert body["errors"][0]["extensions"]["field"] == "visit.two_diseases"


async def test_concurrent_versions_for_one_region_never_overlap(gql: GraphQLClient, state: AppState) -> None:
    # Each new version is checked against every stored one; two checked side by side must not both pass
    # as open-ended (that would leave the stored set inconsistent and every estimate failing).
    import asyncio

    await gql.login("admin")
    region = f"35{uuid.uuid4().int % 10000:04d}"
    bodies = await asyncio.gather(
        *(
            gql(
                CREATE,
                {"input": {"version": new_version(unique("race"), region, today() + dt.timedelta(days=d))}},
            )
            for d in (5, 9, 13)
        )
    )
    assert all("errors" not in b or error_codes(b) == ["BAD_USER_INPUT"] for b in bodies), bodies
    async with state.db.session() as session:
        stored = await service.policy_set(session)  # raises if the stored versions overlap
    mine = sorted((v.effective_from, v.effective_to) for v in stored.versions if v.region == region)
    assert mine and all(a[1] == b[0] for a, b in itertools.pairwise(mine)) and mine[-1][1] is None


async def test_extends_inherits_the_region_it_extends(gql: GraphQLClient) -> None:
    await gql.login("admin")
    region = f"36{uuid.uuid4().int % 10000:04d}"
    base = unique("base")
    data(await gql(CREATE, {"input": {"version": new_version(base, region, today() + dt.timedelta(days=4))}}))
    later = (today() + dt.timedelta(days=8)).isoformat()
    text = f'id = "{unique("next")}"\nextends = "{base}"\nname = "下一版"\neffective_from = {later}\n'
    created = data(await gql(CREATE, {"input": {"text": text}}))["createPolicyVersion"]
    assert created["region"] == region and created["effectiveFrom"] == later


async def test_absurdly_nested_policy_text_is_bad_user_input(gql: GraphQLClient) -> None:
    await gql.login("admin")
    body = await gql(CREATE, {"input": {"text": "a = " + "[" * 50_000 + "]" * 50_000}})
    assert error_codes(body) == ["BAD_USER_INPUT"]
