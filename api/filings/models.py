"""Online filings (网上办): the filing, its recorded transitions, attachments, invoice numbers, and the
cross-region registrations (异地就医备案) that approval creates. Money is integer fen; times are UTC."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary, String, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from api.dbtypes import id_field, money_field, ref_field, utc_field, utcnow


class FilingStatus(StrEnum):
    DRAFT = "draft"
    SUBMITTED = "submitted"  # waiting for the first stage's reviewer
    IN_REVIEW = "in_review"  # a stage claimed, or a later stage waiting for its reviewer
    NEEDS_MATERIALS = "needs_materials"  # 一次告知: the filer must supply what is listed
    RESUBMITTED = "resubmitted"  # the filer supplied it: back to the stage that asked
    APPROVED = "approved"
    REJECTED = "rejected"
    WITHDRAWN = "withdrawn"


QUEUED = (FilingStatus.SUBMITTED.value, FilingStatus.IN_REVIEW.value, FilingStatus.RESUBMITTED.value)
"""The statuses in which a filing waits for (or is with) a reviewer: only these carry a due date."""
FINAL = (FilingStatus.APPROVED.value, FilingStatus.REJECTED.value, FilingStatus.WITHDRAWN.value)


class Filing(SQLModel, table=True):
    __tablename__ = "filings"
    __table_args__ = (
        UniqueConstraint("client_id", name="uq_filings_client_id"),
        # The reviewers' queue: only filings waiting for a reviewer have a due date, sorted by it.
        Index(
            "ix_filings_queue_due",
            "due_on",
            "id",
            sqlite_where=text("due_on IS NOT NULL"),
            postgresql_where=text("due_on IS NOT NULL"),
        ),
        Index(
            "ix_filings_queue_kind_due",
            "kind",
            "due_on",
            "id",
            sqlite_where=text("due_on IS NOT NULL"),
            postgresql_where=text("due_on IS NOT NULL"),
        ),
        Index(
            "ix_filings_queue_region_due",
            "region_code",
            "due_on",
            "id",
            sqlite_where=text("due_on IS NOT NULL"),
            postgresql_where=text("due_on IS NOT NULL"),
        ),
        Index(
            "ix_filings_queue_region_kind_due",
            "region_code",
            "kind",
            "due_on",
            "id",
            sqlite_where=text("due_on IS NOT NULL"),
            postgresql_where=text("due_on IS NOT NULL"),
        ),
        Index("ix_filings_person_id_id", "person_id", "id"),
        Index("ix_filings_filed_by_person_id_id", "filed_by_person_id", "id"),
        # "Claimed by me": a reviewer's own claims by deadline. A claim exists only while the filing
        # waits in the queue (every transition out clears both), so the partial index holds them all.
        Index(
            "ix_filings_queue_claimer_due",
            "claimed_by_account_id",
            "due_on",
            "id",
            sqlite_where=text("due_on IS NOT NULL"),
            postgresql_where=text("due_on IS NOT NULL"),
        ),
    )

    id: int | None = id_field()
    client_id: str = Field(sa_column=Column(String(36), nullable=False))
    """The client-made UUID: a repeated create (after a timeout on a weak network) finds this row."""
    request_digest: str = Field(max_length=64)
    """SHA-256 of the create request as sent: a repeat with another body is a conflict."""
    kind: str = Field(max_length=32)
    person_id: int = ref_field("insured_people.id")
    """Whose filing it is (the relative, when a family member filed it on their behalf)."""
    region_code: str = Field(max_length=6)
    """The insured person's region: the office whose reviewers handle it."""
    filed_by_account_id: int = ref_field("accounts.id")
    filed_by_person_id: int | None = ref_field("insured_people.id", default=None)
    link_id: int | None = ref_field("family_links.id", default=None)
    """The family link it was filed through (file-on-behalf), if any."""
    status: str = Field(max_length=24, default=FilingStatus.DRAFT.value)
    stage: str | None = Field(default=None, max_length=24)
    """The current review stage (first_review, second_review, payment) while submitted or in review."""
    due_on: date | None = None
    """The current stage's statutory deadline (Asia/Shanghai date, inclusive) while a reviewer owes the
    next step; None otherwise (draft, needs materials, decided). Working days, see api.filings.calendar."""
    due_estimated: bool = False
    """True when the deadline runs past the official calendar's data (see calendar.add_working_days)."""
    claimed_by_account_id: int | None = ref_field("accounts.id", default=None)
    claimed_at: datetime | None = utc_field(default=None)
    fields: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """The kind's validated fields (camelCase, as the client sent them), secrets removed."""
    bank_account_cipher: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    """AES-GCM of the payout account number (零星报销, 生育津贴); only its mask is in `fields`."""
    amount_fen: int | None = money_field(default=None)
    """What would be paid: the reimbursement the engine computes, or the maternity allowance."""
    computation: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    """How `amount_fen` was computed (policy version, per-visit split, the figures used)."""
    requested: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    """While needs_materials: everything missing, at once (一次告知): ``[{"code", "note"}]``."""
    materials_round: int = 0
    """How many times materials were asked for; attachments carry the round they were uploaded in."""
    decision_reason: str | None = Field(default=None, max_length=500)
    created_at: datetime = utc_field(default_factory=utcnow)
    submitted_at: datetime | None = utc_field(default=None)
    decided_at: datetime | None = utc_field(default=None)
    updated_at: datetime = utc_field(default_factory=utcnow)
    version: int = 1
    """Bumped on every change: conditional updates on it keep concurrent writers from losing changes."""


