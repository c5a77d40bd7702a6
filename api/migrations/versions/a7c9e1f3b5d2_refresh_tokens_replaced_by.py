"""refresh_tokens.replaced_by: the grace window for a refresh retried after a lost answer

Revision ID: a7c9e1f3b5d2
Revises: f2b4d6e8a0c1
Create Date: 2026-12-02 02:30:00.000000
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = 'a7c9e1f3b5d2'
down_revision: str | None = 'f2b4d6e8a0c1'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Tokens spent before this revision keep NULL: presented again, they end the login as before.
    op.add_column('refresh_tokens', sa.Column('replaced_by', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('refresh_tokens', schema=None) as batch_op:
        batch_op.drop_column('replaced_by')
