"""What each replicated collection holds for a resident: which people's rows, and each row as a document.

A document is the row's current state as the phone keeps it (money in integer fen, ID numbers masked,
times ISO-8601 UTC), with `id` (RxDB's primary key), `personId` (whose data it is), `updatedAt` and
`deleted` (sent as `_deleted`). A document is `deleted` when the row is gone from the viewer's replica:
its person is no longer visible to the viewer, a family link has closed, or a draft was discarded.

Visibility, checked in the database on every pull (never from the token or memory):
- Settlement, Contribution, AccountFlow: the viewer's own, and each relative's whose ACTIVE link (the
  viewer the holder) grants read_records now;
- Filing: the viewer's own, and each relative's whose active link grants file_on_behalf now (the
  permission the filings service asks for to read or act on a relative's filing);
- FamilyLink: links where the viewer is the holder or the relative (closed ones are `deleted`);
- Notification: the viewer's own only.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.family.models import OPEN_STATUSES, FamilyLink, LinkStatus, Permission
from api.family.schema import RELATIONSHIP_LABELS
from api.filings.kinds import KINDS
from api.filings.models import Filing, FilingStatus
from api.filings.service import STATUS_LABELS
from api.notifications.models import Notification
from api.people import idnumbers
from api.people.models import AccountFlow, Contribution, Facility, InsuredPerson, Settlement
from api.people.schema import FLOW_KIND_LABELS
from api.state import AppState
from sync.settlement import VISIT_CATEGORIES

SETTLEMENT_ENTITY = "settlement"
CONTRIBUTION_ENTITY = "contribution"
ACCOUNT_FLOW_ENTITY = "account_flow"
FILING_ENTITY = "filing"
FAMILY_LINK_ENTITY = "family_link"
NOTIFICATION_ENTITY = "notification"


def iso(moment: dt.datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def _iso(moment: dt.datetime) -> str:
    text = iso(moment)
    assert text is not None
    return text


TOMBSTONE_KEEPS = frozenset({"id", "person_id", "updated_at", "deleted"})


def tombstone(document: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """A document of someone the viewer no longer sees, emptied to "gone since `now`". The row as it is
    now is none of the viewer's business: a visit made, or a filing decided, after the link ended
    would otherwise reach the ex-holder's phone inside its tombstone (jobs and deltas read rows as
    they are now). Every other field keeps its type (the GraphQL types are non-null)."""
    blank: dict[str, Any] = {}
    for name, value in document.items():
        if name in TOMBSTONE_KEEPS:
            blank[name] = value
        elif value is None or isinstance(value, bool):
            blank[name] = None if value is None else False
        elif isinstance(value, int):
            blank[name] = 0
        elif isinstance(value, str):
            blank[name] = ""
        else:
            blank[name] = type(value)()  # JSON objects and lists
    blank["updated_at"] = _iso(now)
    return blank


@dataclass(frozen=True)
class Links:
    """The viewer's active links as holder, with what each grants now."""

    me: int
    read_records: frozenset[int] = frozenset()
    file_on_behalf: frozenset[int] = frozenset()


async def links_of(session: AsyncSession, me: int) -> Links:
    rows = await session.execute(
        select(
            col(FamilyLink.relative_person_id),
            col(FamilyLink.can_read_records),
            col(FamilyLink.can_file_on_behalf),
        ).where(
            col(FamilyLink.holder_person_id) == me,
            col(FamilyLink.status) == LinkStatus.ACTIVE.value,
        )
    )
    read, file = set(), set()
    for relative, can_read, can_file in rows:
        if can_read:
            read.add(int(relative))
        if can_file:
            file.add(int(relative))
    return Links(me, frozenset(read), frozenset(file))


@dataclass
class Ctx:
    """One pull's view: the viewer, whose rows are visible in this collection, and the app's keys."""

    state: AppState
    me: int
    persons: frozenset[int]
    names: dict[int, str] = field(default_factory=dict)


class Collection:
    name: str
    entities: frozenset[str]
    writable = False
    shared = False
    """Relatives' rows are visible through links (so each pull reads the viewer's links)."""

    def persons(self, links: Links) -> frozenset[int]:
        """Whose rows the viewer sees in this collection."""
        return frozenset({links.me})

    async def snapshot(
        self, session: AsyncSession, ctx: Ctx, person: int, after: int, limit: int
    ) -> list[tuple[int, dict[str, Any]]]:
        """The person's rows by id after `after`, at most `limit`, as (row id, document)."""
        raise NotImplementedError

    async def by_ids(
        self, session: AsyncSession, ctx: Ctx, entity: str, ids: Sequence[int]
    ) -> dict[int, list[dict[str, Any]]]:
        """The documents of these change-log entity ids (of rows that exist), by entity id."""
        raise NotImplementedError


