"""Clinic terminals and how they prove who they are (DESIGN.md section 4, terminal identity)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger
from sqlmodel import Field, SQLModel

from api.dbtypes import id_field, ref_field, utc_field, utcnow


class TerminalStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


class Terminal(SQLModel, table=True):
    """One enrolled terminal of a clinic: its own Ed25519 key, and how far its outbox has been applied."""

    __tablename__ = "terminals"

    id: int | None = id_field()
    clinic_id: int = ref_field("facilities.id", index=True)
    public_key: str = Field(max_length=64)
    """Raw 32-byte Ed25519 public key, unpadded base64url; checked strictly at enrolment."""
    status: str = Field(default=TerminalStatus.ACTIVE.value, max_length=16)
    enrolled_at: datetime = utc_field(default_factory=utcnow)
    enrolment_code_id: int | None = ref_field("terminal_enrolment_codes.id", default=None)
    revoked_at: datetime | None = utc_field(default=None)
    revoked_by_account_id: int | None = ref_field("accounts.id", default=None)
    last_seq: int = Field(default=0, sa_type=BigInteger)
    """The terminal's outbox seq applied last: the next push must start at last_seq + 1."""
    last_push_at: datetime | None = utc_field(default=None)
    last_pull_at: datetime | None = utc_field(default=None)
    last_client_time: datetime | None = utc_field(default=None)
    """The terminal's own clock in its latest push: kept to show skew, never trusted."""


class TerminalEnrolmentCode(SQLModel, table=True):
    """A one-time, short-lived code an admin hands to a clinic; only its hash is stored."""

    __tablename__ = "terminal_enrolment_codes"

    id: int | None = id_field()
    clinic_id: int = ref_field("facilities.id", index=True)
    code_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = utc_field(default_factory=utcnow)
    expires_at: datetime = utc_field()
    created_by_account_id: int | None = ref_field("accounts.id", default=None)
    used_at: datetime | None = utc_field(default=None)


class TerminalAssertionReplay(SQLModel, table=True):
    """`jti`s of client assertions already accepted, shared by every worker; purged after expiry."""

    __tablename__ = "terminal_assertion_replays"

    jti: str = Field(primary_key=True, max_length=64)
    terminal_id: int = ref_field("terminals.id")
    expires_at: datetime = utc_field(index=True)
