"""Push issues: the rejected and adjusted settlements terminals pushed, for reviewers and clinics.

Nothing a terminal pushed is dropped: every mutation stays in `pushed_mutations` with its answer, and a
rejected or adjusted one is an open issue until a reviewer (or an admin) resolves it with a note; who
resolved it and when is kept. Who sees them:
- reviewers and admins: every clinic's issues (or one clinic's, with `clinicId`), open or resolved;
- a clinic's counter login (role `terminal`, bound to the clinic by `accounts.facility_id`): its own
  clinic's issues, read-only. A clinic without such a login sees its issues on its terminals: each is a
  `push_issue` document in the clinic's pull scope (`clinic:<id>`), updated when it is resolved.
Resolving only records the review (the settlement, if any, stays as the server computed it; a rejected
visit is settled again, if at all, by a new visit through the ordinary channels).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from enum import StrEnum

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.auth.models import Account, Role
from api.auth.service import Viewer
from api.dbtypes import utcnow
from api.errors import BadUserInput, Conflict, Forbidden, NotFound
from api.pagination import CursorCodec, Page, page_size
from api.replication import changelog
from api.replication.models import PushedMutation, PushStatus
from api.replication.pull import PUSH_ISSUE, clinic_scope
from api.settlement.models import SettlementAdjustment
from api.terminals.models import Terminal

MAX_NOTE = 500


class IssueState(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"
    ALL = "all"


ISSUE_STATUSES = (PushStatus.REJECTED.value, PushStatus.ADJUSTED.value)


async def issue_clinic(session: AsyncSession, viewer: Viewer, clinic_id: int | None) -> int | None:
    """The clinic whose issues the viewer may list (None: every clinic). Reviewers and admins choose;
    a clinic's counter login sees only its own clinic."""
    if viewer.role in (Role.REVIEWER, Role.ADMIN):
        return clinic_id
    if viewer.role == Role.TERMINAL:
        account = await session.get(Account, viewer.account_id)
        own = account.facility_id if account is not None else None
        if own is None or (clinic_id is not None and clinic_id != own):
            raise Forbidden("只能查看本机构的结算问题")
        return own
    raise Forbidden()


async def list_issues(
    session: AsyncSession,
    cursors: CursorCodec,
    *,
    clinic_id: int | None,
    state: IssueState,
    outcome: PushStatus | None,
    first: int | None,
    after: str | None,
) -> Page[tuple[PushedMutation, int]]:
    """(issue, clinic id) pairs, newest first (by id), keyset-paged."""
    limit = page_size(first)
    filters: list[ColumnElement[bool]] = [
        col(PushedMutation.status).in_([outcome.value] if outcome is not None else list(ISSUE_STATUSES))
    ]
    if state == IssueState.OPEN:
        filters.append(col(PushedMutation.resolved_at).is_(None))
    elif state == IssueState.RESOLVED:
        filters.append(col(PushedMutation.resolved_at).is_not(None))
    if clinic_id is not None:
        filters.append(col(Terminal.clinic_id) == clinic_id)
    scope = f"push-issues:{clinic_id or '*'}:{state.value}:{outcome.value if outcome else '*'}"
    page_filters = list(filters)
    if after is not None:
        key = cursors.decode(scope, after)
        if len(key) != 1 or not isinstance(key[0], int):
            raise BadUserInput("分页游标无效", field="after")
        page_filters.append(col(PushedMutation.id) < key[0])
    joined = select(PushedMutation, col(Terminal.clinic_id)).join(
        Terminal, col(Terminal.id) == col(PushedMutation.terminal_id)
    )
    rows = [
        (row, int(clinic))
        for row, clinic in await session.execute(
            joined.where(*page_filters).order_by(col(PushedMutation.id).desc()).limit(limit + 1)
        )
    ]
    has_next = len(rows) > limit
    rows = rows[:limit]
    return Page(
        rows=rows,
        cursors=[cursors.encode(scope, [row.id]) for row, _ in rows],
        has_next_page=has_next,
        count_query=select(func.count())
        .select_from(PushedMutation)
        .join(Terminal, col(Terminal.id) == col(PushedMutation.terminal_id))
        .where(*filters),
    )


async def resolve_issue(
    session: AsyncSession, issue_id: int, viewer: Viewer, note: str, now: dt.datetime | None = None
) -> tuple[PushedMutation, int]:
    """Marks an open issue resolved by the viewer with a note; commits. Resolving twice is a CONFLICT."""
    note = note.strip()
    if not note:
        raise BadUserInput("请填写处理意见", field="note")
    if len(note) > MAX_NOTE:
        raise BadUserInput(f"处理意见最多{MAX_NOTE}个字", field="note")
    found = (
        await session.execute(
            select(PushedMutation, col(Terminal.clinic_id))
            .join(Terminal, col(Terminal.id) == col(PushedMutation.terminal_id))
            .where(col(PushedMutation.id) == issue_id, col(PushedMutation.status).in_(ISSUE_STATUSES))
        )
    ).first()
    if found is None:
        raise NotFound("未找到该结算问题")
    row, clinic_id = found
    now = now or utcnow()
    # Conditional: of two reviewers resolving at once, one wins and the other is told.
    result = await session.execute(
        update(PushedMutation)
        .where(col(PushedMutation.id) == issue_id, col(PushedMutation.resolved_at).is_(None))
        .values(resolved_at=now, resolved_by_account_id=viewer.account_id, resolution_note=note)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        await session.rollback()
        raise Conflict("该结算问题已处理", field="id")
    # The clinic's terminals pull the resolution with the issue.
    await changelog.record(
        session, [changelog.Change(PUSH_ISSUE, str(issue_id), clinic_scope(int(clinic_id)))]
    )
    await session.commit()
    await session.refresh(row)
    return row, int(clinic_id)


async def adjustments_for(
    session: AsyncSession, settlement_ids: Sequence[int]
) -> dict[int, SettlementAdjustment]:
    """The adjustments of these settlements (at most one each), by settlement id."""
    if not settlement_ids:
        return {}
    rows = await session.execute(
        select(SettlementAdjustment).where(col(SettlementAdjustment.settlement_id).in_(list(settlement_ids)))
    )
    return {row.settlement_id: row for row in rows.scalars()}


async def account_names(session: AsyncSession, account_ids: Sequence[int]) -> dict[int, str]:
    if not account_ids:
        return {}
    rows = await session.execute(
        select(col(Account.id), col(Account.display_name)).where(col(Account.id).in_(list(account_ids)))
    )
    return {int(i): str(name or "") for i, name in rows if i is not None}
