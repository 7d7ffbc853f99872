"""Trends by index version and repeating tool refusals: two aggregate columns on ``traces``.

``index_version`` was only inside the masked trace document; ``tool_refusals`` counts the model-proposed
tool calls that were refused. Both are aggregated in SQL by :mod:`charter.telemetry._trends`. Old rows
keep NULL (reported as ``-`` and 0).

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        batch.add_column(sa.Column("index_version", sa.String(100), nullable=True))
        batch.add_column(sa.Column("tool_refusals", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("traces") as batch:
        batch.drop_column("tool_refusals")
        batch.drop_column("index_version")
