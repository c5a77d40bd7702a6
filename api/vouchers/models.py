"""Voucher references, device certificates, the revocation log and the replay store."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index
from sqlmodel import Field, SQLModel

from api.dbtypes import BigID, id_field, ref_field, utc_field, utcnow


class VoucherSubject(SQLModel, table=True):
    """The opaque 8-byte person reference that codes name (InsuredPerson.ref is 16 bytes, too long
    for the QR budget of the offline form). Minted on first use; never derived from an ID number."""

    __tablename__ = "voucher_subjects"

    person_id: int = ref_field("insured_people.id", primary_key=True)
    ref: str = Field(max_length=16, unique=True)


class DeviceCertificateRecord(SQLModel, table=True):
    __tablename__ = "device_certificates"

    id: int | None = id_field()
    serial: str = Field(max_length=16, unique=True)
    person_id: int = ref_field("insured_people.id", index=True)
    link_id: int | None = ref_field("family_links.id", default=None, index=True)
    account_id: int = ref_field("accounts.id", index=True)
    device_key: str = Field(max_length=43, index=True)
    """Raw Ed25519 public key as unpadded base64url: the device's identity."""
    kid: str = Field(max_length=8)
    not_before: datetime = utc_field()
    not_after: datetime = utc_field()
    created_at: datetime = utc_field(default_factory=utcnow)
    revoked_at: datetime | None = utc_field(default=None)
    revoked_reason: str | None = Field(default=None, max_length=32)


class VoucherRevocation(SQLModel, table=True):
    """One revoked certificate serial, link ref or person ref. `version` grows by one per entry, with no
    gaps and in commit order, so a terminal's list version says exactly which entries it has."""

    __tablename__ = "voucher_revocations"
    __table_args__ = (Index("ix_voucher_revocations_kind_ref", "kind", "ref"),)

    version: int = Field(primary_key=True, sa_type=BigID, sa_column_kwargs={"autoincrement": False})
    kind: str = Field(max_length=16)  # "certificate", "link" or "person"
    ref: str = Field(max_length=16)
    reason: str = Field(max_length=32)
    created_at: datetime = utc_field(default_factory=utcnow)


class VoucherReplay(SQLModel, table=True):
    """Replay keys of codes already accepted online, shared by every worker (insert-if-absent)."""

    __tablename__ = "voucher_replays"

    key: str = Field(primary_key=True, max_length=32)
    expires_at: int = Field(sa_type=BigInteger, index=True)
    """Unix seconds; the row may be purged after this."""
