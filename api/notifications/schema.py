"""GraphQL: a resident's notifications (list, unread count, mark read) and `notificationAdded`, live
over graphql-transport-ws. Thin: rules are in service, fan-out in broker."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncGenerator
from typing import cast

import strawberry
from strawberry.scalars import JSON

from api.auth import service as auth_service
from api.auth.models import Role
from api.auth.permissions import IsResident
from api.auth.service import Viewer
from api.context import Info
from api.errors import Conflict, Forbidden, NotFound, Unauthenticated
from api.notifications import service
from api.notifications.broker import Lagged
from api.notifications.models import Notification
from api.relay import Connection


@strawberry.type(
    name="Notification", description="A notification kept for the logged-in resident (消息通知)."
)
class NotificationType:
    id: strawberry.ID
    kind: str = strawberry.field(description="What it is about, e.g. `filing.status`.")
    title: str
    body: str
    data: JSON = strawberry.field(description="Details for the app, e.g. the filing's id and old/new status.")
    created_at: dt.datetime
    read_at: dt.datetime | None
    link_id: strawberry.ID | None = strawberry.field(
        description="The family link, when it concerns a relative (e.g. a filing made on their behalf)."
    )

    @classmethod
    def from_row(cls, row: Notification) -> NotificationType:
        return cls(
            id=strawberry.ID(str(row.id)),
            kind=row.kind,
            title=row.title,
            body=row.body,
            data=cast(JSON, row.data),
            created_at=row.created_at,
            read_at=row.read_at,
            link_id=strawberry.ID(str(row.link_id)) if row.link_id is not None else None,
        )


@strawberry.type(name="MarkNotificationsReadPayload")
class MarkNotificationsReadPayload:
    marked_count: int = strawberry.field(description="Your notifications that were unread and now are read.")
    unread_count: int


def _person_id(viewer: Viewer) -> int:
    if viewer.person_id is None:
        raise NotFound("账号尚未绑定参保人，请先完成实名认证")
    return viewer.person_id


async def _resident(info: Info) -> int:
    return _person_id(await info.context.require_viewer())


@strawberry.type
class NotificationQuery:
    @strawberry.field(permission_classes=[IsResident], description="My notifications, newest first.")
    async def notifications(
        self, info: Info, first: int | None = 20, after: str | None = None, unread_only: bool = False
    ) -> Connection[NotificationType]:
        person_id = await _resident(info)
        async with info.context.db() as session:
            page = await service.list_notifications(
                session,
                info.context.state.cursors,
                person_id,
                first=first,
                after=after,
                unread_only=unread_only,
            )
        return Connection.from_page(page, NotificationType.from_row, after=after)

    @strawberry.field(permission_classes=[IsResident])
    async def unread_notification_count(self, info: Info) -> int:
        person_id = await _resident(info)
        async with info.context.db() as session:
            return await service.unread_count(session, person_id)


@strawberry.type
class NotificationMutation:
    @strawberry.mutation(
        permission_classes=[IsResident],
        description="Mark my notifications read: those named in `ids`, or all of them without `ids`. "
        "Ids that are not mine are passed over like ids that do not exist.",
    )
    async def mark_notifications_read(
        self, info: Info, ids: list[strawberry.ID] | None = None
    ) -> MarkNotificationsReadPayload:
        person_id = await _resident(info)
        wanted = service.parse_ids(ids)
        async with info.context.db() as session:
            marked = await service.mark_read(session, person_id, wanted)
            await session.commit()
            unread = await service.unread_count(session, person_id)
        return MarkNotificationsReadPayload(marked_count=marked, unread_count=unread)


async def _live_viewer(info: Info) -> Viewer:
    """The subscriber, checked on a session of its own: a subscription lives long, and the operation's
    session (which permission classes use) would hold a pooled connection for all that time."""
    scheme, _, token = (info.context.authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated()
    state = info.context.state
    async with state.db.sessionmaker() as session:
        return await auth_service.authenticate(session, state.tokens, token.strip())


@strawberry.type
class NotificationSubscription:
    @strawberry.subscription(
        description="My notifications as they are committed, on whichever worker. The login is checked "
        "again before each one: after a logout, a revoked login or an expired access token the "
        "subscription ends with UNAUTHENTICATED; reconnect with a fresh token and list what came meanwhile."
    )
    async def notification_added(self, info: Info) -> AsyncGenerator[NotificationType, None]:
        # Checked before the stream begins: a refusal is an error, not an empty stream.
        viewer = await _live_viewer(info)
        if viewer.role != Role.RESIDENT:
            raise Forbidden()
        return _notifications_of(info, _person_id(viewer))


async def _notifications_of(info: Info, person_id: int) -> AsyncGenerator[NotificationType, None]:
    state = info.context.state
    try:
        async for row in service.live(state.db.sessionmaker, state.broker, person_id):
            await _live_viewer(info)  # still logged in, or the subscription ends here
            yield NotificationType.from_row(row)
    except Lagged:
        raise Conflict("新通知过多，请重新获取通知列表") from None