def _by_id_via_person(column: Any) -> Any:
    """`id + 0`: the same order, which the primary key's index cannot give. These tables are indexed on
    (person_id, <time>, id); ordered by the bare id under a LIMIT, PostgreSQL walks the primary key from
    the lowest id filtering for the person (the whole table for a recent resident) instead of reading
    the person's few hundred rows through their index and sorting them."""
    return column + 0


def _records(links: Links) -> frozenset[int]:
    return frozenset({links.me, *links.read_records})


class SettlementCollection(Collection):
    name = "Settlement"
    entities = frozenset({SETTLEMENT_ENTITY})
    shared = True

    def persons(self, links: Links) -> frozenset[int]:
        return _records(links)

    def _statement(self) -> Any:
        return select(Settlement, col(Facility.name), col(Facility.level)).join(
            Facility, col(Facility.id) == col(Settlement.facility_id)
        )

    def _doc(self, ctx: Ctx, row: Settlement, facility_name: str, facility_level: str) -> dict[str, Any]:
        return {
            "id": str(row.id),
            "person_id": str(row.person_id),
            "updated_at": _iso(row.voided_at or row.settled_at),
            "deleted": row.person_id not in ctx.persons,
            "settled_at": _iso(row.settled_at),
            "year": row.year,
            "category": row.category,
            "category_label": VISIT_CATEGORIES.get(row.category, row.category),
            "visit_scope": row.visit_scope,
            "facility_name": facility_name,
            "facility_level": facility_level,
            "total_fen": row.total_fen,
            "compliant_fen": row.compliant_fen,
            "deductible_fen": row.deductible_fen,
            "basic_fen": row.basic_fen,
            "critical_illness_fen": row.critical_illness_fen,
            "assistance_fen": row.assistance_fen,
            "personal_account_fen": row.personal_account_fen,
            "cash_fen": row.cash_fen,
            "policy_version": row.policy_version,
            "source": row.source,
            "voided": row.voided_at is not None,
            "voided_at": iso(row.voided_at),
        }

    async def snapshot(
        self, session: AsyncSession, ctx: Ctx, person: int, after: int, limit: int
    ) -> list[tuple[int, dict[str, Any]]]:
        rows = await session.execute(
            self._statement()
            .where(col(Settlement.person_id) == person, col(Settlement.id) > after)
            .order_by(_by_id_via_person(col(Settlement.id)))
            .limit(limit)
        )
        return [(int(r.id or 0), self._doc(ctx, r, n, lv)) for r, n, lv in rows]

    async def by_ids(
        self, session: AsyncSession, ctx: Ctx, entity: str, ids: Sequence[int]
    ) -> dict[int, list[dict[str, Any]]]:
        rows = await session.execute(self._statement().where(col(Settlement.id).in_(ids)))
        return {int(r.id or 0): [self._doc(ctx, r, n, lv)] for r, n, lv in rows}


class ContributionCollection(Collection):
    name = "Contribution"
    entities = frozenset({CONTRIBUTION_ENTITY})
    shared = True

    def persons(self, links: Links) -> frozenset[int]:
        return _records(links)

    def _doc(self, ctx: Ctx, row: Contribution) -> dict[str, Any]:
        return {
            "id": str(row.id),
            "person_id": str(row.person_id),
            "updated_at": _iso(row.paid_at),
            "deleted": row.person_id not in ctx.persons,
            "year": row.year,
            "period": row.period,
            "insurance_type": row.insurance_type,
            "paid_at": _iso(row.paid_at),
            "amount_fen": row.amount_fen,
            "subsidy_fen": row.subsidy_fen,
        }

    async def snapshot(
        self, session: AsyncSession, ctx: Ctx, person: int, after: int, limit: int
    ) -> list[tuple[int, dict[str, Any]]]:
        rows = await session.execute(
            select(Contribution)
            .where(col(Contribution.person_id) == person, col(Contribution.id) > after)
            .order_by(_by_id_via_person(col(Contribution.id)))
            .limit(limit)
        )
        return [(int(r.id or 0), self._doc(ctx, r)) for r in rows.scalars()]

    async def by_ids(
        self, session: AsyncSession, ctx: Ctx, entity: str, ids: Sequence[int]
    ) -> dict[int, list[dict[str, Any]]]:
        rows = await session.execute(select(Contribution).where(col(Contribution.id).in_(ids)))
        return {int(r.id or 0): [self._doc(ctx, r)] for r in rows.scalars()}


