"""GraphQL: policy versions (list, admin create) and 预结算 estimates. Thin: the rules are in service."""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from api.auth.permissions import IsAdmin, IsAuthenticated, IsResident
from api.context import Info
from api.errors import BadUserInput, NotFound
from api.family import service as family_service
from api.family.models import Permission
from api.ids import parse_id
from api.settlement import service
from api.settlement.models import PolicyVersionRow
from sync.settlement import YearToDate


@strawberry.type(name="PolicyVersion", description="One version of a region's settlement policy tables.")
class PolicyVersionType:
    id: strawberry.ID
    region: str = strawberry.field(description="6-digit region code; 000000 is the national fallback.")
    name: str
    effective_from: dt.date = strawberry.field(description="First day in force (Asia/Shanghai), inclusive.")
    effective_to: dt.date | None = strawberry.field(description="Exclusive end; null while open-ended.")
    tables: JSON = strawberry.field(
        description="The full version in the engine's JSON form (fen, per mille)."
    )
    created_at: dt.datetime
    seeded: bool = strawberry.field(description="True when it came from the policy file shipped with yibao.")

    @classmethod
    def from_row(cls, row: PolicyVersionRow) -> PolicyVersionType:
        return cls(
            id=strawberry.ID(row.id),
            region=row.region,
            name=row.name,
            effective_from=row.effective_from,
            effective_to=row.effective_to,
            tables=cast(JSON, row.body),
            created_at=row.created_at,
            seeded=row.created_by is None,
        )


@strawberry.input(description="Exactly one of `version` (a JSON object) or `text` (JSON or TOML text).")
class CreatePolicyVersionInput:
    version: JSON | None = None
    text: str | None = None


@strawberry.input
class BillItemInput:
    amount_fen: int
    item_class: str = strawberry.field(default="class_a", description="class_a | class_b | class_c")
    self_pay_permille: int = strawberry.field(
        default=0, description="乙类先行自付 share in per mille (0-1000); 0 for class_a and class_c."
    )
    code: str | None = None
    name: str | None = None


@strawberry.input(description="A visit to price. Everything about the person is filled in by the server.")
class EstimateSettlementInput:
    category: str = strawberry.field(
        description="general_outpatient | chronic_outpatient | two_diseases_outpatient | inpatient | pharmacy | special_drug"
    )
    items: list[BillItemInput]
    facility_id: strawberry.ID | None = strawberry.field(default=None, description="Or give facilityLevel.")
    facility_level: str | None = strawberry.field(
        default=None, description="village | primary | secondary | tertiary"
    )
    locality: str | None = strawberry.field(
        default=None,
        description="local | registered | unregistered: always the server's; a different value is refused.",
        deprecation_reason="The server decides the locality from the facility's region (or visitRegion) and my approved 异地就医备案.",
    )
    visit_region: str | None = strawberry.field(
        default=None,
        description=(
            "Where the visit happens (6-digit region code); the facility's region when facilityId is given,"
            " else my own region. The locality follows: local in my pooling area, registered where an"
            " approved 异地就医备案 covers the region and date, else unregistered."
        ),
    )
    visit_date: dt.date | None = strawberry.field(
        default=None, description="Defaults to today (Asia/Shanghai)."
    )
    use_personal_account: bool = True
    link_id: strawberry.ID | None = strawberry.field(
        default=None, description="Estimate for a linked relative (needs the read-records permission)."
    )


@strawberry.type(name="PoolAmount")
class PoolAmountType:
    category: str
    amount_fen: int


@strawberry.type(
    name="YearToDate", description="Totals of an insurance year that caps and deductibles count."
)
class YearToDateType:
    year: int
    deductible_used_fen: list[PoolAmountType]
    basic_paid_fen: list[PoolAmountType]
    critical_oop_fen: int = strawberry.field(
        description="Cumulative compliant out-of-pocket that 大病 works on."
    )
    critical_paid_fen: int
    assistance_threshold_used_fen: int
    assistance_paid_fen: int

    @classmethod
    def from_ytd(cls, ytd: YearToDate) -> YearToDateType:
        return cls(
            year=ytd.year,
            deductible_used_fen=[
                PoolAmountType(category=k, amount_fen=v) for k, v in sorted(ytd.deductible_used_fen.items())
            ],
            basic_paid_fen=[
                PoolAmountType(category=k, amount_fen=v) for k, v in sorted(ytd.basic_paid_fen.items())
            ],
            critical_oop_fen=ytd.critical_oop_fen,
            critical_paid_fen=ytd.critical_paid_fen,
            assistance_threshold_used_fen=ytd.assistance_threshold_used_fen,
            assistance_paid_fen=ytd.assistance_paid_fen,
        )


