"""stored leaderboards: leaderboard_snapshots and phases.leaderboard_version

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 17:30:00.000000

Every change that can move a phase's ranks bumps phases.leaderboard_version in its own
transaction; a snapshot stores the document computed for one version, so a read compares the
two numbers and never sees half a leaderboard.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('phases', sa.Column('leaderboard_version', sa.Integer(),
                                      server_default='0', nullable=False))
    op.create_table('leaderboard_snapshots',
    sa.Column('phase_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('etag', sa.String(length=80), nullable=False),
    sa.Column('document', sa.JSON(), nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['phase_id'], ['phases.id'], name=op.f('fk_leaderboard_snapshots_phase_id_phases'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('phase_id', name=op.f('pk_leaderboard_snapshots'))
    )


def downgrade() -> None:
    op.drop_table('leaderboard_snapshots')
    op.drop_column('phases', 'leaderboard_version')
