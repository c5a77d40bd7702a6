"""The change log that pull reads, and the record of every mutation a terminal pushed."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from api.dbtypes import id_field, ref_field, utc_field, utcnow


class ChangeOp(StrEnum):
    UPSERT = "upsert"
    DELETE = "delete"  # a tombstone: the entity left the scope or no longer exists


class ChangeLogEntry(SQLModel, table=True):
    """One write to a synced row, appended in the writer's transaction.

    `id` is the order of insertion, which concurrent transactions may commit out of; `seq` is given
    only to committed entries, by the sequencer (api.replication.changelog.sequence), in one order that
    never goes back. Pull reads by `seq` alone, so a change that commits late gets a later `seq` and
    is never skipped by a reader that has already moved past the entries around it."""

    __tablename__ = "change_log"
    __table_args__ = (
        Index("ix_change_log_scope_seq", "scope", "seq"),
        Index("ix_change_log_seq", "seq", unique=True),
        # What the sequencer looks for: committed entries that have no seq yet.
        Index(
            "ix_change_log_unsequenced",
            "id",
            sqlite_where=text("seq IS NULL"),
            postgresql_where=text("seq IS NULL"),
        ),
    )

    id: int | None = id_field()
    seq: int | None = Field(default=None, sa_type=BigInteger)
    entity: str = Field(max_length=32)
    entity_id: str = Field(max_length=64)
    scope: str = Field(max_length=64)
    """Who may see it: `village:<12-digit code>`, `policy`, `revocations`, `person:<id>`."""
    op: str = Field(max_length=8)
    created_at: datetime = utc_field(default_factory=utcnow)


class ReplicationState(SQLModel, table=True):
    """One row: this database's log epoch, the sequencer's high-water mark and the retention cut."""

    __tablename__ = "replication_state"

    id: int = Field(default=1, primary_key=True)
    epoch: str = Field(max_length=32)
    """Random per database: a checkpoint minted by another database (a restored backup, a reset
    county pilot) names another epoch and gets a resync, never a silent gap."""
    last_seq: int = Field(default=0, sa_type=BigInteger)
    """Every seq up to here is given out, to committed entries only: the committed watermark."""
    compacted_below: int = Field(default=0, sa_type=BigInteger)
    """Entries with seq <= this may have been pruned: an older checkpoint must resync."""


class PushStatus(StrEnum):
    APPLIED = "applied"
    ADJUSTED = "adjusted"
    REJECTED = "rejected"


class PushedMutation(SQLModel, table=True):
    """A terminal's outbox mutation as the server received and answered it, once: a repeat of the
    same (terminal, mutation id) gets this stored answer back, never a second application."""

    __tablename__ = "pushed_mutations"
    __table_args__ = (
        UniqueConstraint("terminal_id", "seq", name="uq_pushed_mutations_terminal_seq"),
        UniqueConstraint("terminal_id", "mutation_id", name="uq_pushed_mutations_terminal_mutation"),
        Index("ix_pushed_mutations_open", "status", "resolved_at"),
    )

    id: int | None = id_field()
    terminal_id: int = ref_field("terminals.id", index=True)
    seq: int = Field(sa_type=BigInteger)
    mutation_id: str = Field(max_length=36)
    """The terminal's UUIDv7 for the mutation."""
    kind: str = Field(max_length=32)
    client_time: datetime | None = utc_field(default=None)
    received_at: datetime = utc_field(default_factory=utcnow)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    status: str = Field(max_length=16)
    reason: str | None = Field(default=None, max_length=48)
    result: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    """The answer as sent (`applied`/`adjusted` amounts, or the rejection), replayed on repeats."""
    settlement_id: int | None = ref_field("settlements.id", default=None, index=True)
    resolved_at: datetime | None = utc_field(default=None)
    resolved_by_account_id: int | None = ref_field("accounts.id", default=None)
    resolution_note: str | None = Field(default=None, max_length=500)
