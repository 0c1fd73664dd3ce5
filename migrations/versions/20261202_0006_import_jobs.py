"""import_jobs: dataset imports run in the background with progress

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 18:00:00

A job outlives the request that queued it: its progress (cases and bytes done, per-case
errors, the stored paths of each finished case) is committed case by case, so a resumed job
skips what is in. Deleting a dataset deletes its jobs; deleting the user who queued one, or
the version it made, keeps the job as a record.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = 'import_jobs'
# The API lists a dataset's jobs; the reaper finds the unfinished ones.
INDEXED = ('dataset_id', 'status')
STATUS = sa.Enum('queued', 'running', 'succeeded', 'failed', name='import_status',
                 native_enum=False, create_constraint=True, length=32)


def _required(name: str, type_: sa.types.TypeEngine, **kw) -> sa.Column:
    return sa.Column(name, type_, nullable=False, **kw)


def _optional(name: str, type_: sa.types.TypeEngine) -> sa.Column:
    return sa.Column(name, type_, nullable=True)


def _references(column: str, table: str, ondelete: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint([column], [f'{table}.id'], ondelete=ondelete,
                                   name=op.f(f'fk_{TABLE}_{column}_{table}'))


def upgrade() -> None:
    when = sa.DateTime(timezone=True)
    op.create_table(
        TABLE,
        _required('id', sa.Integer()),
        _required('dataset_id', sa.Integer()),
        _optional('created_by_id', sa.Integer()),
        _required('status', STATUS),
        # The checked request: what to import and where its files go.
        _required('spec', sa.JSON()),
        _required('source', sa.String(length=500)),
        _required('note', sa.Text()),
        _required('target_dir', sa.String(length=500)),
        # Progress, committed with each stored case.
        _optional('cases_total', sa.Integer()),
        _required('cases_done', sa.Integer()),
        _required('bytes_done', sa.BigInteger()),
        _required('errors', sa.JSON()),
        _required('imported', sa.JSON()),
        _required('message', sa.Text()),
        # Which task run owns the job, and the version it made.
        _required('attempts', sa.Integer()),
        _optional('runner', sa.String(length=64)),
        _optional('dataset_version_id', sa.Integer()),
        _optional('started_at', when),
        _optional('finished_at', when),
        _required('created_at', when, server_default=sa.text('now()')),
        _required('updated_at', when, server_default=sa.text('now()')),
        _references('created_by_id', 'users', 'SET NULL'),
        _references('dataset_id', 'datasets', 'CASCADE'),
        _references('dataset_version_id', 'dataset_versions', 'SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f(f'pk_{TABLE}')),
    )
    for column in INDEXED:
        op.create_index(op.f(f'ix_{TABLE}_{column}'), TABLE, [column], unique=False)


def downgrade() -> None:
    for column in reversed(INDEXED):
        op.drop_index(op.f(f'ix_{TABLE}_{column}'), table_name=TABLE)
    op.drop_table(TABLE)
