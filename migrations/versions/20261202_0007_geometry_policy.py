"""phases.geometry_policy and case_runs.warning: SynthRAD-compatible geometry handling

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 23:10:00

'reject' (every existing phase, and the default) fails a case whose sCT geometry differs from
the input's; 'impose' gives an sCT of the right size the input's spacing, origin and direction,
as SynthRAD's official evaluation does, and records a warning on the case run.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('phases') as batch:
        batch.add_column(sa.Column(
            'geometry_policy',
            sa.Enum('reject', 'impose', name='geometry_policy', native_enum=False,
                    create_constraint=True, length=32),
            nullable=False, server_default='reject'))
    with op.batch_alter_table('case_runs') as batch:
        batch.add_column(sa.Column('warning', sa.Text(), nullable=False, server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('case_runs') as batch:
        batch.drop_column('warning')
    with op.batch_alter_table('phases') as batch:
        batch.drop_column('geometry_policy')