class AccountFlowCollection(Collection):
    name = "AccountFlow"
    entities = frozenset({ACCOUNT_FLOW_ENTITY, SETTLEMENT_ENTITY})
    shared = True

    def persons(self, links: Links) -> frozenset[int]:
        return _records(links)

    def _doc(self, ctx: Ctx, row: AccountFlow) -> dict[str, Any]:
        return {
            "id": str(row.id),
            "person_id": str(row.person_id),
            "updated_at": _iso(row.occurred_at),
            "deleted": row.person_id not in ctx.persons,
            "occurred_at": _iso(row.occurred_at),
            "year": row.year,
            "kind": row.kind,
            "kind_label": FLOW_KIND_LABELS.get(row.kind, row.kind),
            "amount_fen": row.amount_fen,
            "balance_after_fen": row.balance_after_fen,
            "settlement_id": str(row.settlement_id) if row.settlement_id is not None else None,
        }

    async def snapshot(
        self, session: AsyncSession, ctx: Ctx, person: int, after: int, limit: int
    ) -> list[tuple[int, dict[str, Any]]]:
        rows = await session.execute(
            select(AccountFlow)
            .where(col(AccountFlow.person_id) == person, col(AccountFlow.id) > after)
            .order_by(_by_id_via_person(col(AccountFlow.id)))
            .limit(limit)
        )
        return [(int(r.id or 0), self._doc(ctx, r)) for r in rows.scalars()]

    async def by_ids(
        self, session: AsyncSession, ctx: Ctx, entity: str, ids: Sequence[int]
    ) -> dict[int, list[dict[str, Any]]]:
        if entity == SETTLEMENT_ENTITY:
            # A settlement and its account flows are written in one transaction (a terminal's push, a
            # void's refund): the settlement's entry stands for its flows too.
            found: dict[int, list[dict[str, Any]]] = {}
            rows = await session.execute(
                select(AccountFlow)
                .where(col(AccountFlow.settlement_id).in_(ids))
                .order_by(col(AccountFlow.id))
            )
            for row in rows.scalars():
                found.setdefault(int(row.settlement_id or 0), []).append(self._doc(ctx, row))
            return found
        rows = await session.execute(select(AccountFlow).where(col(AccountFlow.id).in_(ids)))
        return {int(r.id or 0): [self._doc(ctx, r)] for r in rows.scalars()}


def filing_discarded(row: Filing) -> bool:
    """A draft withdrawn before it was ever submitted: gone from the phone, kept on the server."""
    return row.status == FilingStatus.WITHDRAWN.value and row.submitted_at is None


class FilingCollection(Collection):
    name = "Filing"
    entities = frozenset({FILING_ENTITY})
    shared = True
    writable = True

    def persons(self, links: Links) -> frozenset[int]:
        return frozenset({links.me, *links.file_on_behalf})

    def doc(self, ctx: Ctx, row: Filing) -> dict[str, Any]:
        kind = KINDS.get(row.kind)
        return {
            "id": row.client_id,
            "server_id": str(row.id) if row.id is not None else None,
            "person_id": str(row.person_id),
            "updated_at": _iso(row.updated_at),
            "deleted": row.person_id not in ctx.persons or filing_discarded(row),
            "kind": row.kind,
            "kind_label": kind.label if kind else row.kind,
            "status": row.status,
            "status_label": STATUS_LABELS.get(row.status, row.status),
            "stage": row.stage,
            "fields": row.fields,
            "amount_fen": row.amount_fen,
            "link_id": str(row.link_id) if row.link_id is not None else None,
            "filed_by_person_id": str(row.filed_by_person_id) if row.filed_by_person_id is not None else None,
            "due_on": row.due_on.isoformat() if row.due_on else None,
            "decision_reason": row.decision_reason,
            "created_at": _iso(row.created_at),
            "submitted_at": iso(row.submitted_at),
            "decided_at": iso(row.decided_at),
            "version": row.version,
        }

    async def snapshot(
        self, session: AsyncSession, ctx: Ctx, person: int, after: int, limit: int
    ) -> list[tuple[int, dict[str, Any]]]:
        rows = await session.execute(
            select(Filing)
            .where(col(Filing.person_id) == person, col(Filing.id) > after)
            .order_by(col(Filing.id))
            .limit(limit)
        )
        return [(int(r.id or 0), self.doc(ctx, r)) for r in rows.scalars()]

    async def by_ids(
        self, session: AsyncSession, ctx: Ctx, entity: str, ids: Sequence[int]
    ) -> dict[int, list[dict[str, Any]]]:
        rows = await session.execute(select(Filing).where(col(Filing.id).in_(ids)))
        return {int(r.id or 0): [self.doc(ctx, r)] for r in rows.scalars()}


