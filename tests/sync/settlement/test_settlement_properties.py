"""Property-based tests of the settlement engine (hypothesis) against the default policy."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from sync.settlement import (
    AGE_GROUPS,
    ASSISTANCE_CATEGORIES,
    FACILITY_LEVELS,
    LOCALITIES,
    VISIT_CATEGORIES,
    BillItem,
    PolicySet,
    SettlementResult,
    Visit,
    YearToDate,
    compute,
    load_default_policies,
    load_policies,
    round_half_up,
)

POLICIES = load_default_policies()
TODAY = dt.date(2025, 12, 31)
PROPS = settings(max_examples=200, deadline=None)


def _with_zero_ratios() -> PolicySet:
    """The default policy, except that basic pays nothing for village admissions (which keep their
    300/200-yuan per-admission deductible) nor for village general outpatient (whose annual deductible
    pharmacy shares): ratio-0 categories beside 特药, with deductibles that must not be consumed."""
    d = POLICIES.to_dict()
    for version in d["versions"]:
        for ins in ("employee", "resident"):
            for cat in ("inpatient", "general_outpatient"):
                version[ins]["categories"][cat]["ratio_permille"]["village"] = 0
    return load_policies(d)


ZERO_RATIO_POLICIES = _with_zero_ratios()

amounts = st.one_of(
    st.integers(0, 20_000),  # village outpatient sizes
    st.integers(0, 2_000_000),
    st.integers(0, 60_000_000),  # a long admission
)
items = st.builds(
    BillItem,
    amount_fen=amounts,
    item_class=st.sampled_from(["class_a", "class_a", "class_b", "class_c"]),
).map(
    lambda i: (
        dataclasses.replace(i, self_pay_permille=(i.amount_fen * 7919) % 1001)
        if i.item_class == "class_b"
        else i
    )
)
bills = st.lists(items, min_size=1, max_size=5).filter(lambda xs: 0 < sum(i.amount_fen for i in xs) <= 10**9)


@st.composite
def visits(
    draw: st.DrawFn, *, year: int | None = None, insurance: str | None = None, assist: str | None = "any"
) -> Visit:
    ins = insurance or draw(st.sampled_from(["employee", "resident"]))
    cats = [c for c in VISIT_CATEGORIES if not (ins == "employee" and c == "two_diseases_outpatient")]
    if year is None:
        day = draw(st.dates(dt.date(2024, 1, 1), dt.date(2025, 12, 31)))
    else:
        day = draw(st.dates(dt.date(year, 1, 1), dt.date(year, 12, 31)))
    return Visit(
        visit_date=day,
        region="340421",
        insurance_type=ins,
        age_group=draw(st.sampled_from(sorted(AGE_GROUPS))),
        facility_level=draw(st.sampled_from(sorted(FACILITY_LEVELS))),
        locality=draw(st.sampled_from(sorted(LOCALITIES))),
        category=draw(st.sampled_from(cats)),
        items=tuple(draw(bills)),
        assistance_category=(
            draw(st.one_of(st.none(), st.sampled_from(sorted(ASSISTANCE_CATEGORIES))))
            if assist == "any"
            else assist
        ),
        chronic_diseases=frozenset({"copd"}),
        two_diseases=draw(
            st.sampled_from([frozenset({"hypertension"}), frozenset({"hypertension", "diabetes"})])
        ),
        personal_account_balance_fen=draw(st.one_of(st.just(0), st.integers(0, 5_000_000))),
        use_personal_account=draw(st.booleans()),
    )


small_totals = st.one_of(st.just(0), st.integers(0, 100_000), st.integers(0, 60_000_000))


@st.composite
def ytds(draw: st.DrawFn, year: int) -> YearToDate:
    pools = ["inpatient", "general_outpatient", "chronic_outpatient", "two_diseases_outpatient"]
    return YearToDate(
        year,
        deductible_used_fen={p: draw(small_totals) for p in pools if draw(st.booleans())},
        basic_paid_fen={p: draw(small_totals) for p in pools if draw(st.booleans())},
        critical_oop_fen=draw(small_totals),
        critical_paid_fen=draw(small_totals),
        assistance_threshold_used_fen=draw(small_totals),
        assistance_paid_fen=draw(small_totals),
    )


@st.composite
def visit_and_ytd(draw: st.DrawFn) -> tuple[Visit, YearToDate]:
    v = draw(visits())
    return v, draw(ytds(v.visit_date.year))


def layers(r: SettlementResult) -> tuple[int, ...]:
    return (r.basic_fen, r.critical_illness_fen, r.assistance_fen, r.personal_account_fen, r.cash_fen)


@PROPS
@given(visit_and_ytd())
def test_no_negative_amount_and_layers_sum_to_the_bill(vy: tuple[Visit, YearToDate]) -> None:
    v, y = vy
    r = compute(POLICIES, v, y, today=TODAY)
    assert all(x >= 0 for x in layers(r))
    assert r.deductible_fen >= 0
    assert sum(layers(r)) == r.total_fen == sum(i.amount_fen for i in v.items)
    assert r.non_compliant_fen + r.class_b_self_pay_fen + r.compliant_fen == r.total_fen
    # The funds only ever pay compliant amounts; the personal account never pays 丙类.
    assert r.insurance_fen <= r.compliant_fen
    assert r.personal_account_fen <= r.total_fen - r.non_compliant_fen - r.insurance_fen
    assert r.personal_account_fen <= v.personal_account_balance_fen


@PROPS
@given(visit_and_ytd())
def test_same_input_same_output(vy: tuple[Visit, YearToDate]) -> None:
    v, y = vy
    assert compute(POLICIES, v, y, today=TODAY) == compute(POLICIES, v, y, today=TODAY)


def _cap_of(v: Visit, pool: str) -> int | None:
    version = POLICIES.select(v.region, v.visit_date, today=TODAY)
    rule = version.rules_for(v.insurance_type).categories[pool]
    if pool == "two_diseases_outpatient":
        assert rule.two_diseases_cap_fen is not None
        return rule.two_diseases_cap_fen["both"]
    return rule.annual_cap_fen


@PROPS
@given(
    st.sampled_from(["employee", "resident"]).flatmap(
        lambda ins: st.sampled_from([None, *sorted(ASSISTANCE_CATEGORIES)]).flatmap(
            lambda assist: st.lists(visits(year=2025, insurance=ins, assist=assist), min_size=1, max_size=12)
        )
    )
)
def test_no_annual_cap_is_exceeded_across_a_year(seq: list[Visit]) -> None:
    y = YearToDate(2025)
    version = POLICIES.select("340421", dt.date(2025, 6, 1), today=TODAY)
    for v in seq:
        r = compute(POLICIES, v, y, today=TODAY)
        y = r.ytd
        rules = version.rules_for(v.insurance_type)
        assert sum(y.basic_paid_fen.values()) <= rules.basic_annual_cap_fen
        for pool, paid in y.basic_paid_fen.items():
            cap = _cap_of(v, pool)
            assert cap is None or paid <= cap
        tilt = rules.critical.tilt.get(v.assistance_category or "")
        if tilt is None or not tilt.cap_waived:
            assert y.critical_paid_fen <= rules.critical.annual_cap_fen
        if v.assistance_category is not None:
            assert y.assistance_paid_fen <= version.assistance.rules[v.assistance_category].annual_cap_fen
        else:
            assert y.assistance_paid_fen == 0


@PROPS
@given(visit_and_ytd(), st.integers(1, 5_000_000), st.booleans())
def test_more_compliant_amount_never_lowers_insurance_nor_cash(
    vy: tuple[Visit, YearToDate], extra: int, as_new_item: bool
) -> None:
    """Precisely: adding ``extra`` fen of 甲类 (as a new item, or onto an existing 甲类 item) never
    lowers basic, 大病, assistance, their sum, the personal account or the cash - for any balance,
    since the personal account only takes min(balance, what is left), which is monotone too."""
    v, y = vy
    if sum(i.amount_fen for i in v.items) + extra > 10**9:
        return
    if as_new_item or not any(i.item_class == "class_a" for i in v.items):
        more = (*v.items, BillItem(extra, "class_a"))
    else:
        k = next(n for n, i in enumerate(v.items) if i.item_class == "class_a")
        more = tuple(
            dataclasses.replace(i, amount_fen=i.amount_fen + extra) if n == k else i
            for n, i in enumerate(v.items)
        )
    before = compute(POLICIES, v, y, today=TODAY)
    after = compute(POLICIES, dataclasses.replace(v, items=more), y, today=TODAY)
    assert after.basic_fen >= before.basic_fen
    assert after.critical_illness_fen >= before.critical_illness_fen
    assert after.assistance_fen >= before.assistance_fen
    assert after.insurance_fen >= before.insurance_fen
    assert after.personal_account_fen >= before.personal_account_fen
    assert after.cash_fen >= before.cash_fen


@PROPS
@given(st.lists(visits(year=2025, insurance="resident", assist="dibao"), min_size=2, max_size=6))
def test_a_later_visit_never_changes_an_earlier_result(seq: list[Visit]) -> None:
    y = YearToDate(2025)
    results = []
    ytds_before = []
    for v in seq:
        ytds_before.append(y)
        r = compute(POLICIES, v, y, today=TODAY)
        results.append(r)
        y = r.ytd
    # Recompute every earlier visit after the whole sequence: nothing moved.
    for v, y0, r in zip(seq, ytds_before, results, strict=True):
        assert compute(POLICIES, v, y0, today=TODAY) == r


@PROPS
@given(visit_and_ytd())
def test_dict_forms_round_trip(vy: tuple[Visit, YearToDate]) -> None:
    v, y = vy
    assert Visit.from_dict(v.to_dict()) == v
    assert YearToDate.from_dict(y.to_dict()) == y
    r = compute(POLICIES, v, y, today=TODAY)
    d = r.to_dict()
    assert d["cash_fen"] == r.cash_fen and YearToDate.from_dict(d["ytd"]) == r.ytd


@PROPS
@given(st.integers(0, 10**12), st.integers(1, 10**6))
def test_round_half_up_is_floor_of_x_plus_a_half(n: int, d: int) -> None:
    assert round_half_up(n, d) == math.floor(Fraction(n, d) + Fraction(1, 2))


@st.composite
def zero_ratio_visits(draw: st.DrawFn) -> tuple[PolicySet, Visit, YearToDate]:
    """A visit in a category that basic insurance does not pay at its facility level (ratio 0 in the
    policy), for any age group (the retiree +2 points included), locality and assistance category."""
    policies = draw(st.sampled_from([POLICIES, ZERO_RATIO_POLICIES]))
    v = draw(visits())
    version = policies.select(v.region, v.visit_date, today=TODAY)
    rules = version.rules_for(v.insurance_type)

    def zero_at(level: str) -> list[str]:
        return sorted(
            c
            for c, rule in rules.categories.items()
            if rule.covered and (rule.ratio_permille or {})[level] == 0
        )

    level = v.facility_level if zero_at(v.facility_level) else "village"
    v = dataclasses.replace(v, facility_level=level, category=draw(st.sampled_from(zero_at(level))))
    pools = ["inpatient", "general_outpatient", "chronic_outpatient", "special_drug"]
    y = draw(ytds(v.visit_date.year))
    y = dataclasses.replace(
        y,
        deductible_used_fen={p: draw(small_totals) for p in pools if draw(st.booleans())},
        basic_paid_fen={p: draw(small_totals) for p in pools if draw(st.booleans())},
    )
    return policies, v, y


@PROPS
@given(zero_ratio_visits())
def test_a_ratio_zero_category_never_gets_basic_money_nor_moves_basic_totals(
    pvy: tuple[PolicySet, Visit, YearToDate],
) -> None:
    """Issue 8 item 16: no bonus turns a 0% ratio into basic money, and such a visit neither uses the
    basic annual cap (nor its pool's cap) nor consumes a deductible."""
    policies, v, y = pvy
    r = compute(policies, v, y, today=TODAY)
    assert r.basic_fen == 0
    assert r.basic_ratio_permille == 0
    assert r.deductible_fen == 0
    assert r.ytd.basic_paid_fen == y.basic_paid_fen
    assert r.ytd.deductible_used_fen == y.deductible_used_fen
    assert sum(layers(r)) == r.total_fen


CAP_WAIVED = sorted(
    k
    for k, t in POLICIES.select("340421", dt.date(2025, 6, 1), today=TODAY).resident.critical.tilt.items()
    if t.cap_waived
)


@st.composite
def cap_waived_visits(draw: st.DrawFn) -> tuple[Visit, YearToDate]:
    v = draw(visits(insurance="resident", assist=draw(st.sampled_from(CAP_WAIVED))))
    y = draw(ytds(v.visit_date.year))
    # Often at or past the 大病 annual cap (400,000 yuan), where a cap would bite.
    paid = draw(st.one_of(small_totals, st.integers(39_000_000, 60_000_000)))
    return v, dataclasses.replace(y, critical_paid_fen=paid)


@PROPS
@given(cap_waived_visits())
def test_a_waived_critical_cap_never_limits_any_critical_payment(vy: tuple[Visit, YearToDate]) -> None:
    """Issue 8 item 17: for 特困, 低保 and 返贫致贫 (tilt without a 大病 cap), what 大病 paid earlier in the
    year never changes any later 大病 payment, 特药 included: the result is the same as with nothing paid."""
    v, y = vy
    assert CAP_WAIVED == ["dibao", "poverty_returned", "tekun"]
    r = compute(POLICIES, v, y, today=TODAY)
    fresh = compute(POLICIES, v, dataclasses.replace(y, critical_paid_fen=0), today=TODAY)
    assert layers(r) == layers(fresh)
    assert r.ytd.critical_paid_fen == y.critical_paid_fen + r.critical_illness_fen