class FilingEvent(SQLModel, table=True):
    """One transition of a filing: who, when, why. Append-only; the filer sees all of them."""

    __tablename__ = "filing_events"
    __table_args__ = (Index("ix_filing_events_filing_id_id", "filing_id", "id"),)

    id: int | None = id_field()
    filing_id: int = ref_field("filings.id")
    occurred_at: datetime = utc_field(default_factory=utcnow)
    actor_account_id: int = ref_field("accounts.id")
    actor_role: str = Field(max_length=16)
    """`filer` (the person themselves), `holder` (a family member on their behalf), `reviewer`, `admin`."""
    action: str = Field(max_length=24)
    """create, submit, resubmit, claim, release, advance (a stage approved), needs_materials,
    approve, reject, withdraw."""
    from_status: str | None = Field(default=None, max_length=24)
    to_status: str = Field(max_length=24)
    stage: str | None = Field(default=None, max_length=24)
    due_on: date | None = None
    reason: str | None = Field(default=None, max_length=500)
    missing: list[dict[str, Any]] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class FilingAttachment(SQLModel, table=True):
    __tablename__ = "filing_attachments"
    __table_args__ = (Index("ix_filing_attachments_filing_id_id", "filing_id", "id"),)

    id: int | None = id_field()
    filing_id: int = ref_field("filings.id")
    material: str = Field(max_length=32)
    """Which of the kind's materials it is (e.g. ``invoice``, ``diagnosis_proof``)."""
    filename: str = Field(max_length=120)
    """As the client named it: shown, never trusted for the type."""
    content_type: str = Field(max_length=64)
    """Sniffed from the content (image/jpeg, image/png, application/pdf, ...)."""
    size_bytes: int
    sha256: str = Field(max_length=64)
    storage_key: str = Field(max_length=200)
    materials_round: int = 0
    """The filing's materials_round at upload: what a resubmission added is the current round's."""
    uploaded_by_account_id: int = ref_field("accounts.id")
    created_at: datetime = utc_field(default_factory=utcnow)


class FilingInvoice(SQLModel, table=True):
    """An invoice number claimed by a reimbursement filing: unique across every filing, in the database.
    Released (deleted) when its filing ends without payment (withdrawn or rejected)."""

    __tablename__ = "filing_invoices"

    invoice_number: str = Field(primary_key=True, max_length=32)
    filing_id: int = ref_field("filings.id", index=True)
    created_at: datetime = utc_field(default_factory=utcnow)


class FilingBirth(SQLModel, table=True):
    """A birth claimed by a maternity-allowance filing (生育津贴): one claim per (person, delivery date)
    across every filing, in the database. Released (deleted) when its filing is withdrawn or rejected."""

    __tablename__ = "filing_births"

    person_id: int = ref_field("insured_people.id", primary_key=True)
    delivery_date: date = Field(primary_key=True)
    """The local (Asia/Shanghai) date of the delivery, as filed."""
    filing_id: int = ref_field("filings.id", index=True)
    created_at: datetime = utc_field(default_factory=utcnow)


class CrossRegionRegistration(SQLModel, table=True):
    """异地就医备案 in force: visits in `region_code` between the dates settle as registered care."""

    __tablename__ = "cross_region_registrations"
    __table_args__ = (Index("ix_cross_region_registrations_person", "person_id", "start_on"),)

    id: int | None = id_field()
    person_id: int = ref_field("insured_people.id")
    filing_id: int = ref_field("filings.id", unique=True)
    registration_type: str = Field(max_length=24)
    """long_term_residence | temporary_trip | referral."""
    region_code: str = Field(max_length=6)
    """Destination: a province (XX0000), a city (XXXX00) or a county code; it covers what it contains."""
    start_on: date
    end_on: date
    """Inclusive local (Asia/Shanghai) dates."""
    hospital: str | None = Field(default=None, max_length=100)
    created_at: datetime = utc_field(default_factory=utcnow)
    revoked_at: datetime | None = utc_field(default=None)
