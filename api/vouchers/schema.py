"""GraphQL: e-vouchers (医保码) — issue online codes, certify devices for offline codes, verify, revoke."""

from __future__ import annotations

import base64
import datetime as dt

import strawberry

from api.auth.permissions import IsPharmacy, IsResident
from api.context import Info
from api.family.models import Relationship
from api.family.schema import RELATIONSHIP_LABELS, FamilyRelationship
from api.people import idnumbers
from api.vouchers import service
from sync.settlement import INSURANCE_TYPES


@strawberry.type(
    name="Voucher", description="An online code (医保码), valid until `expiresAt`; refresh before then."
)
class VoucherType:
    code: str
    expires_at: dt.datetime
    kid: str
    link_id: strawberry.ID | None
    _qr: strawberry.Private[service.QrCode]

    @strawberry.field(description="The QR code as an SVG document.")
    def qr_svg(self) -> str:
        return self._qr.svg()

    @strawberry.field(description="The QR code as a PNG image, base64.")
    def qr_png_base64(self) -> str:
        return base64.b64encode(self._qr.png()).decode("ascii")


@strawberry.type(
    name="DeviceCertificate", description="Certifies a phone's key: it signs offline codes itself."
)
class DeviceCertificateType:
    certificate: str = strawberry.field(description="Base64 of the certificate bytes (SPEC.md section 4).")
    serial: str
    kid: str
    link_id: strawberry.ID | None
    not_before: dt.datetime
    not_after: dt.datetime
    revoked_at: dt.datetime | None = None


@strawberry.type(name="VoucherPerson", description="Who a valid voucher is for, masked.")
class VoucherPersonType:
    masked_name: str
    id_number_masked: str
    insurance_type: str
    insurance_type_label: str


@strawberry.type(name="VoucherVerification")
class VoucherVerificationType:
    valid: bool
    reason: str | None = strawberry.field(
        description="Why not: malformed, unknown_key, bad_signature, not_yet_valid, expired, "
        "certificate_not_yet_valid, certificate_expired, revoked, replayed."
    )
    detail: str | None = strawberry.field(description="For `revoked`: certificate, link or person.")
    form: str | None
    expires_at: dt.datetime | None
    certificate_serial: str | None
    person: VoucherPersonType | None
    relationship: FamilyRelationship | None = strawberry.field(  # type: ignore[valid-type]
        description="Set when a family member shows the relative's code."
    )
    relationship_label: str | None


def _time(seconds: int | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(seconds, dt.UTC) if seconds is not None else None


@strawberry.type
class VoucherMutation:
    @strawberry.mutation(
        permission_classes=[IsResident],
        description="A fresh online code for me, or for a relative through `linkId` (needs show-voucher).",
    )
    async def issue_voucher(self, info: Info, link_id: strawberry.ID | None = None) -> VoucherType:
        ctx = info.context
        viewer = await ctx.require_viewer()
        async with ctx.db() as session:
            issued = await service.issue_voucher(
                session, ctx.state.settings, ctx.state.voucher_keys, viewer, link_id
            )
        return VoucherType(
            code=issued.code,
            expires_at=issued.expires_at,
            kid=issued.kid,
            link_id=strawberry.ID(str(issued.link_id)) if issued.link_id is not None else None,
            _qr=service.QrCode(issued.code),
        )

    @strawberry.mutation(
        permission_classes=[IsResident],
        description="Certify this phone's Ed25519 public key (base64 or base64url of 32 bytes) for offline codes.",
    )
    async def certify_device(
        self, info: Info, public_key: str, link_id: strawberry.ID | None = None
    ) -> DeviceCertificateType:
        ctx = info.context
        viewer = await ctx.require_viewer()
        async with ctx.db() as session:
            issued = await service.certify_device(
                session, ctx.state.settings, ctx.state.voucher_keys, viewer, public_key, link_id
            )
        record = issued.record
        return DeviceCertificateType(
            certificate=base64.b64encode(issued.certificate).decode("ascii"),
            serial=record.serial,
            kid=record.kid,
            link_id=strawberry.ID(str(record.link_id)) if record.link_id is not None else None,
            not_before=record.not_before,
            not_after=record.not_after,
        )

    @strawberry.mutation(
        permission_classes=[IsResident],
        description="A phone was lost: revoke its certificates, named by serial or by its public key.",
    )
    async def report_device_lost(
        self, info: Info, certificate_serial: str | None = None, device_key: str | None = None
    ) -> list[DeviceCertificateType]:
        viewer = await info.context.require_viewer()
        async with info.context.db() as session:
            certs = await service.report_device_lost(
                session, viewer, certificate_serial=certificate_serial, device_key=device_key
            )
        return [
            DeviceCertificateType(
                certificate="",
                serial=c.serial,
                kid=c.kid,
                link_id=strawberry.ID(str(c.link_id)) if c.link_id is not None else None,
                not_before=c.not_before,
                not_after=c.not_after,
                revoked_at=c.revoked_at,
            )
            for c in certs
        ]

    @strawberry.mutation(
        permission_classes=[IsPharmacy],
        description="Verify a scanned code (online or offline form). A valid code is accepted once.",
    )
    async def verify_voucher(self, info: Info, code: str) -> VoucherVerificationType:
        ctx = info.context
        async with ctx.db() as session:
            checked = await service.verify(session, ctx.state.settings, ctx.state.voucher_keys, code)
        result, person, link = checked.result, checked.person, checked.link
        summary = None
        if person is not None:
            id_number = ctx.state.id_numbers.decrypt(person.id_number_cipher)
            summary = VoucherPersonType(
                masked_name=service.mask_name(person.name),
                id_number_masked=idnumbers.mask(id_number),
                insurance_type=person.insurance_type,
                insurance_type_label=INSURANCE_TYPES.get(person.insurance_type, person.insurance_type),
            )
        return VoucherVerificationType(
            valid=result.valid,
            reason=result.reason.value if result.reason else None,
            detail=result.detail,
            form=result.form.value if result.form else None,
            expires_at=_time(result.expires_at),
            certificate_serial=result.cert_serial.hex() if result.cert_serial else None,
            person=summary,
            relationship=Relationship(link.relationship) if link else None,
            relationship_label=RELATIONSHIP_LABELS.get(link.relationship) if link else None,
        )
