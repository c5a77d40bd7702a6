"""Policy versions: the shipped file, validation of inconsistent policies, selection by region and date."""

from __future__ import annotations

import copy
import datetime as dt
import json
from importlib import resources
from typing import Any

import pytest

from sync.settlement import (
    BillItem,
    PolicyError,
    PolicySet,
    PolicyVersion,
    SettlementInputError,
    Visit,
    compute,
    load_default_policies,
    load_policies,
)

TODAY = dt.date(2025, 12, 31)


def base() -> dict[str, Any]:
    return copy.deepcopy(load_default_policies().to_dict())


def special_drug_visit(day: dt.date, region: str = "340400") -> Visit:
    return Visit(
        day, region, "resident", "adult", "tertiary", "local", "special_drug", (BillItem(1_000_000),), None
    )


def test_default_file_is_package_data() -> None:
    path = resources.files("sync.settlement.policies").joinpath("default.toml")
    assert path.is_file()
    ids = [v.id for v in load_default_policies().versions]
    assert ids == ["cn-default-2024", "cn-default-2025"]


def test_dict_form_round_trips_through_json() -> None:
    d = base()
    again = load_policies(json.loads(json.dumps(d)))
    assert again.to_dict() == d
    assert [v for v in again.versions] == list(load_default_policies().versions)
    one = d["versions"][1]
    assert PolicyVersion.from_dict(one).to_dict() == one
    assert PolicySet.from_dict(d).to_dict() == d


def test_extends_inherits_and_overrides() -> None:
    v24, v25 = load_default_policies().versions
    assert v24.resident.critical.special_drug_ratio_permille == 600
    assert v25.resident.critical.special_drug_ratio_permille == 800
    two24 = v24.resident.categories["two_diseases_outpatient"].two_diseases_cap_fen
    two25 = v25.resident.categories["two_diseases_outpatient"].two_diseases_cap_fen
    assert two24 == {"hypertension": 50_000, "diabetes": 50_000, "both": 100_000}
    assert two25 == {"hypertension": 100_000, "diabetes": 100_000, "both": 150_000}
    assert v25.employee.categories["inpatient"] == v24.employee.categories["inpatient"]
    assert v25.effective_to is None


@pytest.mark.parametrize(
    ("day", "version", "critical"),
    [
        (dt.date(2024, 1, 1), "cn-default-2024", 600_000),
        (dt.date(2024, 12, 31), "cn-default-2024", 600_000),
        (dt.date(2025, 1, 1), "cn-default-2025", 800_000),
        (dt.date(2025, 12, 31), "cn-default-2025", 800_000),
    ],
)
def test_version_change_on_the_date_boundary(day: dt.date, version: str, critical: int) -> None:
    policies = load_default_policies()
    assert policies.select("340400", day, today=TODAY).id == version
    r = compute(policies, special_drug_visit(day), today=TODAY)
    assert r.policy_version_id == version
    assert r.critical_illness_fen == critical


def test_explicit_version_must_be_in_force() -> None:
    v24 = load_default_policies().versions[0]
    with pytest.raises(SettlementInputError) as e:
        compute(v24, special_drug_visit(dt.date(2025, 1, 1)), today=TODAY)
    assert e.value.field == "visit.visit_date"
    assert compute(v24, special_drug_visit(dt.date(2024, 12, 31)), today=TODAY).policy_version_id == v24.id


def test_date_before_any_version() -> None:
    with pytest.raises(SettlementInputError) as e:
        load_default_policies().select("340400", dt.date(2023, 12, 31), today=TODAY)
    assert e.value.field == "visit.visit_date"


def test_far_future_is_refused() -> None:
    policies = load_default_policies()
    with pytest.raises(SettlementInputError) as e:
        compute(policies, special_drug_visit(dt.date(2200, 1, 1)))  # real today
    assert e.value.field == "visit.visit_date"
    with pytest.raises(SettlementInputError):
        policies.select("340400", TODAY + dt.timedelta(days=32), today=TODAY)
    assert policies.select("340400", TODAY + dt.timedelta(days=31), today=TODAY).id == "cn-default-2025"


def test_beyond_the_last_closed_version() -> None:
    d = base()
    d["versions"][1]["effective_to"] = "2026-01-01"
    with pytest.raises(SettlementInputError) as e:
        load_policies(d).select("340400", dt.date(2026, 1, 1), today=dt.date(2026, 1, 1))
    assert "no policy version" in e.value.message


def test_region_fallback_county_city_province_national() -> None:
    d = base()
    city = copy.deepcopy(d["versions"][1])
    city.update(id="huainan-2025", region="340400", name="淮南市2025", effective_from="2025-07-01")
    city["resident"]["critical"]["special_drug_ratio_permille"] = 900
    d["versions"].append(city)
    policies = load_policies(d)
    assert policies.select("340421", dt.date(2025, 8, 1), today=TODAY).id == "huainan-2025"  # county -> city
    assert policies.select("340400", dt.date(2025, 8, 1), today=TODAY).id == "huainan-2025"
    assert policies.select("340421", dt.date(2025, 6, 30), today=TODAY).id == "cn-default-2025"  # not yet
    assert (
        policies.select("370000", dt.date(2025, 8, 1), today=TODAY).id == "cn-default-2025"
    )  # other province
    r = compute(policies, special_drug_visit(dt.date(2025, 8, 1), "340421"), today=TODAY)
    assert r.critical_illness_fen == 900_000


def test_bad_region_code() -> None:
    with pytest.raises(SettlementInputError) as e:
        load_default_policies().select("3404", dt.date(2025, 1, 1), today=TODAY)
    assert e.value.field == "visit.region"


