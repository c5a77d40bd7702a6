"""Insured people and their records. Money is integer fen; times are UTC."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary, String, UniqueConstraint
from sqlmodel import Field, SQLModel

from api.dbtypes import BigID, id_field, money_field, ref_field, utc_field, utcnow


class InsuranceType(StrEnum):
    EMPLOYEE = "employee"  # 职工基本医疗保险
    RESIDENT = "resident"  # 城乡居民基本医疗保险


class FacilityLevel(StrEnum):
    VILLAGE = "village"  # 村卫生室
    PRIMARY = "primary"  # 一级 / 乡镇卫生院
    SECONDARY = "secondary"  # 二级
    TERTIARY = "tertiary"  # 三级


class FacilityKind(StrEnum):
    CLINIC = "clinic"
    HOSPITAL = "hospital"
    PHARMACY = "pharmacy"


class Household(SQLModel, table=True):
    __tablename__ = "households"

    id: int | None = id_field()
    region_code: str = Field(max_length=6)
    address: str = Field(max_length=200)


class InsuredPerson(SQLModel, table=True):
    __tablename__ = "insured_people"

    id: int | None = id_field()
    ref: str = Field(max_length=32, unique=True)
    """Opaque reference used outside the database (vouchers, sync); never the ID number."""
    name: str = Field(max_length=50)
    id_number_cipher: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    """AES-GCM(nonce || ciphertext) of the 18-digit ID number; see api.people.idnumbers."""
    id_number_hash: str = Field(max_length=64, unique=True)
    """Keyed hash (HMAC-SHA256) for look-up by ID number without decrypting."""
    gender: str = Field(max_length=1)
    birth_date: date
    insurance_type: str = Field(max_length=16)
    region_code: str = Field(max_length=6, index=True)
    household_id: int | None = ref_field("households.id", default=None, index=True)
    village_code: str | None = Field(default=None, max_length=12, index=True)
    """12-digit village code (统计用区划代码, 村级) of the person's home: their village clinic's roster."""
    assistance_category: str | None = Field(default=None, max_length=32)
    chronic_diseases: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    """Recognised outpatient chronic/special diseases (门诊慢特病), by the policy's codes."""
    two_diseases: list[str] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]")
    )
    """两病 (hypertension, diabetes) under standardised outpatient management."""
    created_at: datetime = utc_field(default_factory=utcnow)


class Enrolment(SQLModel, table=True):
    """A period of insurance (参保); open-ended while current."""

    __tablename__ = "enrolments"

    id: int | None = id_field()
    person_id: int = ref_field("insured_people.id", index=True)
    insurance_type: str = Field(max_length=16)
    region_code: str = Field(max_length=6)
    employer: str | None = Field(default=None, max_length=100)
    start_on: date
    end_on: date | None = None


class Contribution(SQLModel, table=True):
    """A contribution (缴费) for one period."""

    __tablename__ = "contributions"
    __table_args__ = (Index("ix_contributions_person_paid", "person_id", "paid_at", "id"),)

    id: int | None = id_field()
    person_id: int = ref_field("insured_people.id")
    year: int
    period: str = Field(max_length=7)  # "2025" for a resident's year, "2025-03" for an employee's month
    insurance_type: str = Field(max_length=16)
    paid_at: datetime = utc_field()
    amount_fen: int = money_field()
    """What the insured person paid."""
    subsidy_fen: int = money_field(default=0)
    """Paid by the employer (职工) or by government subsidy (居民)."""


class Facility(SQLModel, table=True):
    """A designated medical institution or pharmacy (定点医药机构)."""

    __tablename__ = "facilities"

    id: int | None = id_field()
    code: str = Field(max_length=20, unique=True)
    name: str = Field(max_length=100)
    level: str = Field(max_length=16)
    kind: str = Field(max_length=16)
    region_code: str = Field(max_length=6, index=True)
    village_code: str | None = Field(default=None, max_length=12, index=True)
    """For a village clinic (村卫生室): the village whose roster its terminals sync."""


