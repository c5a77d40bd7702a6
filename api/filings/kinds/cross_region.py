"""异地就医备案: cross-region treatment registration. Approval registers the person for the destination
and period, so visits there settle as registered (已备案) cross-region care."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, ClassVar

from api.errors import BadUserInput
from api.filings.kinds.base import Context, Kind, review_stages
from api.filings.kinds.fields import Choice, Date, Material, Record, Region, Text
from api.filings.models import CrossRegionRegistration, Filing
from api.filings.registrations import same_pooling_area

TYPES = {
    "long_term_residence": "异地长期居住",
    "temporary_trip": "临时外出就医",
    "referral": "转诊转院",
}
MAX_DAYS = {"long_term_residence": 5 * 366, "temporary_trip": 366, "referral": 366}
"""Longest period one registration may cover, per type [typical: long-term residence stays in force until
it is changed, here at most five years before it is renewed; a temporary trip or a referral is in force
for at least six months under 医保发〔2022〕22号 and at most a year here]."""
MAX_BACKDATE_DAYS = 90
"""A registration may be made after the care began (补办备案, 医保发〔2022〕22号) for up to this many days."""
MAX_AHEAD_DAYS = 180


class CrossRegion(Kind):
    code = "cross_region"
    label = "异地就医备案"
    spec = Record(
        "异地就医备案",
        {
            "registrationType": Choice("备案类型", TYPES),
            "destinationRegion": Region("就医地行政区划代码"),
            "startOn": Date("备案开始日期"),
            "endOn": Date("备案结束日期"),
            "reason": Text("备案原因", max_length=200),
            "hospital": Text("转入医院", max_length=100),
        },
        required=frozenset({"registrationType", "destinationRegion", "startOn", "endOn", "reason"}),
    )
    materials = (
        Material("referral_letter", "转诊转院证明"),
        Material("residence_proof", "异地居住证明或个人承诺书"),
    )
    stages = review_stages(first=3, second=2)
    depends: ClassVar[Mapping[str, frozenset[str]]] = {
        "registrationType": frozenset({"referral_letter", "residence_proof"})
    }
    sources = (
        "期限为承诺时限示例（初审3个工作日，复审2个工作日）[typical]",
        "临时外出就医、转诊备案有效期原则上不少于6个月（医保发〔2022〕22号）；本系统一次最长366天，长期居住最长5年",
    )

    def required_materials(self, values: Mapping[str, Any]) -> list[str]:
        kind = values.get("registrationType")
        if kind == "referral":
            return ["referral_letter"]
        if kind == "long_term_residence":
            return ["residence_proof"]
        return []

    async def check(self, ctx: Context, values: dict[str, Any]) -> None:
        kind, start, end = values["registrationType"], values["startOn"], values["endOn"]
        if kind == "referral" and "hospital" not in values:
            raise BadUserInput("转诊转院备案须填写转入医院", field=ctx.at("hospital"))
        if same_pooling_area(ctx.person.region_code, values["destinationRegion"]):
            raise BadUserInput("就医地在参保地统筹区内，无需备案", field=ctx.at("destinationRegion"))
        if end < start:
            raise BadUserInput("备案结束日期早于开始日期", field=ctx.at("endOn"))
        if (end - start).days + 1 > MAX_DAYS[kind]:
            raise BadUserInput(f"{TYPES[kind]}备案一次最长{MAX_DAYS[kind]}天", field=ctx.at("endOn"))
        if start < ctx.today - dt.timedelta(days=MAX_BACKDATE_DAYS):
            raise BadUserInput(f"补办备案最多追溯{MAX_BACKDATE_DAYS}天", field=ctx.at("startOn"))
        if start > ctx.today + dt.timedelta(days=MAX_AHEAD_DAYS):
            raise BadUserInput(f"备案开始日期最多提前{MAX_AHEAD_DAYS}天", field=ctx.at("startOn"))

    async def approve(self, ctx: Context, filing: Filing, values: Mapping[str, Any]) -> None:
        assert filing.id is not None
        ctx.session.add(
            CrossRegionRegistration(
                person_id=filing.person_id,
                filing_id=filing.id,
                registration_type=values["registrationType"],
                region_code=values["destinationRegion"],
                start_on=values["startOn"],
                end_on=values["endOn"],
                hospital=values.get("hospital"),
            )
        )


CROSS_REGION = CrossRegion()
