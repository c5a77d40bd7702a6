"""GraphQL: family links (亲情账户), acting for a relative, and the access audit. Thin: rules are in service."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import strawberry

from api.auth.models import Account, Role
from api.auth.permissions import IsAuthenticated, IsResident, IsReviewer
from api.auth.service import Viewer
from api.context import Info
from api.family import service
from api.family.models import AccessAudit, FamilyLink, LinkMethod, LinkStatus, Permission, Relationship
from api.ids import parse_id
from api.people import idnumbers
from api.people import service as people
from api.people.models import InsuredPerson
from api.people.schema import InsuredPersonType
from api.relay import Connection

LinkPermission = strawberry.enum(Permission, name="LinkPermission", description="What a family link allows.")
FamilyRelationship = strawberry.enum(
    Relationship, name="FamilyRelationship", description="The relative as seen from the holder."
)
FamilyLinkMethod = strawberry.enum(LinkMethod, name="FamilyLinkMethod")
FamilyLinkStatus = strawberry.enum(LinkStatus, name="FamilyLinkStatus")

RELATIONSHIP_LABELS = {"spouse": "配偶", "parent": "父母", "child": "子女", "guardian": "被监护人"}


@strawberry.type(
    name="FamilyLink", description="A holder acting for a relative (亲情账户), as it stands now."
)
class FamilyLinkType:
    id: strawberry.ID
    relationship: FamilyRelationship  # type: ignore[valid-type]
    relationship_label: str
    method: FamilyLinkMethod  # type: ignore[valid-type]
    status: FamilyLinkStatus  # type: ignore[valid-type]
    my_role: str = strawberry.field(description="`holder`, `relative` or `reviewer`: the caller's side.")
    holder_name: str
    relative_name: str
    relative_id_number_masked: str
    permissions: list[LinkPermission] = strawberry.field(  # type: ignore[valid-type]
        description="Granted now; checked on every request."
    )
    requested_permissions: list[LinkPermission]  # type: ignore[valid-type]
    evidence: str | None
    decision_note: str | None
    created_at: dt.datetime
    expires_at: dt.datetime | None = strawberry.field(description="When a pending request lapses.")
    decided_at: dt.datetime | None

    @classmethod
    def build(
        cls, link: FamilyLink, names: dict[int, InsuredPerson], viewer: Viewer, info: Info
    ) -> FamilyLinkType:
        holder, relative = names[link.holder_person_id], names[link.relative_person_id]
        if viewer.person_id == link.holder_person_id:
            role = "holder"
        elif viewer.person_id == link.relative_person_id:
            role = "relative"
        else:
            role = "reviewer"
        id_number = info.context.state.id_numbers.decrypt(relative.id_number_cipher)
        return cls(
            id=strawberry.ID(str(link.id)),
            relationship=Relationship(link.relationship),
            relationship_label=RELATIONSHIP_LABELS.get(link.relationship, link.relationship),
            method=LinkMethod(link.method),
            status=LinkStatus(link.status),
            my_role=role,
            holder_name=holder.name,
            relative_name=relative.name,
            relative_id_number_masked=idnumbers.mask(id_number),
            permissions=sorted(link.granted()),
            requested_permissions=sorted(link.wanted()),
            evidence=link.evidence if role != "relative" else None,
            decision_note=link.decision_note,
            created_at=link.created_at,
            expires_at=link.expires_at,
            decided_at=link.decided_at,
        )


async def _links_out(info: Info, viewer: Viewer, links: Sequence[FamilyLink]) -> list[FamilyLinkType]:
    ids = {i for link in links for i in (link.holder_person_id, link.relative_person_id)}
    async with info.context.db() as session:
        names = await service.people_by_ids(session, ids)
    return [FamilyLinkType.build(link, names, viewer, info) for link in links]


STAFF_TITLES = {Role.REVIEWER.value: "经办人员", Role.ADMIN.value: "管理员"}


@strawberry.type(
    name="AccessAuditEntry",
    description="One read of, or change to, your data or a family link in your name, and who did it.",
)
class AccessAuditEntryType:
    id: strawberry.ID
    occurred_at: dt.datetime
    action: str = strawberry.field(
        description=(
            "Reads: `read:settlements`, … Filings: `filing:create`, `filing:submit`, …"
            " Vouchers: `issue_voucher`, `certify_device`. Links: `link_requested`,"
            " `link_request_changed` (a pending request replaced by a new one), `link_granted`,"
            " `link_refused`, `update_permissions`, `link_removed`, `link_expired` (a request nobody"
            " answered in time). Staff: `reveal:bank_account` (the reviewer paying a filing of yours"
            " saw its whole payout bank account)."
        )
    )
    detail: str | None
    link_id: strawberry.ID | None
    actor_name: str = strawberry.field(
        description=(
            "The family member's name, or for staff their title and name (经办人员（…）); 系统 for `system`."
        )
    )
    actor_role: str = strawberry.field(
        description=(
            "Who acted: `holder` (the family member), `relative` (you), `reviewer` or `admin`; `system`"
            " for what nobody did (`link_expired`)."
        )
    )

    @classmethod
    def build(
        cls, row: AccessAudit, names: dict[int, InsuredPerson], accounts: dict[int, Account]
    ) -> AccessAuditEntryType:
        person = names.get(row.actor_person_id) if row.actor_person_id is not None else None
        if row.action in service.SYSTEM_ACTIONS:
            role, name = "system", "系统"
        elif row.actor_person_id is not None:
            role = "relative" if row.actor_person_id == row.person_id else "holder"
            name = person.name if person else ""
        else:
            account = accounts.get(row.actor_account_id)
            role = account.role if account else "unknown"
            shown = (account.display_name if account else "") or f"账号{row.actor_account_id}"
            name = f"{STAFF_TITLES.get(role, '工作人员')}（{shown}）"
        return cls(
            id=strawberry.ID(str(row.id)),
            occurred_at=row.occurred_at,
            action=row.action,
            detail=row.detail,
            link_id=strawberry.ID(str(row.link_id)) if row.link_id is not None else None,
            actor_name=name,
            actor_role=role,
        )


@strawberry.input(description="Link a relative: their name and ID number must match an insured person.")
class RequestFamilyLinkInput:
    relationship: FamilyRelationship = strawberry.field(  # type: ignore[valid-type]
        description=(
            "Checked against the register, else BAD_USER_INPUT (field `relationship`): a parent is at"
            " least 14 years older than the child, spouses are of marriage age (men 22, women 20) and"
            " a man and a woman (reason `spouse_same_gender`), a guardian is an adult linking a minor"
            " of the same household."
        )
    )
    name: str
    id_number: str
    permissions: list[LinkPermission] = strawberry.field(  # type: ignore[valid-type]
        default_factory=lambda: list(Permission)
    )
    proxy: bool = strawberry.field(
        default=False,
        description=(
            "For a relative who cannot use a phone and has no login: a reviewer decides (代办). A relative"
            " with a login must confirm themselves (BAD_USER_INPUT, field `proxy`)."
        ),
    )
    evidence: str | None = strawberry.field(default=None, description="Required for a proxy request.")


@strawberry.type
class FamilyQuery:
    @strawberry.field(
        permission_classes=[IsResident], description="Links where I am the holder or the relative."
    )
    async def family_links(self, info: Info, include_closed: bool = False) -> list[FamilyLinkType]:
        viewer = await info.context.require_viewer()
        async with info.context.db() as session:
            links = await service.list_links(session, viewer, include_closed)
        return await _links_out(info, viewer, links)

    @strawberry.field(
        permission_classes=[IsResident],
        description=(
            "A linked relative, as `me` shows a person. Records, and the health and welfare details"
            " (gender, birthDate, assistanceCategory, chronicDiseases, twoDiseases), need the"
            " read-records permission. Audited."
        ),
    )
    async def relative(self, info: Info, link_id: strawberry.ID) -> InsuredPersonType:
        viewer = await info.context.require_viewer()
        async with info.context.db() as session:
            link = await service.access_checked(session, viewer, link_id, None, "read:profile")
            row = await people.get_person(session, link.relative_person_id)

        async def check(field_info: Info, what: str) -> None:
            # Re-checked per field and per request: a permission narrowed a moment ago already applies.
            async with field_info.context.db() as session:
                await service.access_checked(
                    session, viewer, link_id, Permission.READ_RECORDS, f"read:{what}"
                )

        return InsuredPersonType.from_row(row, info, check)

    @strawberry.field(
        permission_classes=[IsResident], description="Who read or did what with my data, newest first."
    )
    async def access_audit(
        self, info: Info, first: int | None = 20, after: str | None = None
    ) -> Connection[AccessAuditEntryType]:
        viewer = await info.context.require_viewer()
        async with info.context.db() as session:
            page = await service.list_audit(
                session, info.context.state.cursors, viewer, first=first, after=after
            )
            names = await service.people_by_ids(
                session, {row.actor_person_id for row in page.rows if row.actor_person_id is not None}
            )
            accounts = await service.accounts_by_ids(
                session, {row.actor_account_id for row in page.rows if row.actor_person_id is None}
            )
        return Connection.from_page(
            page, lambda row: AccessAuditEntryType.build(row, names, accounts), after=after
        )

    @strawberry.field(
        permission_classes=[IsReviewer], description="Proxy link requests waiting for a reviewer."
    )
    async def pending_proxy_links(self, info: Info) -> list[FamilyLinkType]:
        viewer = await info.context.require_viewer()
        async with info.context.db() as session:
            links = await service.pending_proxy_links(session)
        return await _links_out(info, viewer, links)


@strawberry.type
class FamilyMutation:
    @strawberry.mutation(permission_classes=[IsResident], description="Ask to link a relative.")
    async def request_family_link(self, info: Info, input: RequestFamilyLinkInput) -> FamilyLinkType:
        ctx = info.context
        viewer = await ctx.require_viewer()
        async with ctx.db() as session:
            link = await service.request_link(
                session,
                ctx.state.id_numbers,
                ctx.state.settings,
                viewer,
                relationship=input.relationship,
                name=input.name,
                id_number=input.id_number,
                permissions=input.permissions,
                proxy=input.proxy,
                evidence=input.evidence,
            )
        return (await _links_out(info, viewer, [link]))[0]

    @strawberry.mutation(
        permission_classes=[IsResident],
        description=(
            "The relative confirms (granting exactly what this request shows, or only `permissions`) or"
            " declines; also a pending proxy request made before they had a login."
        ),
    )
    async def respond_family_link(
        self,
        info: Info,
        id: strawberry.ID,
        accept: bool,
        permissions: list[LinkPermission] | None = None,  # type: ignore[valid-type]
    ) -> FamilyLinkType:
        viewer = await info.context.require_viewer()
        async with info.context.db() as session:
            link = await service.respond(session, viewer, parse_id(id, "id"), accept, permissions)
        return (await _links_out(info, viewer, [link]))[0]

    @strawberry.mutation(
        permission_classes=[IsAuthenticated],  # residents and reviewers; the service decides which side
        description=(
            "Holder: what I ask for (dropping applies at once; on a pending request any change closes it"
            " and returns a new request, with a new id). Relative or reviewer (proxy): what is granted."
        ),
    )
    async def update_link_permissions(
        self,
        info: Info,
        link_id: strawberry.ID,
        permissions: list[LinkPermission],  # type: ignore[valid-type]
    ) -> FamilyLinkType:
        viewer = await info.context.require_viewer()
        async with info.context.db() as session:
            link = await service.update_permissions(
                session, info.context.state.settings, viewer, link_id, permissions
            )
        return (await _links_out(info, viewer, [link]))[0]

    @strawberry.mutation(
        permission_classes=[IsResident],
        description="End a link (active or pending, whatever its method), from either side, at once.",
    )
    async def unlink_family(self, info: Info, link_id: strawberry.ID) -> FamilyLinkType:
        viewer = await info.context.require_viewer()
        async with info.context.db() as session:
            link = await service.unlink(session, viewer, link_id)
        return (await _links_out(info, viewer, [link]))[0]

    @strawberry.mutation(
        permission_classes=[IsReviewer],
        description=(
            "Approve or reject a proxy link request. Approval is refused (CONFLICT, relative_can_confirm)"
            " once the relative has a login of their own: then only they can confirm."
        ),
    )
    async def decide_proxy_link(
        self,
        info: Info,
        id: strawberry.ID,
        approve: bool,
        note: str | None = None,
        permissions: list[LinkPermission] | None = None,  # type: ignore[valid-type]
    ) -> FamilyLinkType:
        viewer = await info.context.require_viewer()
        async with info.context.db() as session:
            link = await service.decide_proxy(session, viewer, parse_id(id, "id"), approve, note, permissions)
        return (await _links_out(info, viewer, [link]))[0]