@strawberry.type(
    name="SettlementEstimate", description="预结算: how the bill would split today. Nothing is stored."
)
class SettlementEstimateType:
    policy_version: str
    policy_version_name: str
    visit_date: dt.date
    insurance_type: str
    age_group: str
    facility_level: str
    assistance_category: str | None
    total_fen: int
    non_compliant_fen: int = strawberry.field(description="丙类, always the person's.")
    class_b_self_pay_fen: int = strawberry.field(description="乙类先行自付.")
    compliant_fen: int = strawberry.field(description="政策范围内.")
    deductible_fen: int
    basic_ratio_permille: int
    basic_fen: int
    critical_illness_fen: int
    assistance_fen: int
    personal_account_fen: int
    cash_fen: int
    insurance_fen: int = strawberry.field(description="Paid by the funds: basic + 大病 + assistance.")
    personal_account_balance_fen: int
    lines: list[str] = strawberry.field(description="The zh-CN explanation, one line per layer.")
    year_to_date_before: YearToDateType
    year_to_date_after: YearToDateType

    @classmethod
    def from_estimate(cls, e: service.Estimate) -> SettlementEstimateType:
        r, v = e.result, e.visit
        return cls(
            policy_version=r.policy_version_id,
            policy_version_name=e.version.name,
            visit_date=v.visit_date,
            insurance_type=v.insurance_type,
            age_group=v.age_group,
            facility_level=v.facility_level,
            assistance_category=v.assistance_category,
            total_fen=r.total_fen,
            non_compliant_fen=r.non_compliant_fen,
            class_b_self_pay_fen=r.class_b_self_pay_fen,
            compliant_fen=r.compliant_fen,
            deductible_fen=r.deductible_fen,
            basic_ratio_permille=r.basic_ratio_permille,
            basic_fen=r.basic_fen,
            critical_illness_fen=r.critical_illness_fen,
            assistance_fen=r.assistance_fen,
            personal_account_fen=r.personal_account_fen,
            cash_fen=r.cash_fen,
            insurance_fen=r.insurance_fen,
            personal_account_balance_fen=v.personal_account_balance_fen,
            lines=list(r.lines),
            year_to_date_before=YearToDateType.from_ytd(e.ytd_before),
            year_to_date_after=YearToDateType.from_ytd(r.ytd),
        )


def _request(data: EstimateSettlementInput) -> service.EstimateRequest:
    return service.EstimateRequest(
        category=data.category,
        items=[
            service.ItemInput(i.amount_fen, i.item_class, i.self_pay_permille, i.code, i.name)
            for i in data.items
        ],
        facility_id=None if data.facility_id is None else parse_id(data.facility_id, "input.facilityId"),
        facility_level=data.facility_level,
        locality=data.locality,
        visit_date=data.visit_date,
        use_personal_account=data.use_personal_account,
        visit_region=data.visit_region,
    )


@strawberry.type
class SettlementQuery:
    @strawberry.field(
        permission_classes=[IsAuthenticated],
        description="Stored policy versions, by region then start date; optionally one region's.",
    )
    async def policy_versions(self, info: Info, region: str | None = None) -> list[PolicyVersionType]:
        async with info.context.db() as session:
            rows = await service.list_versions(session, region)
        return [PolicyVersionType.from_row(row) for row in rows]

    @strawberry.field(
        permission_classes=[IsResident],
        description="预结算: price a bill for me (or a linked relative) with my real year-to-date totals.",
    )
    async def estimate_settlement(self, info: Info, input: EstimateSettlementInput) -> SettlementEstimateType:
        viewer = await info.context.require_viewer()
        request = _request(input)
        async with info.context.db() as session:
            if input.link_id is not None:
                link = await family_service.access_checked(
                    session,
                    viewer,
                    parse_id(input.link_id, "input.linkId"),
                    Permission.READ_RECORDS,
                    "estimate:settlement",
                )
                person_id = link.relative_person_id
            elif viewer.person_id is None:
                raise NotFound("账号尚未绑定参保人，请先完成实名认证")
            else:
                person_id = viewer.person_id
            estimate = await service.estimate(session, person_id, request)
        return SettlementEstimateType.from_estimate(estimate)


@strawberry.type
class SettlementMutation:
    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Store a new policy version (admin). It must start after today; see the docs of the rule.",
    )
    async def create_policy_version(self, info: Info, input: CreatePolicyVersionInput) -> PolicyVersionType:
        viewer = await info.context.require_viewer()
        if (input.version is None) == (input.text is None):
            raise BadUserInput(
                "请提供 version（JSON对象）或 text（JSON/TOML文本）之一", field="input.version"
            )
        raw: Any = input.version if input.version is not None else input.text
        data = service.parse_version_input(raw, "input.version" if input.text is None else "input.text")
        async with info.context.db() as session:
            row = await service.create_version(session, data, created_by=viewer.account_id)
        return PolicyVersionType.from_row(row)
