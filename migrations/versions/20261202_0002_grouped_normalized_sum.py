"""ranking method grouped_normalized_sum

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 17:00:00

The phases.ranking_method column is a VARCHAR with a CHECK constraint (non-native enum):
widening the allowed values means recreating that constraint.
"""
from collections.abc import Sequence

from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = ('absolute', 'mean_rank', 'median_rank', 'normalized_sum')
NEW = (*OLD, 'grouped_normalized_sum')


def _check(values: tuple[str, ...]) -> str:
    return "ranking_method IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    with op.batch_alter_table('phases') as batch:
        batch.drop_constraint(op.f('ck_phases_ranking_method'), type_='check')
        batch.create_check_constraint(op.f('ck_phases_ranking_method'), _check(NEW))


def downgrade() -> None:
    op.execute("UPDATE phases SET ranking_method = 'normalized_sum' "
               "WHERE ranking_method = 'grouped_normalized_sum'")
    with op.batch_alter_table('phases') as batch:
        batch.drop_constraint(op.f('ck_phases_ranking_method'), type_='check')
        batch.create_check_constraint(op.f('ck_phases_ranking_method'), _check(OLD))
