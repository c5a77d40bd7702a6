"""Family links (亲情账户) and the audit of every access to a relative's data."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from api.dbtypes import id_field, ref_field, utc_field, utcnow


class Relationship(StrEnum):
    SPOUSE = "spouse"
    PARENT = "parent"  # the relative is the holder's parent
    CHILD = "child"  # the relative is the holder's child
    GUARDIAN = "guardian"  # the holder is the guardian of a minor relative


class LinkMethod(StrEnum):
    CONFIRMATION = "confirmation"  # an adult relative confirms from their own login
    HOUSEHOLD = "household"  # a minor in the holder's household, on household data
    PROXY = "proxy"  # a reviewer approves, for a relative who cannot use a phone


class LinkStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    DECLINED = "declined"  # the relative said no
    REJECTED = "rejected"  # the reviewer said no
    EXPIRED = "expired"
    REMOVED = "removed"  # unlinked by either side, or withdrawn while pending
    SUPERSEDED = "superseded"  # the holder changed a pending request: a new request replaced this one


class Permission(StrEnum):
    SHOW_VOUCHER = "show_voucher"
    READ_RECORDS = "read_records"
    FILE_ON_BEHALF = "file_on_behalf"


OPEN_STATUSES = (LinkStatus.PENDING.value, LinkStatus.ACTIVE.value)


class FamilyLink(SQLModel, table=True):
    """A holder acting for a relative. Checked in the database on every request, never cached."""

    __tablename__ = "family_links"

    id: int | None = id_field()
    ref: str = Field(max_length=16, unique=True)
    """Opaque 8-byte link reference (hex) that vouchers and certificates name. Replaced by a fresh one
    (the old one going on the revocation list) whenever show-voucher is withdrawn, so codes issued
    before a withdrawal never verify again, online or on a terminal, even if it is granted again."""
    holder_person_id: int = ref_field("insured_people.id", index=True)
    relative_person_id: int = ref_field("insured_people.id", index=True)
    relationship: str = Field(max_length=16)
    method: str = Field(max_length=16)
    status: str = Field(max_length=16)
    pair_key: str | None = Field(default=None, max_length=41, unique=True)
    """"low:high" person ids while pending or active, else NULL: one open link per pair, either way round
    (no duplicates, no cycles), enforced by the database even across workers."""
    requested_by_account_id: int = ref_field("accounts.id")
    want_show_voucher: bool = False
    want_read_records: bool = False
    want_file_on_behalf: bool = False
    can_show_voucher: bool = False
    can_read_records: bool = False
    can_file_on_behalf: bool = False
    evidence: str | None = Field(default=None, max_length=500)
    """For a proxy request: what proves the relationship and the need (e.g. 户口簿, 委托书)."""
    decided_by_account_id: int | None = ref_field("accounts.id", default=None)
    decision_note: str | None = Field(default=None, max_length=500)
    created_at: datetime = utc_field(default_factory=utcnow)
    expires_at: datetime | None = utc_field(default=None)
    decided_at: datetime | None = utc_field(default=None)
    removed_at: datetime | None = utc_field(default=None)
    removed_by_account_id: int | None = ref_field("accounts.id", default=None)

    def granted(self) -> set[Permission]:
        return {p for p in Permission if getattr(self, f"can_{p.value}")}

    def wanted(self) -> set[Permission]:
        return {p for p in Permission if getattr(self, f"want_{p.value}")}

    def set_granted(self, permissions: set[Permission]) -> None:
        for p in Permission:
            setattr(self, f"can_{p.value}", p in permissions)

    def set_wanted(self, permissions: set[Permission]) -> None:
        for p in Permission:
            setattr(self, f"want_{p.value}", p in permissions)


class AccessAudit(SQLModel, table=True):
    """Who read or did what with whose data, when, through which link. Append-only."""

    __tablename__ = "access_audit"
    __table_args__ = (Index("ix_access_audit_person_occurred", "person_id", "occurred_at", "id"),)

    id: int | None = id_field()
    person_id: int = ref_field("insured_people.id")
    """Whose data (the relative)."""
    occurred_at: datetime = utc_field(default_factory=utcnow)
    actor_account_id: int = ref_field("accounts.id")
    actor_person_id: int | None = ref_field("insured_people.id", default=None)
    link_id: int | None = ref_field("family_links.id", default=None, index=True)
    action: str = Field(max_length=48)
    detail: str | None = Field(default=None, max_length=200)
