"""Hand-worked settlements against the shipped default policy (sync/settlement/policies/default.toml).

Each case shows its arithmetic. Figures used (2025 version unless a case says 2024):
  resident  inpatient   deductible/admission village,primary 200 | secondary 500 | tertiary 1000 yuan;
                        ratio 85% | 85% | 75% | 60%
            general out annual deductible 0 | 0 | 100 | 200 yuan; ratio 60% | 55% | 50% | 40%; cap 400 yuan
            pharmacy    pools with general outpatient; no deductible; 50%
            chronic     annual deductible 0 | 0 | 200 | 200 yuan; 75% | 75% | 72% | 70%; cap 5,000 yuan
            两病        50%; cap one disease 1,000 / both 1,500 yuan (2024: 500 / 1,000)
            special drug basic 0%; 大病 pays 80% (2024: 60%)
            basic annual cap 200,000 yuan; unregistered cross-region -20 points
            大病        threshold 15,000 yuan; 0-50k 60%, 50k-100k 70%, above 80%; cap 400,000 yuan;
                        tilt (tekun, dibao, poverty_returned): threshold -50%, ratio +5 points, no cap
                        (for 特药, paid at its flat ratio, only the "no cap" applies)
  employee  inpatient   deductible 300 | 300 | 600 | 1000 yuan; 95% | 95% | 93% | 92%; elderly +2 points
                        (the +2 points raise a ratio basic pays; a 0% category such as 特药 stays 0%)
            general out annual deductible 500 yuan; 60% | 60% | 55% | 50%; cap 3,000 yuan
            pharmacy    pools with general outpatient; deductible 500 yuan; 50%
            大病        threshold 20,000 yuan; 0-100k 70%, above 80%; cap 500,000 yuan
            special drug basic 0%; 大病 pays 80% (2024: 60%)
            basic annual cap 400,000 yuan
  assistance (inpatient, chronic, special drug; local or registered only):
            dibao 0 / 70%, tekun 0 / 100%, dibao_edge 3,000 yuan / 60%, poverty_returned 0 / 70%
All amounts below are fen (1 yuan = 100 fen); "x 0.6" means round_half_up(x * 600 / 1000).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest

from sync.settlement import BillItem, Visit, YearToDate, compute, load_default_policies

POLICIES = load_default_policies()
TODAY = dt.date(2025, 12, 31)
D25 = dt.date(2025, 3, 15)
D24 = dt.date(2024, 6, 1)


def A(fen: int) -> BillItem:
    return BillItem(fen, "class_a")


def B(fen: int, permille: int) -> BillItem:
    return BillItem(fen, "class_b", permille)


def C(fen: int) -> BillItem:
    return BillItem(fen, "class_c")


def visit(
    category: str,
    *items: BillItem,
    ins: str = "resident",
    age: str = "adult",
    level: str = "village",
    loc: str = "local",
    day: dt.date = D25,
    assist: str | None = None,
    chronic: frozenset[str] = frozenset(),
    two: frozenset[str] = frozenset(),
    balance: int = 0,
    use_pa: bool = True,
) -> Visit:
    return Visit(day, "340400", ins, age, level, loc, category, items, assist, chronic, two, balance, use_pa)


def ytd(day: dt.date = D25, **kw: Any) -> YearToDate:
    return YearToDate(day.year, **kw)


@dataclass(frozen=True)
class Case:
    name: str
    visit: Visit
    ytd: YearToDate
    # deductible, basic, critical illness, assistance, personal account, cash
    expect: tuple[int, int, int, int, int, int]


CASES = [
    # 5,000 at village: no deductible; basic 5,000 x 0.6 = 3,000; cash 2,000.
    Case("village outpatient", visit("general_outpatient", A(5_000)), ytd(), (0, 3_000, 0, 0, 0, 2_000)),
    # 3,333 at primary: 3,333 x 0.55 = 1,833.15 -> 1,833; cash 1,500.
    Case(
        "primary outpatient rounds down",
        visit("general_outpatient", A(3_333), level="primary"),
        ytd(),
        (0, 1_833, 0, 0, 0, 1_500),
    ),
    # 30 x 0.55 = 16.5 -> 17 (half up; banker's rounding would give 16); cash 13.
    Case("half rounds up", visit("general_outpatient", A(30), level="primary"), ytd(), (0, 17, 0, 0, 0, 13)),
    # Three 乙类 items of 5 at 10%: self-pay 15 x 0.1 = 1.5 -> 2 once for the bill (per item would be 3).
    # compliant 13; basic 13 x 0.6 = 7.8 -> 8; cash 15 - 8 = 7.
    Case(
        "class B share rounded once",
        visit("general_outpatient", B(5, 100), B(5, 100), B(5, 100)),
        ytd(),
        (0, 8, 0, 0, 0, 7),
    ),
    # Secondary, annual deductible 10,000 unused: 15,000 - 10,000 = 5,000 x 0.5 = 2,500; cash 12,500.
    Case(
        "annual deductible",
        visit("general_outpatient", A(15_000), level="secondary"),
        ytd(),
        (10_000, 2_500, 0, 0, 0, 12_500),
    ),
    # 4,000 of the deductible used earlier: 6,000 left; (15,000 - 6,000) x 0.5 = 4,500; cash 10,500.
    Case(
        "annual deductible partly used",
        visit("general_outpatient", A(15_000), level="secondary"),
        ytd(deductible_used_fen={"general_outpatient": 4_000}),
        (6_000, 4_500, 0, 0, 0, 10_500),
    ),
    # Cap 40,000, 39,000 paid: raw 5,000 x 0.6 = 3,000 limited to 1,000; cash 4,000.
    Case(
        "outpatient cap",
        visit("general_outpatient", A(5_000)),
        ytd(basic_paid_fen={"general_outpatient": 39_000}),
        (0, 1_000, 0, 0, 0, 4_000),
    ),
    # Pharmacy pools with general outpatient whose 40,000 cap is spent: basic 0; cash 2,000.
    Case(
        "pharmacy shares the outpatient cap",
        visit("pharmacy", A(2_000)),
        ytd(basic_paid_fen={"general_outpatient": 40_000}),
        (0, 0, 0, 0, 0, 2_000),
    ),
    # Primary inpatient 800,000: deductible 20,000; 780,000 x 0.85 = 663,000; oop 137,000 < threshold.
    Case(
        "primary inpatient",
        visit("inpatient", A(800_000), level="primary"),
        ytd(),
        (20_000, 663_000, 0, 0, 0, 137_000),
    ),
    # Tertiary: total 6,300,000; 丙类 300,000; 乙类 1,000,000 x 20% = 200,000; compliant 5,800,000.
    # Deductible 100,000; 5,700,000 x 0.6 = 3,420,000. oop 2,380,000, above 1,500,000 by 880,000:
    # 大病 880,000 x 0.6 = 528,000. Cash 300,000 + 200,000 + 1,852,000 = 2,352,000.
    Case(
        "tertiary inpatient with 乙类 and 丙类",
        visit("inpatient", A(5_000_000), B(1_000_000, 200), C(300_000), level="tertiary"),
        ytd(),
        (100_000, 3_420_000, 528_000, 0, 0, 2_352_000),
    ),
    # Cumulative oop 6,000,000 before (4,500,000 above threshold). Bill 2,000,000: deductible 100,000;
    # 1,900,000 x 0.6 = 1,140,000; oop 860,000 -> above threshold 4,500,000..5,360,000:
    # 500,000 x 0.6 + 360,000 x 0.7 = 300,000 + 252,000 = 552,000. Cash 860,000 - 552,000 = 308,000.
    Case(
        "大病 crosses a segment",
        visit("inpatient", A(2_000_000), level="tertiary"),
        ytd(basic_paid_fen={"inpatient": 9_000_000}, critical_oop_fen=6_000_000, critical_paid_fen=2_700_000),
        (100_000, 1_140_000, 552_000, 0, 0, 308_000),
    ),
    # 大病 cap 40,000,000, 39,900,000 paid: oop 460,000 (1,000,000 - 100,000 - 540,000) x 0.8 = 368,000,
    # limited to 100,000. Cash 360,000.
    Case(
        "大病 cap",
        visit("inpatient", A(1_000_000), level="tertiary"),
        ytd(critical_oop_fen=80_000_000, critical_paid_fen=39_900_000),
        (100_000, 540_000, 100_000, 0, 0, 360_000),
    ),
    # 大病 totals already past the cap: "cap reached", 0 (not negative). Cash 460,000.
    Case(
        "大病 already past cap",
        visit("inpatient", A(1_000_000), level="tertiary"),
        ytd(critical_oop_fen=80_000_000, critical_paid_fen=41_000_000),
        (100_000, 540_000, 0, 0, 0, 460_000),
    ),
    # 低保 tilt: threshold 1,500,000 x 50% = 750,000. Bill 2,000,000 tertiary: basic 1,140,000;
    # oop 860,000, 110,000 above 750,000 at 60% + 5 = 65% -> 71,500. Remaining 788,500;
    # assistance 70% = 551,950; cash 236,550.
    Case(
        "低保 tilt and assistance",
        visit("inpatient", A(2_000_000), level="tertiary", assist="dibao"),
        ytd(),
        (100_000, 1_140_000, 71_500, 551_950, 0, 236_550),
    ),
    # 特困: no 大病 cap even past 40,000,000. Oop 460,000 wholly above the tilted threshold in the
    # 80% segment: 460,000 x (80% + 5%) = 391,000. Assistance 100% of 69,000. Cash 0.
    Case(
        "特困 cap waived",
        visit("inpatient", A(1_000_000), level="tertiary", assist="tekun"),
        ytd(critical_oop_fen=90_000_000, critical_paid_fen=45_000_000),
        (100_000, 540_000, 391_000, 69_000, 0, 0),
    ),
    # 低保边缘: annual assistance threshold 300,000. Bill 1,000,000 secondary: deductible 50,000;
    # 950,000 x 0.75 = 712,500; oop 287,500 all absorbed by the threshold -> assistance 0.
    Case(
        "assistance threshold absorbs",
        visit("inpatient", A(1_000_000), level="secondary", assist="dibao_edge"),
        ytd(),
        (50_000, 712_500, 0, 0, 0, 287_500),
    ),
    # Second such admission: 12,500 of the threshold left; (287,500 - 12,500) x 0.6 = 165,000;
    # cash 122,500. (Cumulative oop 575,000 is still under 大病's 1,500,000.)
    Case(
        "assistance threshold remainder",
        visit("inpatient", A(1_000_000), level="secondary", assist="dibao_edge"),
        ytd(
            deductible_used_fen={"inpatient": 50_000},
            basic_paid_fen={"inpatient": 712_500},
            critical_oop_fen=287_500,
            assistance_threshold_used_fen=287_500,
        ),
        (50_000, 712_500, 0, 165_000, 0, 122_500),
    ),
    # Assistance does not cover general outpatient: basic 3,000, cash 2,000.
    Case(
        "no assistance for outpatient",
        visit("general_outpatient", A(5_000), assist="dibao"),
        ytd(),
        (0, 3_000, 0, 0, 0, 2_000),
    ),
    # Unregistered cross-region: 60% - 20 points = 40%; 900,000 x 0.4 = 360,000; oop 640,000 under the
    # tilted threshold 750,000; no assistance outside the insured region without registration.
    Case(
        "unregistered cross-region",
        visit("inpatient", A(1_000_000), level="tertiary", loc="unregistered", assist="dibao"),
        ytd(),
        (100_000, 360_000, 0, 0, 0, 640_000),
    ),
    # Registered cross-region: full 60%: 540,000; oop 460,000; assistance 70% = 322,000; cash 138,000.
    Case(
        "registered cross-region",
        visit("inpatient", A(1_000_000), level="tertiary", loc="registered", assist="dibao"),
        ytd(),
        (100_000, 540_000, 0, 322_000, 0, 138_000),
    ),
    # Employee retiree, tertiary: 92% + 2 = 94%; (1,500,000 - 100,000) x 0.94 = 1,316,000; oop 184,000;
    # personal account pays 50,000 of it (not the 丙类 100,000); cash 234,000.
    Case(
        "employee retiree with personal account",
        visit(
            "inpatient",
            A(1_500_000),
            C(100_000),
            ins="employee",
            age="elderly",
            level="tertiary",
            balance=50_000,
        ),
        ytd(),
        (100_000, 1_316_000, 0, 0, 50_000, 234_000),
    ),
    # Employee outpatient under the 50,000 annual deductible: basic 0; personal account pays the 20,000
    # 甲类 share but never the 30,000 丙类, whatever the balance.
    Case(
        "personal account never pays 丙类",
        visit("general_outpatient", A(20_000), C(30_000), ins="employee", level="primary", balance=1_000_000),
        ytd(),
        (20_000, 0, 0, 0, 20_000, 30_000),
    ),
    # Employee pharmacy, pooled deductible already met: 乙类 10,000 x 10% = 1,000 self-pay; compliant
    # 19,000 x 0.5 = 9,500; personal account min(5,000, 9,500 + 1,000) = 5,000; cash 5,500.
    Case(
        "employee pharmacy",
        visit("pharmacy", A(10_000), B(10_000, 100), ins="employee", balance=5_000),
        ytd(deductible_used_fen={"general_outpatient": 50_000}),
        (0, 9_500, 0, 0, 5_000, 5_500),
    ),
    # Same, opted out of the personal account: cash 10,500.
    Case(
        "personal account opt-out",
        visit("pharmacy", A(10_000), B(10_000, 100), ins="employee", balance=5_000, use_pa=False),
        ytd(deductible_used_fen={"general_outpatient": 50_000}),
        (0, 9_500, 0, 0, 0, 10_500),
    ),
    # 两病 both diseases (2025 cap 150,000), 140,000 used: raw 30,000 x 0.5 = 15,000 -> 10,000; cash 20,000.
    Case(
        "两病 both, 2025 cap",
        visit("two_diseases_outpatient", A(30_000), two=frozenset({"hypertension", "diabetes"})),
        ytd(basic_paid_fen={"two_diseases_outpatient": 140_000}),
        (0, 10_000, 0, 0, 0, 20_000),
    ),
    # 两病 hypertension only in 2024 (cap 50,000), 45,000 used: raw 10,000 -> 5,000; cash 15,000.
    Case(
        "两病 one disease, 2024 cap",
        visit("two_diseases_outpatient", A(20_000), two=frozenset({"hypertension"}), day=D24),
        ytd(D24, basic_paid_fen={"two_diseases_outpatient": 45_000}),
        (0, 5_000, 0, 0, 0, 15_000),
    ),
    # 大病特药 2025 for a 低保 resident: basic 0; 大病 80% of 1,000,000 = 800,000; assistance 70% of
    # 200,000 = 140,000; cash 60,000.
    Case(
        "special drug 2025",
        visit("special_drug", A(1_000_000), level="tertiary", assist="dibao"),
        ytd(),
        (0, 0, 800_000, 140_000, 0, 60_000),
    ),
    # 大病特药 in 2024: 60%: 600,000; cash 400,000.
    Case(
        "special drug 2024",
        visit("special_drug", A(1_000_000), level="tertiary", day=D24),
        ytd(D24),
        (0, 0, 600_000, 0, 0, 400_000),
    ),
    # Resident chronic at secondary: annual deductible 20,000; 80,000 x 0.72 = 57,600; cash 42,400.
    Case(
        "chronic outpatient",
        visit("chronic_outpatient", A(100_000), level="secondary", chronic=frozenset({"copd"})),
        ytd(),
        (20_000, 57_600, 0, 0, 0, 42_400),
    ),
    # Employee basic annual cap 40,000,000 with 39,900,000 paid: raw 900,000 x 0.92 = 828,000 -> 100,000.
    # oop 900,000 < 大病 threshold 2,000,000; cash 900,000.
    Case(
        "basic annual cap",
        visit("inpatient", A(1_000_000), ins="employee", level="tertiary"),
        ytd(basic_paid_fen={"inpatient": 39_900_000}),
        (100_000, 100_000, 0, 0, 0, 900_000),
    ),
    # Employee 大病: basic (5,000,000 - 100,000) x 0.92 = 4,508,000; oop 492,000 (deductible included);
    # cumulative 1,900,000 + 492,000 = 2,392,000, 392,000 above 2,000,000 at 70% = 274,400; cash 217,600.
    Case(
        "employee 大病",
        visit("inpatient", A(5_000_000), ins="employee", level="tertiary"),
        ytd(critical_oop_fen=1_900_000),
        (100_000, 4_508_000, 274_400, 0, 0, 217_600),
    ),
    # --- issue 8 item 16: a category basic insurance does not pay (ratio 0) stays at 0%.
    # Employee retiree, 大病特药 2025: the policy's basic ratio is 0%, and the retiree +2 points only
    # raise a ratio basic pays, so basic 0 (not 1,000,000 x 0.02 = 20,000). 大病 80% of 1,000,000 =
    # 800,000; left 200,000; personal account pays 50,000 of it; cash 150,000.
    Case(
        "retiree special drug: no basic despite the +2 points",
        visit("special_drug", A(1_000_000), ins="employee", age="elderly", level="tertiary", balance=50_000),
        ytd(),
        (0, 0, 800_000, 0, 50_000, 150_000),
    ),
    # Same in 2024 (大病特药 60%): basic 0; 大病 1,000,000 x 0.6 = 600,000; cash 400,000.
    Case(
        "retiree special drug 2024",
        visit("special_drug", A(1_000_000), ins="employee", age="elderly", level="tertiary", day=D24),
        ytd(D24),
        (0, 0, 600_000, 0, 0, 400_000),
    ),
    # Retiree with 10,000 left of the 40,000,000 basic annual cap (39,990,000 paid on admissions): the
    # special drug takes none of it (basic 0, not min(20,000, 10,000) = 10,000); 大病 80% of 1,000,000
    # = 800,000; cash 200,000. test_special_drug_leaves_the_basic_cap_alone chains the next admission.
    Case(
        "retiree special drug at the basic cap",
        visit("special_drug", A(1_000_000), ins="employee", age="elderly", level="tertiary"),
        ytd(basic_paid_fen={"inpatient": 39_990_000}),
        (0, 0, 800_000, 0, 0, 200_000),
    ),
    # --- issue 8 item 17: the 大病 tilt that waives the cap waives it for 特药 too.
    # 低保 resident, 大病 39,900,000 paid of the 40,000,000 cap: 特药 80% of 1,000,000 = 800,000 in full
    # (not limited to 100,000). Left 200,000; assistance 低保 70% (no threshold) = 140,000; cash 60,000.
    Case(
        "低保 special drug past the 大病 cap",
        visit("special_drug", A(1_000_000), level="tertiary", assist="dibao"),
        ytd(critical_paid_fen=39_900_000),
        (0, 0, 800_000, 140_000, 0, 60_000),
    ),
    # 特困 resident, 大病 already 45,000,000 (past the cap): 特药 800,000 (not 0); assistance 100% of the
    # 200,000 left (特困 cap 6,000,000 untouched); cash 0.
    Case(
        "特困 special drug past the 大病 cap",
        visit("special_drug", A(1_000_000), level="tertiary", assist="tekun"),
        ytd(critical_paid_fen=45_000_000),
        (0, 0, 800_000, 200_000, 0, 0),
    ),
    # 返贫致贫 in 2024, 大病 41,000,000 paid: 特药 60% of 1,000,000 = 600,000 (not 0); left 400,000;
    # assistance 70% (no threshold) = 280,000; cash 120,000.
    Case(
        "返贫致贫 special drug past the 大病 cap, 2024",
        visit("special_drug", A(1_000_000), level="tertiary", assist="poverty_returned", day=D24),
        ytd(D24, critical_paid_fen=41_000_000),
        (0, 0, 600_000, 280_000, 0, 120_000),
    ),
    # The boundary: 低保边缘 has no 大病 tilt, so its cap holds for 特药. 大病 40,000,000 paid: 0.
    # Assistance: annual threshold 300,000 of the 1,000,000; (1,000,000 - 300,000) x 0.6 = 420,000;
    # cash 580,000.
    Case(
        "低保边缘 special drug stays capped",
        visit("special_drug", A(1_000_000), level="tertiary", assist="dibao_edge"),
        ytd(critical_paid_fen=40_000_000),
        (0, 0, 0, 420_000, 0, 580_000),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hand_worked_case(case: Case) -> None:
    r = compute(POLICIES, case.visit, case.ytd, today=TODAY)
    got = (
        r.deductible_fen,
        r.basic_fen,
        r.critical_illness_fen,
        r.assistance_fen,
        r.personal_account_fen,
        r.cash_fen,
    )
    assert got == case.expect
    assert (
        r.total_fen
        == r.basic_fen + r.critical_illness_fen + r.assistance_fen + r.personal_account_fen + r.cash_fen
    )
    expected_version = "cn-default-2024" if case.visit.visit_date.year == 2024 else "cn-default-2025"
    assert r.policy_version_id == expected_version
    assert expected_version in r.lines[0]


def test_there_are_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20


def test_new_ytd_totals() -> None:
    case = next(c for c in CASES if c.name == "低保 tilt and assistance")
    r = compute(POLICIES, case.visit, case.ytd, today=TODAY)
    assert r.ytd == YearToDate(
        2025,
        deductible_used_fen={"inpatient": 100_000},
        basic_paid_fen={"inpatient": 1_140_000},
        critical_oop_fen=860_000,
        critical_paid_fen=71_500,
        assistance_threshold_used_fen=0,
        assistance_paid_fen=551_950,
    )


def test_pharmacy_counts_under_its_pool() -> None:
    r = compute(POLICIES, visit("pharmacy", A(2_000)), ytd(), today=TODAY)
    assert r.ytd.basic_paid_fen == {"general_outpatient": 1_000}


def test_special_drug_does_not_accumulate_critical_oop() -> None:
    r = compute(POLICIES, visit("special_drug", A(1_000_000), level="tertiary"), ytd(), today=TODAY)
    assert r.ytd.critical_oop_fen == 0
    assert r.ytd.critical_paid_fen == 800_000


def test_receipt_lines_explain_each_layer() -> None:
    case = next(c for c in CASES if c.name == "大病 cap")
    r = compute(POLICIES, case.visit, case.ytd, today=TODAY)
    text = "\n".join(r.lines)
    for needle in (
        "基本医保",
        "起付线1000.00元",
        "报销比例60%",
        "大病保险",
        "已达限额",
        "医疗救助",
        "现金支付3600.00元",
    ):
        assert needle in text
    assert r.lines[-1].startswith("合计10000.00元")


def test_sequence_matches_the_table() -> None:
    # The two 低保边缘 admissions above, chained through the returned YTD.
    first, second = (c for c in CASES if c.name.startswith("assistance threshold"))
    r1 = compute(POLICIES, first.visit, first.ytd, today=TODAY)
    r2 = compute(POLICIES, second.visit, r1.ytd, today=TODAY)
    assert r1.ytd == second.ytd
    assert r2.assistance_fen == 165_000


def test_special_drug_leaves_the_basic_cap_alone() -> None:
    # The retiree at the basic cap (above): the special drug adds nothing to the year's basic totals, so
    # the next admission still gets the 10,000 left. Tertiary 1,000,000: deductible 100,000;
    # 900,000 x 0.94 = 846,000, limited to 10,000. oop 990,000 < 大病 threshold 2,000,000; cash 990,000.
    case = next(c for c in CASES if c.name == "retiree special drug at the basic cap")
    drug = compute(POLICIES, case.visit, case.ytd, today=TODAY)
    assert drug.basic_ratio_permille == 0
    assert drug.ytd.basic_paid_fen == {"inpatient": 39_990_000}
    assert drug.ytd.deductible_used_fen == {}
    stay = visit("inpatient", A(1_000_000), ins="employee", age="elderly", level="tertiary")
    r = compute(POLICIES, stay, drug.ytd, today=TODAY)
    assert (r.deductible_fen, r.basic_fen, r.critical_illness_fen) == (100_000, 10_000, 0)
    assert r.cash_fen == 990_000
    assert sum(r.ytd.basic_paid_fen.values()) == 40_000_000


def test_zero_ratio_receipt_names_no_bonus() -> None:
    case = next(c for c in CASES if c.name == "retiree special drug: no basic despite the +2 points")
    r = compute(POLICIES, case.visit, case.ytd, today=TODAY)
    basic_line = next(line for line in r.lines if line.startswith("基本医保"))
    assert "提高" not in basic_line and "统筹支付0.00元" in basic_line
    assert "不予支付" in basic_line


def test_tilted_special_drug_receipt_says_no_cap() -> None:
    case = next(c for c in CASES if c.name == "低保 special drug past the 大病 cap")
    r = compute(POLICIES, case.visit, case.ytd, today=TODAY)
    crit_line = next(line for line in r.lines if line.startswith("大病保险"))
    assert "不设封顶线" in crit_line and "已达限额" not in crit_line
    assert r.ytd.critical_paid_fen == 40_700_000
