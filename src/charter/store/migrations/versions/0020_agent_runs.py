"""Durable runs of ``agent`` workflows (``charter.agents``): a run that waits for an approval survives a restart.

Revision ID: 0020_agent_runs
Revises: 0019
"""

import sqlalchemy as sa
from alembic import op

from charter.store._types import UTCDateTime

revision = "0020_agent_runs"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_runs",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("workflow", sa.String(100), nullable=False),
        sa.Column("principal_id", sa.String(200), nullable=False),
        sa.Column("subject_id", sa.String(200), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("task", sa.JSON, nullable=False),
        sa.Column("state", sa.JSON, nullable=False),
        sa.Column("steps", sa.Integer, nullable=False),
        sa.Column("waiting_on", sa.String(40), nullable=True),
        sa.Column("stop_reason", sa.Text, nullable=True),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("segments", sa.Integer, nullable=False),
        sa.Column("active_ms", sa.Float, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("lease_until", UTCDateTime, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agent_runs"),
    )
    op.create_index("ix_agent_runs_status", "agent_runs", ["status", "updated_at"])
    op.create_index("ix_agent_runs_principal", "agent_runs", ["principal_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_agent_runs_principal", table_name="agent_runs")
    op.drop_index("ix_agent_runs_status", table_name="agent_runs")
    op.drop_table("agent_runs")
