"""submissions.idempotency_key: a retried submission request finds the submission it made

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 05:40:00

A client that lost the answer to its submission request (a dropped connection) repeats it with
the same Idempotency-Key header and gets the submission the first request made, instead of a
second submission or a "you already have one" refusal. Unique per user; NULL (no header) for
every existing submission.
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('submissions') as batch:
        batch.add_column(sa.Column('idempotency_key', sa.String(length=128), nullable=True))
        batch.create_index('uq_submissions_user_id_idempotency_key',
                           ['user_id', 'idempotency_key'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('submissions') as batch:
        batch.drop_index('uq_submissions_user_id_idempotency_key')
        batch.drop_column('idempotency_key')
