"""Logins, token families and rate-limit windows."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from api.dbtypes import id_field, ref_field, utc_field, utcnow


class Role(StrEnum):
    RESIDENT = "resident"
    REVIEWER = "reviewer"
    ADMIN = "admin"
    TERMINAL = "terminal"
    PHARMACY = "pharmacy"


class Account(SQLModel, table=True):
    """Who can log in: one identity at one provider, with one role."""

    __tablename__ = "accounts"
    __table_args__ = (UniqueConstraint("provider", "subject", name="uq_accounts_provider_subject"),)

    id: int | None = id_field()
    provider: str = Field(max_length=16)
    subject: str = Field(max_length=128)
    """The provider's stable id for the user (a WeChat openid; the demo login name)."""
    role: str = Field(max_length=16)
    display_name: str = Field(default="", max_length=50)
    person_id: int | None = ref_field("insured_people.id", default=None, index=True)
    facility_id: int | None = ref_field("facilities.id", default=None)
    disabled: bool = False
    created_at: datetime = utc_field(default_factory=utcnow)


class AuthSession(SQLModel, table=True):
    """One login: the family of refresh tokens descended from it. Revoking it ends them all."""

    __tablename__ = "auth_sessions"

    id: str = Field(primary_key=True, max_length=36)
    account_id: int = ref_field("accounts.id", index=True)
    created_at: datetime = utc_field(default_factory=utcnow)
    revoked_at: datetime | None = utc_field(default=None)
    revoked_reason: str | None = Field(default=None, max_length=32)


class RefreshToken(SQLModel, table=True):
    __tablename__ = "refresh_tokens"

    jti: str = Field(primary_key=True, max_length=36)
    session_id: str = Field(foreign_key="auth_sessions.id", index=True, max_length=36)
    issued_at: datetime = utc_field()
    expires_at: datetime = utc_field()
    used_at: datetime | None = utc_field(default=None)
    replaced_by: str | None = Field(default=None, max_length=36)
    """The jti of the token this one was traded for (the newest, after grace retries). Empty for a token
    never presented itself: unspent, or spent because a grace retry of its predecessor replaced it."""


class RateLimitWindow(SQLModel, table=True):
    """Fixed-window counters in the database, so limits hold across worker processes."""

    __tablename__ = "rate_limit_windows"

    key: str = Field(primary_key=True, max_length=128)
    window_start: int = Field(primary_key=True)
    count: int = 0
