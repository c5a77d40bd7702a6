"""门诊慢特病: recognition of a chronic or special outpatient disease from the catalogue shipped as data
(api/filings/data/chronic_diseases.json). Approval adds the disease to the person's recognised ones,
which the settlement engine uses for chronic_outpatient visits, and tells the person's terminals."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from api.errors import BadUserInput
from api.filings.kinds.base import Context, Kind, review_stages
from api.filings.kinds.fields import Choice, Date, Material, Record, Text
from api.filings.models import Filing
from api.people.models import InsuredPerson
from api.replication import changelog


@dataclass(frozen=True)
class Disease:
    code: str
    name: str
    category: str
    category_label: str


@cache
def catalogue() -> dict[str, Disease]:
    raw = json.loads(resources.files("api.filings.data").joinpath("chronic_diseases.json").read_text("utf-8"))
    labels = raw["categories"]
    return {
        row["code"]: Disease(row["code"], row["name"], row["category"], labels[row["category"]])
        for row in raw["diseases"]
    }


class ChronicDisease(Kind):
    code = "chronic_disease"
    label = "门诊慢特病认定"
    spec = Record(
        "门诊慢特病认定",
        {
            "diseaseCode": Choice("病种", {d.code: d.name for d in catalogue().values()}),
            "diagnosingHospital": Text("确诊医院", max_length=100),
            "diagnosedOn": Date("确诊日期"),
            "evidence": Text("病情及证明材料说明", max_length=500),
        },
        required=frozenset({"diseaseCode", "diagnosingHospital", "diagnosedOn", "evidence"}),
    )
    materials = (
        Material("diagnosis_proof", "诊断证明书"),
        Material("medical_record", "病历或检查报告"),
    )
    stages = review_stages(first=10, second=5)
    sources = ("期限为承诺时限示例（初审10个工作日，复审5个工作日）[typical]",)

    def required_materials(self, values: Mapping[str, Any]) -> list[str]:
        return ["diagnosis_proof", "medical_record"]

    async def check(self, ctx: Context, values: dict[str, Any]) -> None:
        if values["diseaseCode"] in ctx.person.chronic_diseases:
            raise BadUserInput("该病种已认定，无需重复申请", field=ctx.at("diseaseCode"))
        diagnosed: dt.date = values["diagnosedOn"]
        if diagnosed > ctx.today:
            raise BadUserInput("确诊日期不能晚于今天", field=ctx.at("diagnosedOn"))
        if diagnosed < ctx.person.birth_date:
            raise BadUserInput("确诊日期早于出生日期", field=ctx.at("diagnosedOn"))

    async def approve(self, ctx: Context, filing: Filing, values: Mapping[str, Any]) -> None:
        person = await ctx.session.get(
            InsuredPerson, filing.person_id, with_for_update=True, populate_existing=True
        )
        assert person is not None and person.id is not None
        code = values["diseaseCode"]
        if code not in person.chronic_diseases:
            person.chronic_diseases = sorted({*person.chronic_diseases, code})
            ctx.session.add(person)
        await changelog.record(ctx.session, changelog.person_changed(person.id, person.village_code))


CHRONIC_DISEASE = ChronicDisease()
