"""GraphQL: online filings (网上办) for residents and their family members, and the reviewers' queue.
Thin: the rules are in service. Attachments are uploaded and downloaded over REST (api/filings/http.py)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from enum import StrEnum
from typing import Any, cast

import strawberry
from strawberry.scalars import JSON

from api.auth.models import Account, Role
from api.auth.permissions import IsAuthenticated, IsResident, IsReviewer
from api.auth.service import Viewer
from api.context import Info
from api.family import service as family_service
from api.filings import calendar, service
from api.filings.kinds import KINDS
from api.filings.kinds.chronic_disease import catalogue
from api.filings.models import Filing, FilingAttachment, FilingStatus
from api.people.models import InsuredPerson
from api.relay import Connection

KindCodes = StrEnum("KindCodes", {code.upper(): code for code in KINDS})  # type: ignore[misc]
"""One member per kind in KINDS: adding a kind adds its GraphQL enum value."""
FilingKindCode = strawberry.enum(
    KindCodes,
    name="FilingKindCode",
    description="The kinds of online filing; `filingKinds` describes each one's fields and materials.",
)
FilingStatusCode = strawberry.enum(FilingStatus, name="FilingStatus")


@strawberry.enum(description="A reviewer's decision on the current stage.")
class FilingDecision(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"
    NEEDS_MATERIALS = "needs_materials"


@strawberry.enum(description="Which claims to list in the queue.")
class ClaimFilter(StrEnum):
    MINE = "mine"
    UNCLAIMED = "unclaimed"


ROLE_LABELS = {"filer": "本人", "holder": "亲属代办", "reviewer": "经办人员", "admin": "管理员"}


@strawberry.type(name="FilingStage")
class FilingStageType:
    code: str
    label: str
    limit_working_days: int = strawberry.field(description="The stage's statutory limit, in working days.")


@strawberry.type(name="FilingMaterial")
class FilingMaterialType:
    code: str
    label: str


@strawberry.type(name="FilingKind", description="A kind of filing: its fields, materials and review stages.")
class FilingKindType:
    code: FilingKindCode  # type: ignore[valid-type]
    label: str
    fields: JSON = strawberry.field(
        description="The fields `createFiling` takes, with their types and labels."
    )
    materials: list[FilingMaterialType]
    stages: list[FilingStageType]
    sources: list[str] = strawberry.field(description="Where the kind's figures come from.")


@strawberry.type(name="ChronicDisease", description="One entry of the 门诊慢特病 catalogue.")
class ChronicDiseaseType:
    code: str
    name: str
    category: str
    category_label: str


@strawberry.type(name="RequestedItem", description="One thing a reviewer asked for (一次告知).")
class RequestedItemType:
    code: str
    label: str
    note: str | None


@strawberry.type(name="FilingEvent", description="One transition: who, when, why.")
class FilingEventType:
    occurred_at: dt.datetime
    action: str
    actor_role: str
    actor_name: str
    from_status: FilingStatusCode | None  # type: ignore[valid-type]
    to_status: FilingStatusCode  # type: ignore[valid-type]
    stage: str | None
    stage_label: str | None
    due_on: dt.date | None = strawberry.field(description="The deadline the transition set, if any.")
    reason: str | None
    missing: list[RequestedItemType] | None


@strawberry.type(name="FilingAttachment")
class FilingAttachmentType:
    id: strawberry.ID
    material: str
    material_label: str
    filename: str
    content_type: str = strawberry.field(description="Sniffed from the content.")
    size_bytes: int
    sha256: str
    created_at: dt.datetime
    download_path: str = strawberry.field(description="GET with the bearer token.")


def _requested(kind_code: str, items: Sequence[dict[str, Any]] | None) -> list[RequestedItemType]:
    kind = KINDS[kind_code]
    return [
        RequestedItemType(code=i["code"], label=service.label_of(kind, i["code"]), note=i.get("note"))
        for i in items or []
    ]


async def _names(
    info: Info, people: set[int], accounts: set[int]
) -> tuple[dict[int, InsuredPerson], dict[int, Account]]:
    async with info.context.db() as session:
        return (
            await family_service.people_by_ids(session, people),
            await family_service.accounts_by_ids(session, accounts),
        )


@strawberry.type(
    name="Filing",
    description="An online filing (网上办), as its person, their family member or a reviewer sees it.",
)
class FilingType:
    id: strawberry.ID
    client_id: str
    kind: FilingKindCode  # type: ignore[valid-type]
    kind_label: str
    status: FilingStatusCode  # type: ignore[valid-type]
    status_label: str
    stage: str | None
    stage_label: str | None
    person_name: str = strawberry.field(description="Whose filing it is.")
    filed_by_name: str = strawberry.field(description="Who filed it: the person, or the family member.")
    filed_on_behalf: bool
    link_id: strawberry.ID | None = strawberry.field(description="The family link it was filed through.")
    region_code: str
    fields: JSON = strawberry.field(description="As filed; the bank account number only masked.")
    amount_fen: int | None = strawberry.field(
        description="What would be (or was) paid: the reimbursement the engine computes, or the allowance."
    )
    computation: JSON | None
    due_on: dt.date | None = strawberry.field(
        description="The current stage's statutory deadline (inclusive, working days on the official calendar)."
    )
    due_estimated: bool = strawberry.field(
        description="The deadline runs past the official calendar's data: weekends and fixed holidays only."
    )
    overdue: bool
    working_days_left: int | None
    claimed_by_me: bool
    claimed_by_name: str | None = strawberry.field(description="Reviewers only.")
    requested_materials: list[RequestedItemType] = strawberry.field(
        description="While NEEDS_MATERIALS: everything missing, at once (一次告知)."
    )
    required_materials: list[FilingMaterialType] = strawberry.field(
        description="What a submission must carry, given the fields."
    )
    decision_reason: str | None
    created_at: dt.datetime
    submitted_at: dt.datetime | None
    decided_at: dt.datetime | None
    updated_at: dt.datetime
    _row: strawberry.Private[Filing]

    @strawberry.field(description="Every transition, oldest first: who, when, why.")
    async def history(self, info: Info) -> list[FilingEventType]:
        async with info.context.db() as session:
            rows = await service.events(session, self._row.id or 0)
        accounts = {r.actor_account_id for r in rows}
        _, found = await _names(info, set(), accounts)
        persons = await _names(info, {a.person_id for a in found.values() if a.person_id}, set())
        kind = KINDS[self._row.kind]
        out = []
        for r in rows:
            account = found.get(r.actor_account_id)
            if r.actor_role in ("filer", "holder") and account is not None and account.person_id:
                person = persons[0].get(account.person_id)
                name = person.name if person else ""
            else:
                shown = (account.display_name if account else "") or f"账号{r.actor_account_id}"
                name = f"{ROLE_LABELS.get(r.actor_role, '工作人员')}（{shown}）"
            stage = kind.stage(r.stage) if r.stage else None
            out.append(
                FilingEventType(
                    occurred_at=r.occurred_at,
                    action=r.action,
                    actor_role=r.actor_role,
                    actor_name=name,
                    from_status=FilingStatus(r.from_status) if r.from_status else None,
                    to_status=FilingStatus(r.to_status),
                    stage=r.stage,
                    stage_label=stage.label if stage else None,
                    due_on=r.due_on,
                    reason=r.reason,
                    missing=_requested(self._row.kind, r.missing) if r.missing else None,
                )
            )
        return out

    @strawberry.field
    async def attachments(self, info: Info) -> list[FilingAttachmentType]:
        async with info.context.db() as session:
            rows = await service.attachments(session, self._row.id or 0)
        kind = KINDS[self._row.kind]
        return [_attachment(kind.code, row) for row in rows]


def _attachment(kind_code: str, row: FilingAttachment) -> FilingAttachmentType:
    material = KINDS[kind_code].material(row.material)
    return FilingAttachmentType(
        id=strawberry.ID(str(row.id)),
        material=row.material,
        material_label=material.label if material else row.material,
        filename=row.filename,
        content_type=row.content_type,
        size_bytes=row.size_bytes,
        sha256=row.sha256,
        created_at=row.created_at,
        download_path=f"/filings/{row.filing_id}/attachments/{row.id}",
    )


def attachment_json(kind_code: str, row: FilingAttachment) -> dict[str, Any]:
    a = _attachment(kind_code, row)
    return {
        "id": str(a.id),
        "material": a.material,
        "materialLabel": a.material_label,
        "filename": a.filename,
        "contentType": a.content_type,
        "sizeBytes": a.size_bytes,
        "sha256": a.sha256,
        "createdAt": a.created_at.isoformat(),
        "downloadPath": a.download_path,
    }


async def _out(info: Info, viewer: Viewer, rows: Sequence[Filing]) -> list[FilingType]:
    people = {r.person_id for r in rows} | {r.filed_by_person_id for r in rows if r.filed_by_person_id}
    staff = viewer.role in (Role.REVIEWER.value, Role.ADMIN.value)
    claimers = {r.claimed_by_account_id for r in rows if r.claimed_by_account_id} if staff else set()
    names, accounts = await _names(info, people, claimers)
    today = service.local_today(dt.datetime.now(dt.UTC))
    out = []
    for r in rows:
        kind = KINDS[r.kind]
        stage = kind.stage(r.stage) if r.stage else None
        values = kind.spec.load(r.fields)
        claimer = accounts.get(r.claimed_by_account_id) if r.claimed_by_account_id else None
        person, filer = names.get(r.person_id), names.get(r.filed_by_person_id or 0)
        out.append(
            FilingType(
                id=strawberry.ID(str(r.id)),
                client_id=r.client_id,
                kind=KindCodes(r.kind),
                kind_label=kind.label,
                status=FilingStatus(r.status),
                status_label=service.STATUS_LABELS[r.status],
                stage=r.stage,
                stage_label=stage.label if stage else None,
                person_name=person.name if person else "",
                filed_by_name=filer.name if filer else "",
                filed_on_behalf=r.link_id is not None,
                link_id=strawberry.ID(str(r.link_id)) if r.link_id is not None else None,
                region_code=r.region_code,
                fields=cast(JSON, r.fields),
                amount_fen=r.amount_fen,
                computation=cast(JSON, r.computation) if r.computation is not None else None,
                due_on=r.due_on,
                due_estimated=r.due_estimated,
                overdue=r.due_on is not None and r.due_on < today,
                working_days_left=calendar.working_days_between(today, r.due_on) if r.due_on else None,
                claimed_by_me=r.claimed_by_account_id == viewer.account_id,
                claimed_by_name=((claimer.display_name or f"账号{claimer.id}") if claimer else None),
                requested_materials=_requested(r.kind, r.requested),
                required_materials=[
                    FilingMaterialType(code=m, label=service.label_of(kind, m))
                    for m in kind.required_materials(values)
                ],
                decision_reason=r.decision_reason,
                created_at=r.created_at,
                submitted_at=r.submitted_at,
                decided_at=r.decided_at,
                updated_at=r.updated_at,
                _row=r,
            )
        )
    return out


async def _one(info: Info, viewer: Viewer, row: Filing) -> FilingType:
    return (await _out(info, viewer, [row]))[0]


@strawberry.input(description="A new filing. `fields` follow the kind's description in `filingKinds`.")
class CreateFilingInput:
    client_id: str = strawberry.field(
        description="A UUID the client makes once per filing: a repeat (after a timeout) returns the same filing."
    )
    kind: FilingKindCode  # type: ignore[valid-type]
    fields: JSON
    link_id: strawberry.ID | None = strawberry.field(
        default=None, description="File for a linked relative (needs the file-on-behalf permission)."
    )
    submit: bool = strawberry.field(
        default=False, description="Submit at once (when no attachment is needed)."
    )


@strawberry.input(description="What to list in the reviewers' queue; every filter is optional.")
class ReviewQueueFilter:
    kind: FilingKindCode | None = None  # type: ignore[valid-type]
    region: str | None = None
    status: FilingStatusCode | None = strawberry.field(  # type: ignore[valid-type]
        default=None, description="SUBMITTED, IN_REVIEW or RESUBMITTED."
    )
    stage: str | None = strawberry.field(default=None, description="first_review | second_review | payment")
    due_before: dt.date | None = strawberry.field(default=None, description="Due on or before this date.")
    overdue: bool = strawberry.field(default=False, description="Only those past their deadline.")
    claimed: ClaimFilter | None = None


@strawberry.input(description="One thing missing, by the kind's material or field code.")
class MissingItemInput:
    code: str
    note: str | None = None


def _connection(
    info: Info, viewer: Viewer, page: Any, after: str | None, rows: list[FilingType]
) -> Connection[FilingType]:
    by_id = {int(f.id): f for f in rows}
    return Connection.from_page(page, lambda row: by_id[row.id], after=after)


@strawberry.type(
    name="FilingBankAccount",
    description="The payout account in full: only for the reviewer at the payment stage, and audited.",
)
class FilingBankAccountType:
    bank_name: str
    account_name: str
    account_number: str


@strawberry.type
class FilingQuery:
    @strawberry.field(description="Every kind of filing: fields, materials, stages with their limits.")
    def filing_kinds(self) -> list[FilingKindType]:
        return [
            FilingKindType(
                code=KindCodes(kind.code),
                label=kind.label,
                fields=cast(JSON, kind.spec.describe()),
                materials=[FilingMaterialType(code=m.code, label=m.label) for m in kind.materials],
                stages=[
                    FilingStageType(code=s.code, label=s.label, limit_working_days=s.limit_working_days)
                    for s in kind.stages
                ],
                sources=list(kind.sources),
            )
            for kind in KINDS.values()
        ]

    @strawberry.field(
        description="The 门诊慢特病 catalogue (code + name) that chronic-disease filings choose from."
    )
    def chronic_disease_catalogue(self) -> list[ChronicDiseaseType]:
        return [
            ChronicDiseaseType(code=d.code, name=d.name, category=d.category, category_label=d.category_label)
            for d in catalogue().values()
        ]

    @strawberry.field(
        permission_classes=[IsResident],
        description="My filings (those a family member filed for me included), newest first; with linkId a relative's (audited).",
    )
    async def my_filings(
        self,
        info: Info,
        first: int | None = 20,
        after: str | None = None,
        link_id: strawberry.ID | None = None,
        status: FilingStatusCode | None = None,  # type: ignore[valid-type]
        kind: FilingKindCode | None = None,  # type: ignore[valid-type]
    ) -> Connection[FilingType]:
        viewer = await info.context.require_viewer()
        async with info.context.db() as session:
            page = await service.list_for_person(
                session,
                info.context.state.cursors,
                viewer,
                link_id=str(link_id) if link_id is not None else None,
                first=first,
                after=after,
                status=str(status.value) if status is not None else None,
                kind=str(kind) if kind is not None else None,
            )
        return _connection(info, viewer, page, after, await _out(info, viewer, page.rows))

    @strawberry.field(
        permission_classes=[IsAuthenticated],
        description="One filing: its person, their family member with file-on-behalf (audited), or a reviewer.",
    )
    async def filing(self, info: Info, id: strawberry.ID) -> FilingType:
        viewer = await info.context.require_viewer()
        async with info.context.db() as session:
            row, _ = await service.get_for(session, viewer, id)
        return await _one(info, viewer, row)

    @strawberry.field(
        permission_classes=[IsReviewer],
        description="Filings waiting for (or with) a reviewer, earliest deadline first (keyset pages).",
    )
    async def review_queue(
        self,
        info: Info,
        filter: ReviewQueueFilter | None = None,
        first: int | None = 20,
        after: str | None = None,
    ) -> Connection[FilingType]:
        viewer = await info.context.require_viewer()
        f = filter or ReviewQueueFilter()
        flt = service.QueueFilter(
            kind=str(f.kind) if f.kind is not None else None,
            region=f.region,
            status=str(f.status.value) if f.status is not None else None,
            stage=f.stage,
            due_before=f.due_before,
            overdue=f.overdue,
            claimed=f.claimed.value if f.claimed is not None else None,
        )
        async with info.context.db() as session:
            page = await service.review_queue(
                session, info.context.state.cursors, viewer, flt, first=first, after=after
            )
        return _connection(info, viewer, page, after, await _out(info, viewer, page.rows))


@strawberry.type
class FilingMutation:
    @strawberry.mutation(
        permission_classes=[IsResident],
        description="A new filing (a draft unless submit), for me or a linked relative. Idempotent on clientId.",
    )
    async def create_filing(self, info: Info, input: CreateFilingInput) -> FilingType:
        viewer = await info.context.require_viewer()
        async with info.context.db() as session:
            row = await service.create(
                session,
                info.context.state.bank_accounts,
                viewer,
                client_id=input.client_id,
                kind_code=str(input.kind),
                fields=input.fields,
                link_id=str(input.link_id) if input.link_id is not None else None,
                submit_now=input.submit,
            )
        return await _one(info, viewer, row)

    @strawberry.mutation(
        permission_classes=[IsResident],
        description=(
            "Submit a draft, or resubmit after NEEDS_MATERIALS: `changes` may only touch the fields asked"
            " for, and every asked item must come. A repeat of a submission returns the filing as it is."
        ),
    )
    async def submit_filing(self, info: Info, id: strawberry.ID, changes: JSON | None = None) -> FilingType:
        viewer = await info.context.require_viewer()
        async with info.context.db() as session:
            row = await service.submit(
                session, info.context.state.bank_accounts, viewer, id, cast(Any, changes)
            )
        return await _one(info, viewer, row)

    @strawberry.mutation(
        permission_classes=[IsResident], description="Withdraw a filing before its decision."
    )
    async def withdraw_filing(self, info: Info, id: strawberry.ID, reason: str | None = None) -> FilingType:
        viewer = await info.context.require_viewer()
        async with info.context.db() as session:
            row = await service.withdraw(session, viewer, id, reason)
        return await _one(info, viewer, row)

    @strawberry.mutation(
        permission_classes=[IsReviewer],
        description="Take the filing's current stage; CONFLICT if another reviewer has it.",
    )
    async def claim_filing(self, info: Info, id: strawberry.ID) -> FilingType:
        viewer = await info.context.require_viewer()
        async with info.context.db() as session:
            row = await service.claim(session, viewer, id)
        return await _one(info, viewer, row)

    @strawberry.mutation(
        permission_classes=[IsReviewer], description="Hand a claimed stage back to the queue."
    )
    async def release_filing(self, info: Info, id: strawberry.ID) -> FilingType:
        viewer = await info.context.require_viewer()
        async with info.context.db() as session:
            row = await service.release(session, viewer, id)
        return await _one(info, viewer, row)

    @strawberry.mutation(
        permission_classes=[IsReviewer],
        description=(
            "Decide the stage I claimed: APPROVE (the next stage, or approval at the last), REJECT with a"
            " reason, or NEEDS_MATERIALS listing everything missing at once in `missing`."
        ),
    )
    async def decide_filing(
        self,
        info: Info,
        id: strawberry.ID,
        decision: FilingDecision,
        reason: str | None = None,
        missing: list[MissingItemInput] | None = None,
    ) -> FilingType:
        viewer = await info.context.require_viewer()
        items = [service.MissingItem(m.code, m.note) for m in missing] if missing is not None else None
        async with info.context.db() as session:
            row = await service.decide(session, viewer, id, decision.value, reason, items)
        return await _one(info, viewer, row)

    @strawberry.mutation(
        permission_classes=[IsReviewer],
        description=(
            "The payout bank account in full, for the reviewer who claimed the payment stage (财务支付);"
            " recorded in the person's access audit. A mutation: every reveal is a recorded act."
        ),
    )
    async def reveal_filing_bank_account(self, info: Info, id: strawberry.ID) -> FilingBankAccountType:
        viewer = await info.context.require_viewer()
        async with info.context.db() as session:
            account = await service.reveal_bank_account(session, info.context.state.bank_accounts, viewer, id)
        return FilingBankAccountType(
            bank_name=account.bank_name,
            account_name=account.account_name,
            account_number=account.account_number,
        )
