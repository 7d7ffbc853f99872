"""Traces record their channel: how the request arrived (``server``, ``cli``, ``eval``, ``drill``, …).

The gate's production latency and cost read served requests only; traces written before this revision
have no channel (NULL) and are not counted as served.

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        batch.add_column(sa.Column("channel", sa.String(20), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        batch.drop_column("channel")
