"""GraphQL: the insured person (`me`, and later `relative`) with records as Relay connections."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import strawberry

from api.auth.permissions import IsAdmin, IsResident
from api.context import Info
from api.errors import NotFound
from api.family.service import parse_id
from api.pagination import local_today
from api.people import dataloaders, idnumbers, service
from api.people.models import AccountFlow, Contribution, Enrolment, Facility, InsuredPerson, Settlement
from api.relay import Connection
from api.replication import service as replication_service
from api.settlement.models import SettlementAdjustment
from api.vouchers import revocations

# The domain's codes and their zh-CN labels are defined once, beside the engine that uses them.
from sync.protocol import ADJUST_LABELS, AdjustReason
from sync.settlement import FACILITY_LEVELS, INSURANCE_TYPES, VISIT_CATEGORIES

FLOW_KIND_LABELS = {
    "allocation": "划入",
    "settlement": "消费支出",
    "family_transfer": "家庭共济",
    "interest": "利息",
    "settlement_void": "结算作废退回",
}


@strawberry.type(name="Facility", description="A designated medical institution or pharmacy (定点医药机构).")
class FacilityType:
    id: strawberry.ID
    code: str
    name: str
    level: str
    level_label: str
    kind: str
    region_code: str

    @classmethod
    def from_row(cls, row: Facility) -> FacilityType:
        return cls(
            id=strawberry.ID(str(row.id)),
            code=row.code,
            name=row.name,
            level=row.level,
            level_label=FACILITY_LEVELS.get(row.level, row.level),
            kind=row.kind,
            region_code=row.region_code,
        )


@strawberry.type(
    name="SettlementAdjustment",
    description="How the server's settlement of a clinic terminal's offline visit differs from the terminal's "
    "预结算 (it could not know the visits elsewhere that count toward the same caps).",
)
class SettlementAdjustmentType:
    reason: str = strawberry.field(description="recomputed | policy_version | visit_date")
    reason_label: str
    basic_delta_fen: int = strawberry.field(description="Server minus terminal, per layer; likewise below.")
    critical_illness_delta_fen: int
    assistance_delta_fen: int
    personal_account_delta_fen: int
    cash_delta_fen: int = strawberry.field(
        description="What the person owes (+) or is owed (-) beyond what the clinic took."
    )
    terminal_cash_fen: int = strawberry.field(description="The cash the terminal asked for at the visit.")
    terminal_policy_version: str | None
    created_at: dt.datetime

    @classmethod
    def from_row(cls, row: SettlementAdjustment) -> SettlementAdjustmentType:
        split = row.terminal_split
        try:
            label = ADJUST_LABELS[AdjustReason(row.reason)]
        except ValueError:
            label = row.reason
        return cls(
            reason=row.reason,
            reason_label=label,
            basic_delta_fen=row.basic_delta_fen,
            critical_illness_delta_fen=row.critical_illness_delta_fen,
            assistance_delta_fen=row.assistance_delta_fen,
            personal_account_delta_fen=row.personal_account_delta_fen,
            cash_delta_fen=row.cash_delta_fen,
            terminal_cash_fen=int(split.get("cashFen", 0)),
            terminal_policy_version=split.get("policyVersion"),
            created_at=row.created_at,
        )


@strawberry.type(name="Settlement", description="One settled visit (结算) and how the bill split.")
class SettlementType:
    id: strawberry.ID
    settled_at: dt.datetime
    year: int
    category: str
    category_label: str
    visit_scope: str
    total_fen: int
    compliant_fen: int
    deductible_fen: int
    basic_fen: int = strawberry.field(description="Paid by basic medical insurance (统筹基金).")
    critical_illness_fen: int = strawberry.field(description="Paid by critical-illness insurance (大病保险).")
    assistance_fen: int = strawberry.field(description="Paid by medical assistance (医疗救助).")
    personal_account_fen: int
    cash_fen: int
    policy_version: str = strawberry.field(description="The policy version the amounts were computed with.")
    source: str = strawberry.field(
        description="hospital | terminal (a village clinic's terminal, maybe offline)"
    )
    voided: bool = strawberry.field(
        description="Voided by the clinic: kept for the record, counted in no total or cap."
    )
    voided_at: dt.datetime | None
    adjustment: SettlementAdjustmentType | None = strawberry.field(
        description="For a terminal's settlement the server recomputed: how it differs from the terminal's."
    )
    _facility: strawberry.Private[Facility | None]
    """Loaded for the whole page at once by the list's resolver, through the request's dataloader."""

    @strawberry.field
    def facility(self) -> FacilityType:
        if self._facility is None:
            raise NotFound("未找到医药机构")
        return FacilityType.from_row(self._facility)

    @classmethod
    def from_row(
        cls, row: Settlement, facility: Facility | None, adjustment: SettlementAdjustment | None = None
    ) -> SettlementType:
        return cls(
            id=strawberry.ID(str(row.id)),
            settled_at=row.settled_at,
            year=row.year,
            category=row.category,
            category_label=VISIT_CATEGORIES.get(row.category, row.category),
            visit_scope=row.visit_scope,
            total_fen=row.total_fen,
            compliant_fen=row.compliant_fen,
            deductible_fen=row.deductible_fen,
            basic_fen=row.basic_fen,
            critical_illness_fen=row.critical_illness_fen,
            assistance_fen=row.assistance_fen,
            personal_account_fen=row.personal_account_fen,
            cash_fen=row.cash_fen,
            policy_version=row.policy_version,
            source=row.source,
            voided=row.voided_at is not None,
            voided_at=row.voided_at,
            adjustment=SettlementAdjustmentType.from_row(adjustment) if adjustment is not None else None,
            _facility=facility,
        )


@strawberry.type(name="Contribution", description="A contribution (缴费记录).")
class ContributionType:
    id: strawberry.ID
    year: int
    period: str
    insurance_type: str
    paid_at: dt.datetime
    amount_fen: int
    subsidy_fen: int

    @classmethod
    def from_row(cls, row: Contribution) -> ContributionType:
        return cls(
            id=strawberry.ID(str(row.id)),
            year=row.year,
            period=row.period,
            insurance_type=row.insurance_type,
            paid_at=row.paid_at,
            amount_fen=row.amount_fen,
            subsidy_fen=row.subsidy_fen,
        )


@strawberry.type(name="AccountFlow", description="A movement on the personal account (个人账户).")
class AccountFlowType:
    id: strawberry.ID
    occurred_at: dt.datetime
    kind: str
    kind_label: str
    amount_fen: int
    balance_after_fen: int

    @classmethod
    def from_row(cls, row: AccountFlow) -> AccountFlowType:
        return cls(
            id=strawberry.ID(str(row.id)),
            occurred_at=row.occurred_at,
            kind=row.kind,
            kind_label=FLOW_KIND_LABELS.get(row.kind, row.kind),
            amount_fen=row.amount_fen,
            balance_after_fen=row.balance_after_fen,
        )


@strawberry.type(name="PersonalAccount")
class PersonalAccountType:
    balance_fen: int
    updated_at: dt.datetime


@strawberry.type(name="Enrolment", description="A period of insurance (参保信息).")
class EnrolmentType:
    insurance_type: str
    insurance_type_label: str
    region_code: str
    employer: str | None
    start_on: dt.date
    end_on: dt.date | None

    @classmethod
    def from_row(cls, row: Enrolment) -> EnrolmentType:
        return cls(
            insurance_type=row.insurance_type,
            insurance_type_label=INSURANCE_TYPES.get(row.insurance_type, row.insurance_type),
            region_code=row.region_code,
            employer=row.employer,
            start_on=row.start_on,
            end_on=row.end_on,
        )


@strawberry.type(name="YearTotal", description="One insurance year's contributions and spending.")
class YearTotalType:
    year: int
    contributions_fen: int
    contribution_subsidy_fen: int
    settlement_count: int
    total_fen: int
    basic_fen: int
    critical_illness_fen: int
    assistance_fen: int
    personal_account_fen: int
    cash_fen: int


PROFILE_DETAILS = "profile_details"
AccessCheck = Callable[[Info, str], Awaitable[None]]
"""Runs before each record list of a person reached through someone else (a family link): checks the
link's permissions as they are now and writes the audit entry. Raises to refuse."""


