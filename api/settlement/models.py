"""Policy versions (医保政策版本) as the server stores them: the engine's dict form plus its dates."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from api.dbtypes import ref_field, utc_field, utcnow


class PolicyVersionRow(SQLModel, table=True):
    """One version of a region's policy tables. Immutable once stored, except that an open-ended
    version gets its ``effective_to`` when a later version supersedes it (see service.create_version)."""

    __tablename__ = "policy_versions"

    id: str = Field(primary_key=True, max_length=64)
    """The version id the engine and every settlement name, e.g. ``cn-default-2025``."""
    region: str = Field(max_length=6, index=True)
    name: str = Field(max_length=200)
    effective_from: date
    """Inclusive, a local (Asia/Shanghai) calendar date."""
    effective_to: date | None = None
    """Exclusive; None while open-ended."""
    body: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    """``PolicyVersion.to_dict()``: fully resolved (no ``extends``), dates included."""
    digest: str = Field(max_length=64)
    """SHA-256 of the canonical JSON body: lets a worker reuse its parsed PolicySet safely."""
    created_at: datetime = utc_field(default_factory=utcnow)
    created_by: int | None = ref_field("accounts.id", default=None)
    """The admin account that created it; None when seeded from the policy file shipped with yibao."""
