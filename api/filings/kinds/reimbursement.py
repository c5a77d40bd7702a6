"""零星报销: manual reimbursement of visits paid in full at a hospital that could not settle directly.

The payable amount is what the settlement engine computes for each visit without the personal account
(the bill was paid in cash), against the person's whole-year totals: every stored, not voided
settlement of the visit's insurance year, including those dated after the visit, plus the visits of
the same filing priced before it (in date order). Not the year as it stood at the visit: a reimbursed
visit is a late arrival, and like a late (offline) terminal push it is the one adjusted to what the
year has left, so that per person and year basic insurance never pays past a cap whatever order visits
arrive in (api.replication.push prices the same way); a settlement stored after the reimbursement
counts it likewise, whatever the dates.

The amount shown before approval (computed at create, edit and resubmit) is an estimate against the
year as stored then, and says so (``computation.estimate``). Approval takes the person's row lock,
re-reads the person, prices again and records each visit as a settlement (source ``reimbursement``),
so it counts in the year-to-date totals of every later settlement; the filing then carries what was
recorded."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from sqlalchemy import select
from sqlmodel import col

from api.db import dialect_insert
from api.errors import BadUserInput
from api.filings.kinds.base import Context, Kind, KindComputation, review_stages
from api.filings.kinds.fields import (
    BANK_ACCOUNT,
    Choice,
    Date,
    Integer,
    ListOf,
    Material,
    Money,
    Record,
    Region,
    Text,
)
from api.filings.models import Filing
from api.pagination import SHANGHAI
from api.people.models import Facility, InsuredPerson, Settlement
from api.replication import changelog
from api.settlement import service as settlement
from sync.settlement import (
    FACILITY_LEVELS,
    ITEM_CLASSES,
    VISIT_CATEGORIES,
    SettlementResult,
    Visit,
    YearToDate,
)

MAX_AGE_DAYS = 366
"""Visits older than a year are not reimbursed here [typical: regions close claims after 1 year or at
the end of the following year]."""
INVOICE = re.compile(r"[0-9A-Za-z-]{4,32}", re.ASCII)
SOURCE = "reimbursement"
SETTLEMENT_ENTITY = "settlement"

ITEM = Record(
    "费用明细",
    {
        "name": Text("项目名称", max_length=100),
        "code": Text("项目编码", max_length=50),
        "amountFen": Money("金额（分）"),
        "itemClass": Choice("类别", ITEM_CLASSES),
        "selfPayPermille": Integer("乙类先行自付比例（千分比）", minimum=0, maximum=1000),
    },
    required=frozenset({"name", "amountFen", "itemClass"}),
)
VISIT = Record(
    "就诊记录",
    {
        "visitDate": Date("就诊日期"),
        "hospitalName": Text("医院名称", max_length=100),
        "facilityLevel": Choice("医院等级", FACILITY_LEVELS),
        "region": Region("医院所在地行政区划代码"),
        "category": Choice("就诊类别", VISIT_CATEGORIES),
        "invoiceNumber": Text(
            "发票号码", max_length=32, pattern=INVOICE, pattern_hint="4到32位字母、数字或-"
        ),
        "invoiceAmountFen": Money("发票金额（分）"),
        "items": ListOf("费用明细", ITEM, max_items=200),
    },
    required=frozenset(
        {
            "visitDate",
            "hospitalName",
            "facilityLevel",
            "region",
            "category",
            "invoiceNumber",
            "invoiceAmountFen",
            "items",
        }
    ),
)


def normalise_invoice(number: str) -> str:
    return number.strip().upper()


@dataclass(frozen=True)
class Priced:
    index: int
    visit: Visit
    before: YearToDate
    result: SettlementResult
    version: Any


def _settled_at(day: dt.date) -> dt.datetime:
    """A reimbursed visit counts as settled at noon of its day (Asia/Shanghai)."""
    return dt.datetime.combine(day, dt.time(12), SHANGHAI).astimezone(dt.UTC)


async def _external_facility(ctx: Context, visit: Mapping[str, Any]) -> int:
    """The hospital as a facility row (found or added): settlements name a facility."""
    key = f"{visit['region']}|{visit['facilityLevel']}|{visit['hospitalName']}"
    code = "EXT" + hashlib.sha256(key.encode()).hexdigest()[:17]
    insert = dialect_insert(ctx.session)
    await ctx.session.execute(
        insert(Facility)
        .values(
            code=code,
            name=visit["hospitalName"],
            level=visit["facilityLevel"],
            kind="hospital",
            region_code=visit["region"],
        )
        .on_conflict_do_nothing(index_elements=["code"])
    )
    found = await ctx.session.execute(select(col(Facility.id)).where(col(Facility.code) == code))
    facility_id = found.scalar_one()
    assert facility_id is not None
    return facility_id


class Reimbursement(Kind):
    code = "reimbursement"
    label = "零星报销"
    spec = Record(
        "零星报销",
        {"visits": ListOf("就诊记录", VISIT, max_items=20), "bankAccount": BANK_ACCOUNT},
        required=frozenset({"visits", "bankAccount"}),
    )
    materials = (
        Material("invoice", "医疗收费票据（发票）"),
        Material("expense_list", "费用明细清单"),
        Material("discharge_summary", "出院记录（住院）"),
        Material("referral_letter", "转诊或备案证明"),
    )
    stages = review_stages(first=10, second=5, payment=5)
    depends: ClassVar[Mapping[str, frozenset[str]]] = {"visits": frozenset({"discharge_summary"})}
    sources = (
        "报销金额由结算引擎按当年已记录的全部结算累计计算（含就诊日之后已结算的，不超过年度限额；不使用个人账户），审核通过前为预估，以审核通过时计算的为准",
        "期限为承诺时限示例（初审10个、复审5个、支付5个工作日，合计20个工作日）[typical]",
    )

    def required_materials(self, values: Mapping[str, Any]) -> list[str]:
        needed = ["invoice", "expense_list"]
        if any(v.get("category") == "inpatient" for v in values.get("visits", [])):
            needed.append("discharge_summary")
        return needed

    def invoices(self, values: Mapping[str, Any]) -> list[str]:
        return [normalise_invoice(v["invoiceNumber"]) for v in values.get("visits", [])]

    async def check(self, ctx: Context, values: dict[str, Any]) -> None:
        seen: dict[str, int] = {}
        for i, visit in enumerate(values["visits"]):
            at = f"{ctx.at('visits')}[{i}]"
            day: dt.date = visit["visitDate"]
            if day > ctx.today:
                raise BadUserInput("就诊日期不能晚于今天", field=f"{at}.visitDate")
            if day < ctx.today - dt.timedelta(days=MAX_AGE_DAYS):
                raise BadUserInput("就诊已超过一年，已过报销期限", field=f"{at}.visitDate")
            if day < ctx.person.birth_date:
                raise BadUserInput("就诊日期早于出生日期", field=f"{at}.visitDate")
            total = sum(item["amountFen"] for item in visit["items"])
            if total != visit["invoiceAmountFen"]:
                raise BadUserInput(
                    f"发票金额（{visit['invoiceAmountFen']}分）与费用明细合计（{total}分）不符",
                    field=f"{at}.invoiceAmountFen",
                )
            number = normalise_invoice(visit["invoiceNumber"])
            if number in seen:
                raise BadUserInput("同一张发票不能重复填写", field=f"{at}.invoiceNumber")
            seen[number] = i

    async def price(
        self, ctx: Context, values: Mapping[str, Any], *, record: Filing | None = None
    ) -> list[Priced]:
        """Each visit through the engine, in date order, against the person's whole-year totals (see the
        module docstring): every stored, not voided settlement of the visit's year, plus the visits of
        this filing priced before it. With `record`, each is stored as a settlement (and flushed) before
        the next is priced."""
        visits = list(values["visits"])
        order = sorted(range(len(visits)), key=lambda i: (visits[i]["visitDate"], i))
        person_id = ctx.person.id or 0
        # Per year: the stored totals, read first (before anything else of the visits), then carried
        # from visit to visit as the engine answers them (what year_to_date answers once the visit is
        # stored, as a terminal push carries them).
        totals = {
            year: await settlement.year_to_date(ctx.session, person_id, year)
            for year in sorted({v["visitDate"].year for v in visits})
        }
        priced: list[Priced] = []
        for i in order:
            visit = visits[i]
            at = f"{ctx.at('visits')}[{i}]"
            request = settlement.EstimateRequest(
                category=visit["category"],
                items=[
                    settlement.ItemInput(
                        item["amountFen"],
                        item["itemClass"],
                        item.get("selfPayPermille", 0),
                        item.get("code"),
                        item.get("name"),
                    )
                    for item in visit["items"]
                ],
                facility_level=visit["facilityLevel"],
                visit_date=visit["visitDate"],
                visit_region=visit["region"],
                use_personal_account=False,
            )
            year = visit["visitDate"].year
            try:
                estimate = await settlement.estimate(
                    ctx.session, person_id, request, today=ctx.today, ytd=totals[year]
                )
            except BadUserInput as exc:
                tail = (exc.field or "").split(".", 1)[1] if "." in (exc.field or "") else ""
                raise BadUserInput(exc.message, field=f"{at}.{tail}" if tail else at) from None
            totals[year] = estimate.result.ytd
            priced.append(Priced(i, estimate.visit, estimate.ytd_before, estimate.result, estimate.version))
            if record is not None:
                await self._record(ctx, record, visit, priced[-1])
        return priced

    async def _record(self, ctx: Context, filing: Filing, raw: Mapping[str, Any], p: Priced) -> None:
        assert filing.id is not None and ctx.person.id is not None
        row = Settlement(
            person_id=ctx.person.id,
            facility_id=await _external_facility(ctx, raw),
            settled_at=_settled_at(p.visit.visit_date),
            year=p.visit.visit_date.year,
            category=p.visit.category,
            visit_scope=p.visit.locality,
            total_fen=p.result.total_fen,
            compliant_fen=p.result.compliant_fen,
            deductible_fen=p.result.deductible_fen,
            basic_fen=p.result.basic_fen,
            critical_illness_fen=p.result.critical_illness_fen,
            assistance_fen=p.result.assistance_fen,
            personal_account_fen=p.result.personal_account_fen,
            cash_fen=p.result.cash_fen,
            policy_version=p.result.policy_version_id,
            source=SOURCE,
            client_ref=f"filing:{filing.id}:{p.index}",
            visit=p.visit.to_dict(),
            **settlement.ytd_columns(p.version, p.visit, p.before, p.result),
        )
        ctx.session.add(row)
        await ctx.session.flush()
        assert row.id is not None
        await changelog.record(
            ctx.session,
            [
                changelog.Change(SETTLEMENT_ENTITY, str(row.id), changelog.person_scope(ctx.person.id)),
                *changelog.person_changed(ctx.person.id, ctx.person.village_code),
            ],
        )

    @staticmethod
    def summary(priced: Sequence[Priced], *, estimate: bool) -> KindComputation:
        """`estimate`: before approval, priced against the year as stored at that time; approval prices
        again under the person's lock and records that (a settlement stored in between counts)."""
        total = sum(p.result.insurance_fen for p in priced)
        lines = [f"应报销合计 {total}分（基本医保 + 大病保险 + 医疗救助）"]
        if estimate:
            lines.append("此为预估：审核通过时按届时当年已记录的全部结算重新计算，以通过时的金额为准")
        return KindComputation(
            total,
            {
                "estimate": estimate,
                "visits": [
                    {
                        "index": p.index,
                        "visitDate": p.visit.visit_date.isoformat(),
                        "locality": p.visit.locality,
                        "policyVersion": p.result.policy_version_id,
                        "totalFen": p.result.total_fen,
                        "compliantFen": p.result.compliant_fen,
                        "deductibleFen": p.result.deductible_fen,
                        "basicFen": p.result.basic_fen,
                        "criticalIllnessFen": p.result.critical_illness_fen,
                        "assistanceFen": p.result.assistance_fen,
                        "cashFen": p.result.cash_fen,
                        "payableFen": p.result.insurance_fen,
                        "lines": list(p.result.lines),
                    }
                    for p in sorted(priced, key=lambda p: p.index)
                ],
                "lines": lines,
            },
        )

    async def compute(self, ctx: Context, values: Mapping[str, Any]) -> KindComputation:
        return self.summary(await self.price(ctx, values), estimate=True)

    async def approve(self, ctx: Context, filing: Filing, values: Mapping[str, Any]) -> None:
        # Before the year-to-date totals are read: a terminal push for the same person waits (or is
        # waited for), instead of both paying out of the same remaining annual cap.
        await settlement.lock_people(ctx.session, [filing.person_id])
        # The person was loaded before the lock; what committed since (a 门诊慢特病 approval, which
        # locks the same row) must be in the visits priced and recorded. settlement.estimate reads the
        # person from the session's identity map, so the refresh reaches it too.
        person = await ctx.session.get(InsuredPerson, filing.person_id, populate_existing=True)
        assert person is not None
        ctx.person = person
        computed = self.summary(await self.price(ctx, values, record=filing), estimate=False)
        filing.amount_fen = computed.amount_fen
        filing.computation = computed.details


REIMBURSEMENT = Reimbursement()