# ------------------------------------------------------------------------- inconsistent policies


def _mutate(path: str, value: Any) -> dict[str, Any]:
    d = base()
    node: Any = d
    keys = path.split(".")
    for k in keys[:-1]:
        node = node[int(k)] if isinstance(node, list) else node[k]
    last = keys[-1]
    if value is KeyError:
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return d


BAD_POLICIES = [
    # (what to change, new value, field named in the error)
    (
        "versions.1.resident.categories.inpatient.ratio_permille.tertiary",
        1001,
        "versions[1].resident.categories.inpatient.ratio_permille.tertiary",
    ),
    (
        "versions.0.employee.categories.inpatient.deductible_fen.primary",
        -1,
        "versions[0].employee.categories.inpatient.deductible_fen.primary",
    ),
    ("versions.0.employee.basic_annual_cap_fen", 1.5, "versions[0].employee.basic_annual_cap_fen"),
    ("versions.0.employee.basic_annual_cap_fen", True, "versions[0].employee.basic_annual_cap_fen"),
    ("versions.0.resident.critical", KeyError, "versions[0].resident.critical"),
    ("versions.0.assistance.rules.tekun", KeyError, "versions[0].assistance.rules.tekun"),
    (
        "versions.0.resident.categories.inpatient.ratio_permille.hospice",
        500,
        "versions[0].resident.categories.inpatient.ratio_permille.hospice",
    ),
    ("versions.0.resident.categories.dental", {"covered": False}, "versions[0].resident.categories.dental"),
    (
        "versions.0.resident.categories.inpatient.deductible_basis",
        "monthly",
        "versions[0].resident.categories.inpatient.deductible_basis",
    ),
    (
        "versions.0.resident.critical.tilt.vip",
        {"threshold_discount_permille": 0, "ratio_bonus_permille": 0, "cap_waived": False},
        "versions[0].resident.critical.tilt.vip",
    ),
    ("versions.0.assistance.localities", ["local", "moon"], "versions[0].assistance.localities[1]"),
    ("versions.0.region", "34040", "versions[0].region"),
    ("versions.0.effective_to", "2023-06-01", "versions[0].effective_to"),
    ("versions.1.effective_from", "2024-12-01", "versions[1].effective_from"),  # overlaps 2024
    ("versions.1.id", "cn-default-2024", "versions[1].id"),
    (
        "versions.0.resident.critical.segments.1.from_fen",
        5_000_001,
        "versions[0].resident.critical.segments[1].from_fen",
    ),  # gap
    (
        "versions.0.resident.critical.segments.1.from_fen",
        4_000_000,
        "versions[0].resident.critical.segments[1].from_fen",
    ),  # overlap
    (
        "versions.0.resident.critical.segments.0.from_fen",
        100,
        "versions[0].resident.critical.segments[0].from_fen",
    ),
    (
        "versions.0.resident.critical.segments.2.to_fen",
        20_000_000,
        "versions[0].resident.critical.segments[2].to_fen",
    ),  # closed last segment
    (
        "versions.0.resident.critical.segments.0.ratio_permille",
        1200,
        "versions[0].resident.critical.segments[0].ratio_permille",
    ),
    (
        "versions.0.employee.categories.pharmacy.pool",
        "two_diseases_outpatient",
        "versions[0].employee.categories.pharmacy.pool",
    ),  # pooled into an uncovered category
    ("versions.0.effective_from", "2024-02-30", "versions[0].effective_from"),
]


@pytest.mark.parametrize(
    ("path", "value", "field"), BAD_POLICIES, ids=[b[2] + " " + repr(b[1])[:20] for b in BAD_POLICIES]
)
def test_inconsistent_policy_is_refused(path: str, value: Any, field: str) -> None:
    with pytest.raises(PolicyError) as e:
        load_policies(_mutate(path, value))
    assert e.value.field == field, e.value


def test_missing_versions_and_bad_toml() -> None:
    with pytest.raises(PolicyError) as e:
        load_policies({"schema": 1, "versions": []})
    assert e.value.field == "versions"
    with pytest.raises(PolicyError) as e:
        load_policies("schema = 1\nversions = [")
    assert e.value.field == "<toml>"
    with pytest.raises(PolicyError) as e:
        load_policies({"schema": 2, "versions": base()["versions"]})
    assert e.value.field == "schema"


def test_extends_must_name_an_earlier_version() -> None:
    text = 'schema = 1\n[[versions]]\nid = "x"\nextends = "nope"\n'
    with pytest.raises(PolicyError) as e:
        load_policies(text)
    assert e.value.field == "versions[0].extends"


def test_policy_set_from_versions_checks_overlap() -> None:
    v24, v25 = load_default_policies().versions
    clash = PolicyVersion.from_dict({**v25.to_dict(), "id": "clash", "effective_from": "2025-06-01"})
    with pytest.raises(PolicyError) as e:
        PolicySet([v24, v25, clash])
    assert e.value.field == "versions[2].effective_from"


@pytest.mark.parametrize(("category", "pool"), [("pharmacy", "two_diseases_outpatient")])
def test_two_diseases_category_neither_joins_nor_hosts_a_pool(category: str, pool: str) -> None:
    # Its caps live in a per-disease table that only the category itself applies: a category pooled
    # into it would be paid without any cap (a 100,000-yuan pharmacy bill paid 50,000 yuan).
    d = base()
    d["versions"][1]["resident"]["categories"][category]["pool"] = pool
    d["versions"][1]["resident"]["categories"][category].pop("annual_cap_fen", None)
    with pytest.raises(PolicyError) as refused:
        load_policies(d)
    assert refused.value.field == f"versions[1].resident.categories.{category}.pool"
