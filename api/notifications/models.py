"""A notification kept for one insured person: what happened (kind, zh-CN title and body, data), when,
who caused it, and when the person read it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, text
from sqlmodel import Field, SQLModel

from api.dbtypes import id_field, ref_field, utc_field, utcnow


class Notification(SQLModel, table=True):
    __tablename__ = "notifications"
    __table_args__ = (
        # A person's list, newest first (keyset on id), and their unread ones (list and count).
        Index("ix_notifications_person_id_id", "person_id", "id"),
        Index(
            "ix_notifications_unread",
            "person_id",
            "id",
            sqlite_where=text("read_at IS NULL"),
            postgresql_where=text("read_at IS NULL"),
        ),
    )

    id: int | None = id_field()
    person_id: int = ref_field("insured_people.id")
    """Whose notification it is: only this person lists it, marks it read or hears it live."""
    kind: str = Field(max_length=48)
    """What it is about, dotted: e.g. ``filing.status``."""
    title: str = Field(max_length=64)
    """zh-CN, shown to the resident."""
    body: str = Field(max_length=500)
    """zh-CN, shown to the resident."""
    data: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    """Machine-readable details for the app, e.g. ``{"filingId": "12", "from": "submitted", "to": "approved"}``."""
    created_at: datetime = utc_field(default_factory=utcnow)
    read_at: datetime | None = utc_field(default=None)
    actor_account_id: int | None = ref_field("accounts.id", default=None)
    """The account whose action caused it (a reviewer deciding, a relative filing); None for the system."""
    link_id: int | None = ref_field("family_links.id", default=None)
    """When it concerns a relative through a family link (e.g. a filing made on their behalf)."""
