"""生育津贴: the maternity allowance of an insured employee, computed from policy data:
average monthly wage of the employer's previous year ÷ 30 × the days of maternity leave.

The days, per 女职工劳动保护特别规定 (国务院令第619号, 2012) 第七条: "女职工生育享受98天产假，其中产前可以
休假15天；难产的，增加产假15天；生育多胞胎的，每多生育1个婴儿，增加产假15天". 第八条: the allowance
"按照用人单位上年度职工月平均工资的标准由生育保险基金支付". The ÷30 day rate is the usual conversion of a
monthly wage to a daily one in the regions' rules [typical]; provinces that grant longer leave change
the figures in ALLOWANCE, not the code.

Rounding, one rule: the allowance is wage_fen × days ÷ 30, rounded half up to the fen.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, ClassVar

from api.errors import BadUserInput
from api.filings.kinds.base import Context, Kind, KindComputation, review_stages
from api.filings.kinds.fields import BANK_ACCOUNT, Boolean, Date, Integer, Material, Money, Record, Text

ALLOWANCE = {
    "base_days": 98,  # 第七条
    "difficult_birth_extra_days": 15,  # 第七条: 难产
    "extra_days_per_additional_baby": 15,  # 第七条: 多胞胎, per baby beyond the first
    "prenatal_days_max": 15,  # 第七条: 产前可以休假15天
    "day_divisor": 30,  # monthly wage to a day's [typical]
}
MAX_MONTHLY_WAGE_FEN = 10_000_000  # 100,000 yuan a month: beyond any employer's average; a typo guard
CLAIM_WINDOW_DAYS = 366
"""A claim made more than a year after the birth is refused here [typical: regions set 1 to 2 years]."""


def leave_days(difficult_birth: bool, babies: int) -> int:
    return (
        ALLOWANCE["base_days"]
        + (ALLOWANCE["difficult_birth_extra_days"] if difficult_birth else 0)
        + ALLOWANCE["extra_days_per_additional_baby"] * (babies - 1)
    )


def allowance_fen(monthly_wage_fen: int, days: int) -> int:
    """wage × days ÷ 30, rounded half up to the fen (integer arithmetic only)."""
    divisor = ALLOWANCE["day_divisor"]
    return (monthly_wage_fen * days * 2 + divisor) // (2 * divisor)


class Maternity(Kind):
    code = "maternity"
    label = "生育津贴"
    spec = Record(
        "生育津贴",
        {
            "employer": Text("用人单位", max_length=100),
            "averageMonthlyWageFen": Money(
                "用人单位上年度职工月平均工资（分）", maximum=MAX_MONTHLY_WAGE_FEN
            ),
            "leaveStart": Date("产假开始日期"),
            "deliveryDate": Date("分娩日期"),
            "difficultBirth": Boolean("是否难产"),
            "babies": Integer("婴儿数", minimum=1, maximum=9),
            "bankAccount": BANK_ACCOUNT,
        },
        required=frozenset(
            {
                "employer",
                "averageMonthlyWageFen",
                "leaveStart",
                "deliveryDate",
                "difficultBirth",
                "babies",
                "bankAccount",
            }
        ),
    )
    materials = (
        Material("birth_certificate", "出生医学证明"),
        Material("difficult_birth_proof", "难产证明（医院出具）"),
        Material("employer_wage_proof", "用人单位上年度职工月平均工资证明"),
    )
    stages = review_stages(first=5, second=5, payment=5)
    depends: ClassVar[Mapping[str, frozenset[str]]] = {"difficultBirth": frozenset({"difficult_birth_proof"})}
    sources = (
        "产假98天，难产增加15天，多胞胎每多生育1个婴儿增加15天（女职工劳动保护特别规定 第七条）",
        "生育津贴按用人单位上年度职工月平均工资计发（同上 第八条）；日津贴=月平均工资÷30 [typical]",
        "计算结果按四舍五入保留到分",
        "期限为承诺时限示例（初审、复审、支付各5个工作日）[typical]",
    )

    def required_materials(self, values: Mapping[str, Any]) -> list[str]:
        needed = ["birth_certificate", "employer_wage_proof"]
        if values.get("difficultBirth"):
            needed.append("difficult_birth_proof")
        return needed

    def birth(self, values: Mapping[str, Any]) -> dt.date | None:
        day: dt.date = values["deliveryDate"]
        return day

    async def check(self, ctx: Context, values: dict[str, Any]) -> None:
        person = ctx.person
        if person.insurance_type != "employee":
            raise BadUserInput("生育津贴仅限参加职工医保（生育保险）的人员申请", field="input.kind")
        if person.gender != "F":
            raise BadUserInput("生育津贴由生育的女职工本人申领", field="input.kind")
        start: dt.date = values["leaveStart"]
        delivery: dt.date = values["deliveryDate"]
        if delivery < start:
            raise BadUserInput("分娩日期早于产假开始日期", field=ctx.at("deliveryDate"))
        if (delivery - start).days > ALLOWANCE["prenatal_days_max"]:
            raise BadUserInput(
                f"产前假最多{ALLOWANCE['prenatal_days_max']}天：产假开始日期距分娩日期过长",
                field=ctx.at("leaveStart"),
            )
        if delivery > ctx.today:
            raise BadUserInput("分娩日期不能晚于今天", field=ctx.at("deliveryDate"))
        if delivery < ctx.today - dt.timedelta(days=CLAIM_WINDOW_DAYS):
            raise BadUserInput("分娩已超过一年，已过申领期限", field=ctx.at("deliveryDate"))

    async def compute(self, ctx: Context, values: Mapping[str, Any]) -> KindComputation:
        days = leave_days(values["difficultBirth"], values["babies"])
        wage = values["averageMonthlyWageFen"]
        amount = allowance_fen(wage, days)
        start: dt.date = values["leaveStart"]
        return KindComputation(
            amount,
            {
                "leaveDays": days,
                "leaveEnd": (start + dt.timedelta(days=days - 1)).isoformat(),
                "averageMonthlyWageFen": wage,
                "dayDivisor": ALLOWANCE["day_divisor"],
                "rounding": "half_up_to_fen",
                "lines": [
                    f"产假{days}天 = 基础{ALLOWANCE['base_days']}天"
                    + (
                        f" + 难产{ALLOWANCE['difficult_birth_extra_days']}天"
                        if values["difficultBirth"]
                        else ""
                    )
                    + (
                        f" + 多胞胎{ALLOWANCE['extra_days_per_additional_baby'] * (values['babies'] - 1)}天"
                        if values["babies"] > 1
                        else ""
                    ),
                    f"生育津贴 = {wage}分 ÷ {ALLOWANCE['day_divisor']} × {days}天 = {amount}分（四舍五入到分）",
                ],
            },
        )


MATERNITY = Maternity()
