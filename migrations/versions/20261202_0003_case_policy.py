"""phases.case_policy and phases.case_penalties: every case counts

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 17:30:00

Existing test phases get 'fail' (a submission must score every case); other phases 'worst'
(a failed case takes the phase's worst value), so no existing leaderboard silently averages
over a subset of cases any more.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('phases') as batch:
        batch.add_column(sa.Column(
            'case_policy',
            sa.Enum('fail', 'worst', name='case_policy', native_enum=False,
                    create_constraint=True, length=32),
            nullable=False, server_default='fail'))
        batch.add_column(sa.Column('case_penalties', sa.JSON(), nullable=False,
                                   server_default='{}'))
    op.execute("UPDATE phases SET case_policy = 'worst' WHERE kind <> 'test'")


def downgrade() -> None:
    with op.batch_alter_table('phases') as batch:
        batch.drop_column('case_penalties')
        batch.drop_column('case_policy')