@strawberry.type(
    name="InsuredPerson", description="An insured person (参保人). The ID number is always masked."
)
class InsuredPersonType:
    id: strawberry.ID
    name: str
    id_number_masked: str
    insurance_type: str
    insurance_type_label: str
    region_code: str
    _row: strawberry.Private[InsuredPerson]
    _person_id: strawberry.Private[int]
    _access_check: strawberry.Private[AccessCheck | None] = None
    _checks: strawberry.Private[dict[str, asyncio.Future[None]]] = dataclasses.field(default_factory=dict)

    async def _check(self, info: Info, what: str) -> None:
        """Runs the access check for `what` once per object, however many fields share it (the
        details below are five fields, one check and one audit entry); each field awaits its outcome."""
        if self._access_check is None:
            return
        if what not in self._checks:
            self._checks[what] = asyncio.ensure_future(self._access_check(info, what))
        await asyncio.shield(self._checks[what])

    # Health, welfare and birth data: through a family link, as private as the records (read-records,
    # audited as `read:profile_details`). The name and masked ID number above identify whose voucher
    # is shown; these do not need to travel with show-voucher.

    @strawberry.field
    async def gender(self, info: Info) -> str:
        await self._check(info, PROFILE_DETAILS)
        return self._row.gender

    @strawberry.field
    async def birth_date(self, info: Info) -> dt.date:
        await self._check(info, PROFILE_DETAILS)
        return self._row.birth_date

    @strawberry.field
    async def assistance_category(self, info: Info) -> str | None:
        await self._check(info, PROFILE_DETAILS)
        return self._row.assistance_category

    @strawberry.field(description="Recognised 门诊慢特病, by policy code.")
    async def chronic_diseases(self, info: Info) -> list[str]:
        await self._check(info, PROFILE_DETAILS)
        return list(self._row.chronic_diseases)

    @strawberry.field(description="两病 under management: hypertension, diabetes.")
    async def two_diseases(self, info: Info) -> list[str]:
        await self._check(info, PROFILE_DETAILS)
        return list(self._row.two_diseases)

    @classmethod
    def from_row(
        cls, row: InsuredPerson, info: Info, access_check: AccessCheck | None = None
    ) -> InsuredPersonType:
        assert row.id is not None
        id_number = info.context.state.id_numbers.decrypt(row.id_number_cipher)
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            id_number_masked=idnumbers.mask(id_number),
            insurance_type=row.insurance_type,
            insurance_type_label=INSURANCE_TYPES.get(row.insurance_type, row.insurance_type),
            region_code=row.region_code,
            _row=row,
            _person_id=row.id,
            _access_check=access_check,
        )

    async def _page(
        self,
        info: Info,
        records: service.RecordList,
        first: int | None,
        after: str | None,
        from_: dt.date | None,
        to: dt.date | None,
    ) -> Any:
        await self._check(info, records.name)
        async with info.context.db() as session:
            return await service.list_records(
                session,
                info.context.state.cursors,
                records,
                self._person_id,
                first=first,
                after=after,
                start=from_,
                end=to,
            )

    @strawberry.field(description="Settlements (消费记录), newest first. Dates are Asia/Shanghai, inclusive.")
    async def settlements(
        self,
        info: Info,
        first: int | None = 20,
        after: str | None = None,
        from_: Annotated[dt.date | None, strawberry.argument(name="from")] = None,
        to: dt.date | None = None,
    ) -> Connection[SettlementType]:
        page = await self._page(info, service.SETTLEMENTS, first, after, from_, to)
        # One batched look-up for the page's facilities; resolving each settlement's facility is then
        # synchronous, which spares graphql-core 50 awaitables per page.
        ids = sorted({row.facility_id for row in page.rows})
        loaded = await dataloaders.facilities(info.context).load_many(ids)
        by_id = dict(zip(ids, loaded, strict=True))
        # Only terminals' settlements can have an adjustment: a page without any costs no query.
        pushed = [row.id for row in page.rows if row.source != "hospital"]
        adjustments: dict[int, SettlementAdjustment] = {}
        if pushed:
            async with info.context.db() as session:
                adjustments = await replication_service.adjustments_for(session, pushed)
        return Connection.from_page(
            page,
            lambda row: SettlementType.from_row(row, by_id[row.facility_id], adjustments.get(row.id)),
            after=after,
        )

    @strawberry.field(description="Contributions (缴费记录), newest first.")
    async def contributions(
        self,
        info: Info,
        first: int | None = 20,
        after: str | None = None,
        from_: Annotated[dt.date | None, strawberry.argument(name="from")] = None,
        to: dt.date | None = None,
    ) -> Connection[ContributionType]:
        page = await self._page(info, service.CONTRIBUTIONS, first, after, from_, to)
        return Connection.from_page(page, ContributionType.from_row, after=after)

    @strawberry.field(description="Personal-account flows (个人账户收支), newest first.")
    async def account_flows(
        self,
        info: Info,
        first: int | None = 20,
        after: str | None = None,
        from_: Annotated[dt.date | None, strawberry.argument(name="from")] = None,
        to: dt.date | None = None,
    ) -> Connection[AccountFlowType]:
        page = await self._page(info, service.ACCOUNT_FLOWS, first, after, from_, to)
        return Connection.from_page(page, AccountFlowType.from_row, after=after)

    @strawberry.field
    async def personal_account(self, info: Info) -> PersonalAccountType | None:
        await self._check(info, "personal_account")
        async with info.context.db() as session:
            account = await service.personal_account(session, self._person_id)
        if account is None:
            return None
        return PersonalAccountType(balance_fen=account.balance_fen, updated_at=account.updated_at)

    @strawberry.field(description="Enrolment periods (参保信息), newest first.")
    async def enrolments(self, info: Info) -> list[EnrolmentType]:
        await self._check(info, "enrolments")
        async with info.context.db() as session:
            rows = await service.enrolments(session, self._person_id)
        return [EnrolmentType.from_row(row) for row in rows]

    @strawberry.field(description="Totals per insurance year, newest first.")
    async def year_totals(self, info: Info) -> list[YearTotalType]:
        await self._check(info, "year_totals")
        async with info.context.db() as session:
            totals = await service.year_totals(session, self._person_id)
        return [YearTotalType(**vars(total)) for total in totals]


async def load_person(info: Info, person_id: int) -> InsuredPersonType:
    async with info.context.db() as session:
        row = await service.get_person(session, person_id)
    return InsuredPersonType.from_row(row, info)


@strawberry.type
class PeopleMutation:
    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="End a person's enrolment (参保终止): their vouchers and device certificates stop verifying at once.",
    )
    async def end_enrolment(self, info: Info, person_id: strawberry.ID, end_on: dt.date) -> EnrolmentType:
        pid = parse_id(person_id, field="personId")  # 0 < id < 2**63, or BAD_USER_INPUT: never a 500
        async with info.context.db() as session:
            enrolment = await service.end_enrolment(session, pid, end_on, today=local_today())
            await revocations.revoke_person(session, pid)
            await session.commit()
        return EnrolmentType.from_row(enrolment)


@strawberry.type
class PeopleQuery:
    @strawberry.field(permission_classes=[IsResident], description="The insured person who is logged in.")
    async def me(self, info: Info) -> InsuredPersonType:
        viewer = await info.context.require_viewer()
        if viewer.person_id is None:
            raise NotFound("账号尚未绑定参保人，请先完成实名认证")
        return await load_person(info, viewer.person_id)