class Settlement(SQLModel, table=True):
    """One settled visit (结算): how the bill split across the layers of 一站式结算."""

    __tablename__ = "settlements"
    __table_args__ = (
        Index("ix_settlements_person_settled", "person_id", "settled_at", "id"),
        UniqueConstraint("client_ref", name="uq_settlements_client_ref"),
    )

    id: int | None = id_field()
    person_id: int = ref_field("insured_people.id")
    facility_id: int = ref_field("facilities.id")
    settled_at: datetime = utc_field()
    year: int
    """Year in Asia/Shanghai, the insurance year that caps and totals count in."""
    category: str = Field(max_length=32)
    visit_scope: str = Field(default="local", max_length=24)
    total_fen: int = money_field()
    compliant_fen: int = money_field()
    deductible_fen: int = money_field(default=0)
    basic_fen: int = money_field()
    critical_illness_fen: int = money_field()
    assistance_fen: int = money_field()
    personal_account_fen: int = money_field()
    cash_fen: int = money_field()
    policy_version: str = Field(max_length=64)
    # What this settlement added to the year-to-date totals beyond the amounts above, so that
    # api.settlement.service.year_to_date is a plain sum (deductible_fen and basic_fen count in ytd_pool).
    ytd_pool: str = Field(default="", max_length=32)
    critical_oop_fen: int = money_field(default=0)
    assistance_threshold_fen: int = money_field(default=0)
    source: str = Field(default="hospital", max_length=16)
    client_ref: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    """Client-made id of a settlement pushed by a terminal; unique, for exactly-once."""
    visit: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    """The engine's input as it was settled (``sync.settlement.Visit.to_dict()``: the bill items with
    their class and amount, facility level, category, locality, the person's attributes that day), so
    that the server can recompute it and an auditor can replay it. Rows migrated from before it was
    kept carry a bill reconstructed from their amounts, marked ``"reconstructed": true``."""
    voucher_ref: str | None = Field(default=None, max_length=64)
    """The replay key of the e-voucher shown for the visit (none for a physical card or a hospital)."""
    terminal_id: int | None = Field(default=None, sa_type=BigID, index=True)
    """The clinic terminal (terminals.id) that recorded it offline, for settlements pushed through
    /sync/push. Not a foreign key: adding one would make SQLite copy this table, which the
    account_flows foreign key forbids; pushed_mutations.settlement_id links the two with one."""
    voided_at: datetime | None = utc_field(default=None)
    """A void (a terminal's `settlement.void`) keeps the row for audit; voided rows count nowhere."""


class PersonalAccount(SQLModel, table=True):
    """个人账户 of an employee (or a resident where the region keeps one)."""

    __tablename__ = "personal_accounts"

    person_id: int = ref_field("insured_people.id", primary_key=True)
    balance_fen: int = money_field(default=0)
    updated_at: datetime = utc_field(default_factory=utcnow)


class AccountFlowKind(StrEnum):
    ALLOCATION = "allocation"  # 划入
    SETTLEMENT = "settlement"  # 消费支出
    FAMILY_TRANSFER = "family_transfer"  # 家庭共济 (paying a relative's bill)
    INTEREST = "interest"


class AccountFlow(SQLModel, table=True):
    __tablename__ = "account_flows"
    __table_args__ = (Index("ix_account_flows_person_occurred", "person_id", "occurred_at", "id"),)

    id: int | None = id_field()
    person_id: int = ref_field("insured_people.id")
    occurred_at: datetime = utc_field()
    year: int
    kind: str = Field(max_length=24)
    amount_fen: int = money_field()
    """Signed: credits positive, debits negative."""
    balance_after_fen: int = money_field()
    settlement_id: int | None = ref_field("settlements.id", default=None)
    counterparty_person_id: int | None = ref_field("insured_people.id", default=None)
    """For 家庭共济: whose bill was paid from (or into) this account."""
