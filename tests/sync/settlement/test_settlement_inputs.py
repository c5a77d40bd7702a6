"""Bad input: each is a SettlementInputError naming the field, never a number."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import Any

import pytest

from sync.settlement import BillItem, SettlementInputError, Visit, YearToDate, compute, load_default_policies

POLICIES = load_default_policies()
TODAY = dt.date(2025, 12, 31)
DAY = dt.date(2025, 5, 5)
GOOD = Visit(DAY, "340400", "resident", "adult", "village", "local", "general_outpatient", (BillItem(5_000),))


def refused(visit: Visit, ytd: YearToDate | None = None) -> SettlementInputError:
    with pytest.raises(SettlementInputError) as e:
        compute(POLICIES, visit, ytd, today=TODAY)
    assert e.value.message and e.value.field
    assert e.value.message.isascii()  # English messages; zh-CN only on receipts
    return e.value


def with_items(*items: Any) -> Visit:
    return dataclasses.replace(GOOD, items=items)


def test_good_visit_settles() -> None:
    assert compute(POLICIES, GOOD, today=TODAY).basic_fen == 3_000


@pytest.mark.parametrize(
    ("visit", "field"),
    [
        (with_items(BillItem(-1)), "visit.items[0].amount_fen"),
        (with_items(BillItem(100), BillItem(1_000_000_001)), "visit.items[1].amount_fen"),
        (with_items(BillItem(600_000_000), BillItem(600_000_000)), "visit.items"),  # total over 10M yuan
        (with_items(), "visit.items"),  # empty bill
        (with_items(BillItem(0)), "visit.items"),  # zero total
        (with_items(BillItem(12.5)), "visit.items[0].amount_fen"),  # type: ignore[arg-type]
        (with_items(BillItem(100.0)), "visit.items[0].amount_fen"),  # type: ignore[arg-type]
        (with_items(BillItem(True)), "visit.items[0].amount_fen"),  # bool is an int subclass
        (with_items(BillItem(100, "class_b", 1001)), "visit.items[0].self_pay_permille"),
        (with_items(BillItem(100, "class_b", -1)), "visit.items[0].self_pay_permille"),
        (with_items(BillItem(100, "class_b", 0.1)), "visit.items[0].self_pay_permille"),  # type: ignore[arg-type]
        (with_items(BillItem(100, "class_a", 100)), "visit.items[0].self_pay_permille"),
        (with_items(BillItem(100, "class_d")), "visit.items[0].item_class"),
        (with_items("100"), "visit.items[0]"),
        (dataclasses.replace(GOOD, items=[BillItem(100)] * 10_001), "visit.items"),  # type: ignore[arg-type]
        (dataclasses.replace(GOOD, assistance_category="rich"), "visit.assistance_category"),
        (dataclasses.replace(GOOD, insurance_type="commercial"), "visit.insurance_type"),
        (dataclasses.replace(GOOD, age_group="teen"), "visit.age_group"),
        (dataclasses.replace(GOOD, facility_level="quaternary"), "visit.facility_level"),
        (dataclasses.replace(GOOD, locality="abroad"), "visit.locality"),
        (dataclasses.replace(GOOD, category="dental"), "visit.category"),
        (dataclasses.replace(GOOD, region="34"), "visit.region"),
        (
            dataclasses.replace(GOOD, visit_date=dt.date(2023, 12, 31)),
            "visit.visit_date",
        ),  # before any version
        (dataclasses.replace(GOOD, visit_date=dt.date(2200, 1, 1)), "visit.visit_date"),  # far future
        (dataclasses.replace(GOOD, visit_date=dt.datetime(2025, 5, 5, 8, 0)), "visit.visit_date"),
        (dataclasses.replace(GOOD, personal_account_balance_fen=-5), "visit.personal_account_balance_fen"),
        (dataclasses.replace(GOOD, personal_account_balance_fen=5.0), "visit.personal_account_balance_fen"),  # type: ignore[arg-type]
        (dataclasses.replace(GOOD, use_personal_account=1), "visit.use_personal_account"),  # type: ignore[arg-type]
        (dataclasses.replace(GOOD, category="chronic_outpatient"), "visit.chronic_diseases"),
        (dataclasses.replace(GOOD, category="two_diseases_outpatient"), "visit.two_diseases"),
        (dataclasses.replace(GOOD, two_diseases=frozenset({"gout"})), "visit.two_diseases"),
        (
            dataclasses.replace(
                GOOD,
                insurance_type="employee",
                category="two_diseases_outpatient",
                two_diseases=frozenset({"diabetes"}),
            ),
            "visit.category",  # 两病 outpatient is a resident scheme in the default policy
        ),
    ],
)
def test_bad_visit(visit: Visit, field: str) -> None:
    assert refused(visit).field == field


@pytest.mark.parametrize(
    ("ytd", "field"),
    [
        (YearToDate(2024), "ytd.year"),  # totals of another year
        (YearToDate(2025, critical_paid_fen=-1), "ytd.critical_paid_fen"),
        (YearToDate(2025, critical_oop_fen=1.0), "ytd.critical_oop_fen"),  # type: ignore[arg-type]
        (YearToDate(2025, assistance_paid_fen=False), "ytd.assistance_paid_fen"),
        (YearToDate(2025, assistance_threshold_used_fen=-3), "ytd.assistance_threshold_used_fen"),
        (YearToDate(2025, basic_paid_fen={"inpatient": -1}), "ytd.basic_paid_fen.inpatient"),
        (YearToDate(2025, basic_paid_fen={"dental": 1}), "ytd.basic_paid_fen"),
        (YearToDate(2025, deductible_used_fen={"inpatient": 0.5}), "ytd.deductible_used_fen.inpatient"),  # type: ignore[dict-item]
        (YearToDate(2025, critical_paid_fen=10**12), "ytd.critical_paid_fen"),  # corrupt, not "cap reached"
    ],
)
def test_bad_ytd(ytd: YearToDate, field: str) -> None:
    assert refused(GOOD, ytd).field == field


def test_totals_past_a_cap_are_cap_reached_not_an_error() -> None:
    r = compute(POLICIES, GOOD, YearToDate(2025, basic_paid_fen={"general_outpatient": 99_999}), today=TODAY)
    assert (r.basic_fen, r.cash_fen) == (0, 5_000)
    assert any("已达限额" in line for line in r.lines)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (
            {**GOOD.to_dict(), "items": [{"amount_fen": 1.5, "item_class": "class_a"}]},
            "visit.items[0].amount_fen",
        ),
        (
            {**GOOD.to_dict(), "items": [{"amount_fen": 10, "item_class": "class_a", "x": 1}]},
            "visit.items[0].x",
        ),
        ({**GOOD.to_dict(), "visit_date": "2025-13-01"}, "visit.visit_date"),
        ({**GOOD.to_dict(), "use_personal_account": "yes"}, "visit.use_personal_account"),
        ({**GOOD.to_dict(), "surprise": 1}, "visit.surprise"),
        ({**GOOD.to_dict(), "two_diseases": [{}]}, "visit.two_diseases"),
        (
            {**GOOD.to_dict(), "items": [{"amount_fen": 10, "item_class": "class_a", "code": 7}]},
            "visit.items[0].code",
        ),
        ({k: v for k, v in GOOD.to_dict().items() if k != "category"}, "visit.category"),
    ],
)
def test_bad_visit_dict(data: dict[str, Any], field: str) -> None:
    with pytest.raises(SettlementInputError) as e:
        Visit.from_dict(data)
    assert e.value.field == field


def test_bad_ytd_dict() -> None:
    with pytest.raises(SettlementInputError) as e:
        YearToDate.from_dict({"year": 2025, "basic_paid_fen": {"inpatient": "12"}})
    assert e.value.field == "ytd.basic_paid_fen.inpatient"
    with pytest.raises(SettlementInputError) as e:
        YearToDate.from_dict({"basic_paid_fen": {}})
    assert e.value.field == "ytd.year"


def test_dict_values_are_checked_again_by_compute() -> None:
    # from_dict checks types; compute checks values (a negative amount parses, then is refused).
    v = Visit.from_dict({**GOOD.to_dict(), "items": [{"amount_fen": -10, "item_class": "class_a"}]})
    assert refused(v).field == "visit.items[0].amount_fen"
