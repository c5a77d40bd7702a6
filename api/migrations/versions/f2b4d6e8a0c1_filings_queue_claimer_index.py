"""filings: the reviewers' own claims by deadline (ix_filings_queue_claimer_due)

Revision ID: f2b4d6e8a0c1
Revises: c5f7a9b1d3e2
Create Date: 2026-12-01 22:40:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = 'f2b4d6e8a0c1'
down_revision: str | None = 'c5f7a9b1d3e2'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARTIAL = {'sqlite_where': sa.text('due_on IS NOT NULL'), 'postgresql_where': sa.text('due_on IS NOT NULL')}


def upgrade() -> None:
    # "Claimed by me" walked ix_filings_queue_due and filtered on the claimer (bench/README.md): the
    # composite (claimer, deadline, id) index answers the page as a range scan. It replaces the
    # single-column claimer index, since every claimed filing has a due date.
    op.create_index(
        'ix_filings_queue_claimer_due', 'filings', ['claimed_by_account_id', 'due_on', 'id'], unique=False, **PARTIAL
    )
    op.drop_index('ix_filings_claimed_by', table_name='filings')


def downgrade() -> None:
    op.create_index('ix_filings_claimed_by', 'filings', ['claimed_by_account_id'], unique=False)
    op.drop_index('ix_filings_queue_claimer_due', table_name='filings', **PARTIAL)
