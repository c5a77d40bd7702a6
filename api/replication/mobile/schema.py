"""GraphQL for the mini-program's replica, named as RxDB's `replicateGraphQL` expects: `pullX(checkpoint,
limit)`, `streamX` and, for Filing and Notification, `pushX(rows)`. Thin: rules are in service."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any, TypeVar

import strawberry
from strawberry.scalars import JSON

from api.auth.models import Role
from api.auth.permissions import IsResident
from api.context import Info
from api.errors import Forbidden
from api.notifications.schema import _live_viewer
from api.replication.mobile import service

T = TypeVar("T")

DELETED = (
    "Gone from the replica: the row no longer exists for the viewer (no longer shared, closed, discarded)."
)


@strawberry.type(description="An opaque, signed position in one collection's replication.")
class ReplicationCheckpoint:
    token: str


@strawberry.input
class ReplicationCheckpointInput:
    token: str


def _build(cls: type[T], document: Mapping[str, Any]) -> T:
    return cls(**document)


def _checkpoint(token: str | None) -> ReplicationCheckpoint | None:
    return ReplicationCheckpoint(token=token) if token is not None else None


@strawberry.type
class SettlementDocument:
    id: str
    person_id: str
    updated_at: str
    deleted: bool = strawberry.field(name="_deleted", description=DELETED)
    settled_at: str
    year: int
    category: str
    category_label: str
    visit_scope: str
    facility_name: str
    facility_level: str
    total_fen: int
    compliant_fen: int
    deductible_fen: int
    basic_fen: int
    critical_illness_fen: int
    assistance_fen: int
    personal_account_fen: int
    cash_fen: int
    policy_version: str
    source: str
    voided: bool
    voided_at: str | None


@strawberry.type
class ContributionDocument:
    id: str
    person_id: str
    updated_at: str
    deleted: bool = strawberry.field(name="_deleted", description=DELETED)
    year: int
    period: str
    insurance_type: str
    paid_at: str
    amount_fen: int
    subsidy_fen: int


@strawberry.type
class AccountFlowDocument:
    id: str
    person_id: str
    updated_at: str
    deleted: bool = strawberry.field(name="_deleted", description=DELETED)
    occurred_at: str
    year: int
    kind: str
    kind_label: str
    amount_fen: int
    balance_after_fen: int
    settlement_id: str | None


@strawberry.type(description="A filing as the phone keeps it; `id` is the client-made UUID (clientId).")
class FilingDocument:
    id: str
    server_id: str | None = strawberry.field(description="The filing's server id; null until pushed.")
    person_id: str
    updated_at: str
    deleted: bool = strawberry.field(name="_deleted", description=DELETED)
    kind: str
    kind_label: str
    status: str
    status_label: str
    stage: str | None
    fields: JSON
    amount_fen: int | None
    link_id: str | None
    filed_by_person_id: str | None
    due_on: str | None
    decision_reason: str | None
    created_at: str
    submitted_at: str | None
    decided_at: str | None
    version: int = strawberry.field(description="The server's version; a push must assume the master's.")


@strawberry.type
class FamilyLinkDocument:
    id: str
    person_id: str = strawberry.field(description="The viewer: links are the viewer's own data.")
    updated_at: str
    deleted: bool = strawberry.field(name="_deleted", description=DELETED)
    relationship: str
    relationship_label: str
    method: str
    status: str
    my_role: str = strawberry.field(description="`holder` or `relative`: the viewer's side.")
    holder_person_id: str
    relative_person_id: str
    holder_name: str
    relative_name: str
    relative_id_number_masked: str
    permissions: list[str]
    requested_permissions: list[str]
    created_at: str
    expires_at: str | None
    decided_at: str | None


@strawberry.type
class NotificationDocument:
    id: str
    person_id: str
    updated_at: str
    deleted: bool = strawberry.field(name="_deleted", description=DELETED)
    kind: str
    title: str
    body: str
    data: JSON
    created_at: str
    read_at: str | None = strawberry.field(description="Null while unread.")
    link_id: str | None


@strawberry.input
class FilingDocumentInput:
    id: str
    person_id: str
    kind: str
    status: str
    fields: JSON
    deleted: bool = strawberry.field(name="_deleted", default=False)
    server_id: str | None = None
    updated_at: str | None = None
    kind_label: str | None = None
    status_label: str | None = None
    stage: str | None = None
    amount_fen: int | None = None
    link_id: str | None = None
    filed_by_person_id: str | None = None
    due_on: str | None = None
    decision_reason: str | None = None
    created_at: str | None = None
    submitted_at: str | None = None
    decided_at: str | None = None
    version: int | None = None


@strawberry.input
class FilingPushRow:
    assumed_master_state: FilingDocumentInput | None = None
    new_document_state: FilingDocumentInput


@strawberry.input
class NotificationDocumentInput:
    id: str
    person_id: str
    kind: str
    title: str
    body: str
    data: JSON
    created_at: str
    deleted: bool = strawberry.field(name="_deleted", default=False)
    updated_at: str | None = None
    read_at: str | None = None
    link_id: str | None = None


@strawberry.input
class NotificationPushRow:
    assumed_master_state: NotificationDocumentInput | None = None
    new_document_state: NotificationDocumentInput


RESYNC = "Pull again from your checkpoint (RxDB's RESYNC); documents are empty, checkpoint null."


@strawberry.type
class SettlementPullBulk:
    documents: list[SettlementDocument]
    checkpoint: ReplicationCheckpoint


@strawberry.type
class SettlementStreamEvent:
    documents: list[SettlementDocument]
    checkpoint: ReplicationCheckpoint | None
    resync: bool = strawberry.field(description=RESYNC)


@strawberry.type
class ContributionPullBulk:
    documents: list[ContributionDocument]
    checkpoint: ReplicationCheckpoint


@strawberry.type
class ContributionStreamEvent:
    documents: list[ContributionDocument]
    checkpoint: ReplicationCheckpoint | None
    resync: bool = strawberry.field(description=RESYNC)


@strawberry.type
class AccountFlowPullBulk:
    documents: list[AccountFlowDocument]
    checkpoint: ReplicationCheckpoint


@strawberry.type
class AccountFlowStreamEvent:
    documents: list[AccountFlowDocument]
    checkpoint: ReplicationCheckpoint | None
    resync: bool = strawberry.field(description=RESYNC)


@strawberry.type
class FilingPullBulk:
    documents: list[FilingDocument]
    checkpoint: ReplicationCheckpoint


@strawberry.type
class FilingStreamEvent:
    documents: list[FilingDocument]
    checkpoint: ReplicationCheckpoint | None
    resync: bool = strawberry.field(description=RESYNC)


@strawberry.type
class FamilyLinkPullBulk:
    documents: list[FamilyLinkDocument]
    checkpoint: ReplicationCheckpoint


@strawberry.type
class FamilyLinkStreamEvent:
    documents: list[FamilyLinkDocument]
    checkpoint: ReplicationCheckpoint | None
    resync: bool = strawberry.field(description=RESYNC)


@strawberry.type
class NotificationPullBulk:
    documents: list[NotificationDocument]
    checkpoint: ReplicationCheckpoint


@strawberry.type
class NotificationStreamEvent:
    documents: list[NotificationDocument]
    checkpoint: ReplicationCheckpoint | None
    resync: bool = strawberry.field(description=RESYNC)


_DOCUMENTS: dict[str, tuple[type, type, type]] = {
    "Settlement": (SettlementDocument, SettlementPullBulk, SettlementStreamEvent),
    "Contribution": (ContributionDocument, ContributionPullBulk, ContributionStreamEvent),
    "AccountFlow": (AccountFlowDocument, AccountFlowPullBulk, AccountFlowStreamEvent),
    "Filing": (FilingDocument, FilingPullBulk, FilingStreamEvent),
    "FamilyLink": (FamilyLinkDocument, FamilyLinkPullBulk, FamilyLinkStreamEvent),
    "Notification": (NotificationDocument, NotificationPullBulk, NotificationStreamEvent),
}


async def _pull(info: Info, name: str, checkpoint: ReplicationCheckpointInput | None, limit: int) -> Any:
    viewer = await info.context.require_viewer()
    document, bulk, _ = _DOCUMENTS[name]
    async with info.context.db() as session:
        documents, token = await service.pull(
            session,
            info.context.state,
            viewer,
            service.collection(name),
            checkpoint.token if checkpoint is not None else None,
            limit,
        )
    return bulk(
        documents=[_build(document, d) for d in documents], checkpoint=ReplicationCheckpoint(token=token)
    )


async def _stream(info: Info, name: str) -> AsyncGenerator[Any, None]:
    viewer = await _live_viewer(info)
    if viewer.role != Role.RESIDENT:
        raise Forbidden()
    service.person_of(viewer)
    return _events(info, name, viewer)


async def _events(info: Info, name: str, viewer: Any) -> AsyncGenerator[Any, None]:
    document, _, event = _DOCUMENTS[name]

    async def still_valid() -> None:
        await _live_viewer(info)

    async for item in service.stream(info.context.state, viewer, service.collection(name), still_valid):
        yield event(
            documents=[_build(document, d) for d in item["documents"]],
            checkpoint=_checkpoint(item["checkpoint"]),
            resync=item["resync"],
        )


def _row(value: Any) -> dict[str, Any]:
    return dict(vars(value)) if value is not None else {}


@strawberry.type
class MobileReplicationQuery:
    @strawberry.field(permission_classes=[IsResident], description="Settlements, mine and shared relatives'.")
    async def pull_settlement(
        self, info: Info, limit: int, checkpoint: ReplicationCheckpointInput | None = None
    ) -> SettlementPullBulk:
        return await _pull(info, "Settlement", checkpoint, limit)

    @strawberry.field(permission_classes=[IsResident])
    async def pull_contribution(
        self, info: Info, limit: int, checkpoint: ReplicationCheckpointInput | None = None
    ) -> ContributionPullBulk:
        return await _pull(info, "Contribution", checkpoint, limit)

    @strawberry.field(permission_classes=[IsResident])
    async def pull_account_flow(
        self, info: Info, limit: int, checkpoint: ReplicationCheckpointInput | None = None
    ) -> AccountFlowPullBulk:
        return await _pull(info, "AccountFlow", checkpoint, limit)

    @strawberry.field(permission_classes=[IsResident])
    async def pull_filing(
        self, info: Info, limit: int, checkpoint: ReplicationCheckpointInput | None = None
    ) -> FilingPullBulk:
        return await _pull(info, "Filing", checkpoint, limit)

    @strawberry.field(permission_classes=[IsResident])
    async def pull_family_link(
        self, info: Info, limit: int, checkpoint: ReplicationCheckpointInput | None = None
    ) -> FamilyLinkPullBulk:
        return await _pull(info, "FamilyLink", checkpoint, limit)

    @strawberry.field(permission_classes=[IsResident])
    async def pull_notification(
        self, info: Info, limit: int, checkpoint: ReplicationCheckpointInput | None = None
    ) -> NotificationPullBulk:
        return await _pull(info, "Notification", checkpoint, limit)


@strawberry.type
class MobileReplicationMutation:
    @strawberry.mutation(
        permission_classes=[IsResident],
        description="Filing drafts made or changed offline; returns the master documents in conflict.",
    )
    async def push_filing(self, info: Info, rows: list[FilingPushRow]) -> list[FilingDocument]:
        viewer = await info.context.require_viewer()
        service.check_rows(rows)
        pairs = [(_row(r.assumed_master_state) or None, _row(r.new_document_state)) for r in rows]
        async with info.context.db() as session:
            conflicts = await service.push_filings(session, info.context.state, viewer, pairs)
        return [_build(FilingDocument, d) for d in conflicts]

    @strawberry.mutation(
        permission_classes=[IsResident],
        description="Read marks made offline; returns the master documents in conflict.",
    )
    async def push_notification(
        self, info: Info, rows: list[NotificationPushRow]
    ) -> list[NotificationDocument]:
        viewer = await info.context.require_viewer()
        service.check_rows(rows)
        pairs = [(_row(r.assumed_master_state) or None, _row(r.new_document_state)) for r in rows]
        async with info.context.db() as session:
            conflicts = await service.push_notifications(session, info.context.state, viewer, pairs)
        return [_build(NotificationDocument, d) for d in conflicts]


_STREAM = (
    "Changes to my replica of this collection, or `resync: true` (pull again). Over graphql-transport-ws."
)


@strawberry.type
class MobileReplicationSubscription:
    @strawberry.subscription(description=_STREAM)
    async def stream_settlement(self, info: Info) -> AsyncGenerator[SettlementStreamEvent, None]:
        return await _stream(info, "Settlement")

    @strawberry.subscription(description=_STREAM)
    async def stream_contribution(self, info: Info) -> AsyncGenerator[ContributionStreamEvent, None]:
        return await _stream(info, "Contribution")

    @strawberry.subscription(description=_STREAM)
    async def stream_account_flow(self, info: Info) -> AsyncGenerator[AccountFlowStreamEvent, None]:
        return await _stream(info, "AccountFlow")

    @strawberry.subscription(description=_STREAM)
    async def stream_filing(self, info: Info) -> AsyncGenerator[FilingStreamEvent, None]:
        return await _stream(info, "Filing")

    @strawberry.subscription(description=_STREAM)
    async def stream_family_link(self, info: Info) -> AsyncGenerator[FamilyLinkStreamEvent, None]:
        return await _stream(info, "FamilyLink")

    @strawberry.subscription(description=_STREAM)
    async def stream_notification(self, info: Info) -> AsyncGenerator[NotificationStreamEvent, None]:
        return await _stream(info, "Notification")


__all__ = [
    "MobileReplicationMutation",
    "MobileReplicationQuery",
    "MobileReplicationSubscription",
]