class FamilyLinkCollection(Collection):
    name = "FamilyLink"
    entities = frozenset({FAMILY_LINK_ENTITY})

    async def _docs(
        self, session: AsyncSession, ctx: Ctx, rows: Iterable[FamilyLink]
    ) -> list[dict[str, Any]]:
        rows = list(rows)
        people = {p for r in rows for p in (r.holder_person_id, r.relative_person_id)}
        found: dict[int, tuple[str, bytes]] = {}
        if people:
            result = await session.execute(
                select(
                    col(InsuredPerson.id), col(InsuredPerson.name), col(InsuredPerson.id_number_cipher)
                ).where(col(InsuredPerson.id).in_(people))
            )
            found = {int(i or 0): (n, c) for i, n, c in result}
        documents = []
        for row in rows:
            holder = found.get(row.holder_person_id, ("", b""))
            relative = found.get(row.relative_person_id, ("", b""))
            mine = ctx.me in (row.holder_person_id, row.relative_person_id)
            changed = max(m for m in (row.created_at, row.decided_at, row.removed_at) if m is not None)
            documents.append(
                {
                    "id": str(row.id),
                    "person_id": str(ctx.me),
                    "updated_at": _iso(changed),
                    "deleted": not mine or row.status not in OPEN_STATUSES,
                    "relationship": row.relationship,
                    "relationship_label": RELATIONSHIP_LABELS.get(row.relationship, row.relationship),
                    "method": row.method,
                    "status": row.status,
                    "my_role": "holder" if row.holder_person_id == ctx.me else "relative",
                    "holder_person_id": str(row.holder_person_id),
                    "relative_person_id": str(row.relative_person_id),
                    "holder_name": holder[0],
                    "relative_name": relative[0],
                    "relative_id_number_masked": idnumbers.mask(ctx.state.id_numbers.decrypt(relative[1]))
                    if relative[1]
                    else "",
                    "permissions": sorted(p.value for p in row.granted()),
                    "requested_permissions": sorted(p.value for p in row.wanted()),
                    "created_at": _iso(row.created_at),
                    "expires_at": iso(row.expires_at),
                    "decided_at": iso(row.decided_at),
                }
            )
        return documents

    async def snapshot(
        self, session: AsyncSession, ctx: Ctx, person: int, after: int, limit: int
    ) -> list[tuple[int, dict[str, Any]]]:
        rows = list(
            (
                await session.execute(
                    select(FamilyLink)
                    .where(
                        or_(
                            col(FamilyLink.holder_person_id) == person,
                            col(FamilyLink.relative_person_id) == person,
                        ),
                        col(FamilyLink.id) > after,
                    )
                    .order_by(col(FamilyLink.id))
                    .limit(limit)
                )
            ).scalars()
        )
        return [(int(r.id or 0), d) for r, d in zip(rows, await self._docs(session, ctx, rows), strict=True)]

    async def by_ids(
        self, session: AsyncSession, ctx: Ctx, entity: str, ids: Sequence[int]
    ) -> dict[int, list[dict[str, Any]]]:
        rows = list((await session.execute(select(FamilyLink).where(col(FamilyLink.id).in_(ids)))).scalars())
        return {int(r.id or 0): [d] for r, d in zip(rows, await self._docs(session, ctx, rows), strict=True)}


class NotificationCollection(Collection):
    name = "Notification"
    entities = frozenset({NOTIFICATION_ENTITY})
    writable = True

    def doc(self, ctx: Ctx, row: Notification) -> dict[str, Any]:
        return {
            "id": str(row.id),
            "person_id": str(row.person_id),
            "updated_at": _iso(row.read_at or row.created_at),
            "deleted": row.person_id != ctx.me,
            "kind": row.kind,
            "title": row.title,
            "body": row.body,
            "data": row.data,
            "created_at": _iso(row.created_at),
            "read_at": iso(row.read_at),
            "link_id": str(row.link_id) if row.link_id is not None else None,
        }

    async def snapshot(
        self, session: AsyncSession, ctx: Ctx, person: int, after: int, limit: int
    ) -> list[tuple[int, dict[str, Any]]]:
        rows = await session.execute(
            select(Notification)
            .where(col(Notification.person_id) == person, col(Notification.id) > after)
            .order_by(col(Notification.id))
            .limit(limit)
        )
        return [(int(r.id or 0), self.doc(ctx, r)) for r in rows.scalars()]

    async def by_ids(
        self, session: AsyncSession, ctx: Ctx, entity: str, ids: Sequence[int]
    ) -> dict[int, list[dict[str, Any]]]:
        rows = await session.execute(select(Notification).where(col(Notification.id).in_(ids)))
        return {int(r.id or 0): [self.doc(ctx, r)] for r in rows.scalars()}


COLLECTIONS: dict[str, Collection] = {
    c.name: c
    for c in (
        SettlementCollection(),
        ContributionCollection(),
        AccountFlowCollection(),
        FilingCollection(),
        FamilyLinkCollection(),
        NotificationCollection(),
    )
}

__all__ = ["COLLECTIONS", "Collection", "Ctx", "Links", "Permission", "links_of", "tombstone"]
