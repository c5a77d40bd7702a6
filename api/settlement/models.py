"""Policy versions (医保政策版本) as the server stores them: the engine's dict form plus its dates."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, Column
from sqlmodel import Field, SQLModel

from api.dbtypes import id_field, money_field, ref_field, utc_field, utcnow


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


class SettlementAdjustment(SQLModel, table=True):
    """Where the server's recomputation of a terminal's offline settlement differs from what the
    terminal computed (it could not know visits elsewhere that counted toward the same caps). Shown to
    the clinic and to the resident beside the settlement."""

    __tablename__ = "settlement_adjustments"

    id: int | None = id_field()
    settlement_id: int = ref_field("settlements.id", unique=True)
    terminal_id: int | None = ref_field("terminals.id", default=None, index=True)
    terminal_split: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    """The amounts the terminal computed and printed as 预结算 (fen, by layer) and its policy version."""
    basic_delta_fen: int = money_field(default=0)
    critical_illness_delta_fen: int = money_field(default=0)
    assistance_delta_fen: int = money_field(default=0)
    personal_account_delta_fen: int = money_field(default=0)
    cash_delta_fen: int = money_field(default=0)
    """Server minus terminal, per layer; the cash delta is what the patient owes (+) or is owed (-)."""
    reason: str = Field(max_length=48)
    created_at: datetime = utc_field(default_factory=utcnow)
