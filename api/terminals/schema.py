"""GraphQL (admin): village clinics, their terminals, enrolment codes, revocation. Thin: see service."""

from __future__ import annotations

import datetime as dt

import strawberry

from api.auth.permissions import IsAdmin
from api.context import Info
from api.ids import parse_id
from api.terminals import service
from api.terminals.models import Terminal


@strawberry.type(name="Terminal", description="A clinic terminal (村卫生室终端) and how far it has synced.")
class TerminalType:
    id: strawberry.ID
    status: str = strawberry.field(description="active | revoked")
    enrolled_at: dt.datetime
    last_push_at: dt.datetime | None = strawberry.field(description="Its last push the server answered.")
    last_pull_at: dt.datetime | None = strawberry.field(description="Its last pull the server answered.")
    last_seq: int = strawberry.field(description="The outbox seq of its last applied mutation.")
    revoked_at: dt.datetime | None

    @classmethod
    def from_row(cls, row: Terminal) -> TerminalType:
        return cls(
            id=strawberry.ID(str(row.id)),
            status=row.status,
            enrolled_at=row.enrolled_at,
            last_push_at=row.last_push_at,
            last_pull_at=row.last_pull_at,
            last_seq=row.last_seq,
            revoked_at=row.revoked_at,
        )


@strawberry.type(
    name="Clinic", description="A village clinic (村卫生室): its terminals sync its village's roster."
)
class ClinicType:
    id: strawberry.ID
    code: str
    name: str
    village_code: str | None = strawberry.field(description="12-digit village code (村级区划代码).")
    terminals: list[TerminalType]

    @classmethod
    def from_clinic(cls, clinic: service.Clinic) -> ClinicType:
        f = clinic.facility
        return cls(
            id=strawberry.ID(str(f.id)),
            code=f.code,
            name=f.name,
            village_code=f.village_code,
            terminals=[TerminalType.from_row(t) for t in clinic.terminals],
        )


@strawberry.type(name="TerminalEnrolmentCode", description="A one-time code to enrol one terminal.")
class EnrolmentCodeType:
    code: str = strawberry.field(
        description="Shown once: give it to the clinic (`yibao-terminal enrol --code`). Case and hyphens do not matter."
    )
    expires_at: dt.datetime


@strawberry.type
class TerminalQuery:
    @strawberry.field(
        permission_classes=[IsAdmin], description="Village clinics with their terminals (admin)."
    )
    async def clinics(self, info: Info) -> list[ClinicType]:
        viewer = await info.context.require_viewer()
        async with info.context.db() as session:
            clinics = await service.list_clinics(session, viewer)
        return [ClinicType.from_clinic(c) for c in clinics]


@strawberry.type
class TerminalMutation:
    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="A one-time enrolment code for a terminal of the clinic (admin); it expires unused.",
    )
    async def enrol_terminal(self, info: Info, clinic_id: strawberry.ID) -> EnrolmentCodeType:
        viewer = await info.context.require_viewer()
        cid = parse_id(clinic_id, field="clinicId")
        ttl = dt.timedelta(hours=info.context.state.settings.terminal_enrolment_ttl_h)
        async with info.context.db() as session:
            code, expires_at = await service.create_enrolment_code(session, viewer, cid, ttl)
        return EnrolmentCodeType(code=code, expires_at=expires_at)

    @strawberry.mutation(
        permission_classes=[IsAdmin],
        description="Revoke a terminal (admin): its next request is refused.",
    )
    async def revoke_terminal(self, info: Info, id: strawberry.ID) -> TerminalType:
        viewer = await info.context.require_viewer()
        tid = parse_id(id, field="id")
        async with info.context.db() as session:
            terminal = await service.revoke(session, viewer, tid)
        return TerminalType.from_row(terminal)
