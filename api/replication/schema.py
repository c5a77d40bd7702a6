"""GraphQL: the settlements terminals pushed that were rejected or adjusted. Thin: rules in service."""

from __future__ import annotations

import datetime as dt
from enum import Enum
from typing import Any, cast

import strawberry
from strawberry.permission import BasePermission
from strawberry.scalars import JSON

from api.auth.models import Role
from api.auth.permissions import IsReviewer
from api.context import Info
from api.errors import Forbidden
from api.ids import parse_id
from api.people import dataloaders
from api.people.models import Facility
from api.people.schema import FacilityType
from api.relay import Connection
from api.replication import service
from api.replication.models import PushedMutation, PushStatus
from sync.protocol import ADJUST_LABELS, REASON_LABELS, AdjustReason, RejectReason


class _IssueReaders(BasePermission):
    """Reviewers and admins, and a clinic's counter login (role terminal) for its own clinic."""

    message = "没有权限执行此操作"

    async def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        viewer = await info.context.require_viewer()
        if viewer.role not in (Role.REVIEWER, Role.ADMIN, Role.TERMINAL):
            raise Forbidden()
        return True


@strawberry.enum(description="Whether a push issue still waits for a reviewer.")
class TerminalIssueState(Enum):
    OPEN = "open"
    RESOLVED = "resolved"
    ALL = "all"


@strawberry.enum(description="What the server did with the pushed settlement.")
class TerminalIssueOutcome(Enum):
    REJECTED = "rejected"
    ADJUSTED = "adjusted"


def _label(status: str, reason: str | None) -> str | None:
    if reason is None:
        return None
    try:
        if status == PushStatus.REJECTED.value:
            return REASON_LABELS[RejectReason(reason)]
        return ADJUST_LABELS[AdjustReason(reason)]
    except (KeyError, ValueError):
        return None


@strawberry.type(
    name="TerminalSettlementIssue",
    description="A settlement a clinic terminal pushed that the server rejected or adjusted; open until resolved.",
)
class TerminalSettlementIssueType:
    id: strawberry.ID
    terminal_id: strawberry.ID
    mutation_id: str = strawberry.field(description="The terminal's id (UUIDv7) for the mutation.")
    seq: int
    kind: str
    outcome: TerminalIssueOutcome
    reason: str | None = strawberry.field(
        description="Rejection reason code (voucher_replayed, not_insured, ...) or adjustment reason."
    )
    reason_label: str | None
    client_time: dt.datetime | None = strawberry.field(
        description="The terminal's clock when it settled the visit: recorded, never trusted."
    )
    received_at: dt.datetime
    payload: JSON = strawberry.field(
        description="The mutation's payload as the terminal sent it; for a rejected one larger than 64 KiB "
        'of JSON, a stand-in `{"truncated": true, "bytes", "sha256", "prefix"}` (the terminal keeps it whole).'
    )
    result: JSON = strawberry.field(description="The answer the terminal got (and gets again on a repeat).")
    settlement_id: strawberry.ID | None = strawberry.field(
        description="The stored settlement, when adjusted."
    )
    resolved: bool
    resolved_at: dt.datetime | None
    resolved_by: str | None = strawberry.field(description="Display name of the reviewer who resolved it.")
    resolution_note: str | None
    _clinic: strawberry.Private[Facility | None]

    @strawberry.field
    def clinic(self) -> FacilityType | None:
        return FacilityType.from_row(self._clinic) if self._clinic is not None else None

    @classmethod
    def from_row(
        cls, row: PushedMutation, clinic: Facility | None, resolver_name: str | None
    ) -> TerminalSettlementIssueType:
        return cls(
            id=strawberry.ID(str(row.id)),
            terminal_id=strawberry.ID(str(row.terminal_id)),
            mutation_id=row.mutation_id,
            seq=row.seq,
            kind=row.kind,
            outcome=TerminalIssueOutcome(row.status),
            reason=row.reason,
            reason_label=_label(row.status, row.reason),
            client_time=row.client_time,
            received_at=row.received_at,
            payload=cast(JSON, row.payload),
            result=cast(JSON, row.result),
            settlement_id=strawberry.ID(str(row.settlement_id)) if row.settlement_id is not None else None,
            resolved=row.resolved_at is not None,
            resolved_at=row.resolved_at,
            resolved_by=resolver_name,
            resolution_note=row.resolution_note,
            _clinic=clinic,
        )


async def _nodes(
    info: Info, rows: list[tuple[PushedMutation, int]]
) -> dict[int, TerminalSettlementIssueType]:
    clinic_ids = sorted({clinic for _, clinic in rows})
    clinics = dict(
        zip(clinic_ids, await dataloaders.facilities(info.context).load_many(clinic_ids), strict=True)
    )
    resolvers = sorted(
        {row.resolved_by_account_id for row, _ in rows if row.resolved_by_account_id is not None}
    )
    async with info.context.db() as session:
        names = await service.account_names(session, resolvers)
    return {
        cast(int, row.id): TerminalSettlementIssueType.from_row(
            row,
            clinics.get(clinic),
            names.get(row.resolved_by_account_id) if row.resolved_by_account_id is not None else None,
        )
        for row, clinic in rows
    }


@strawberry.type
class ReplicationQuery:
    @strawberry.field(
        permission_classes=[_IssueReaders],
        description="Settlements pushed by clinic terminals that were rejected or adjusted, newest first.",
    )
    async def terminal_settlement_issues(
        self,
        info: Info,
        clinic_id: strawberry.ID | None = None,
        status: TerminalIssueState = TerminalIssueState.OPEN,
        outcome: TerminalIssueOutcome | None = None,
        first: int | None = 20,
        after: str | None = None,
    ) -> Connection[TerminalSettlementIssueType]:
        viewer = await info.context.require_viewer()
        wanted = parse_id(clinic_id, field="clinicId") if clinic_id is not None else None
        async with info.context.db() as session:
            clinic = await service.issue_clinic(session, viewer, wanted)
            page = await service.list_issues(
                session,
                info.context.state.cursors,
                clinic_id=clinic,
                state=service.IssueState(status.value),
                outcome=PushStatus(outcome.value) if outcome is not None else None,
                first=first,
                after=after,
            )
        nodes = await _nodes(info, page.rows)
        return Connection.from_page(page, lambda pair: nodes[pair[0].id], after=after)


@strawberry.type
class ReplicationMutation:
    @strawberry.mutation(
        permission_classes=[IsReviewer],
        description="Mark a rejected or adjusted terminal settlement as reviewed, with a note (who and when are kept).",
    )
    async def resolve_terminal_settlement_issue(
        self, info: Info, id: strawberry.ID, note: str
    ) -> TerminalSettlementIssueType:
        viewer = await info.context.require_viewer()
        issue_id = parse_id(id, field="id")
        async with info.context.db() as session:
            row, clinic = await service.resolve_issue(session, issue_id, viewer, note)
        nodes = await _nodes(info, [(row, clinic)])
        return nodes[issue_id]
