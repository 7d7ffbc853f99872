"""Pins of upstream MCP tools: the approved hash of each tool's name, description and input schema.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

from charter.store._types import UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mcp_pins",
        sa.Column("server", sa.String(100), nullable=False),
        sa.Column("tool", sa.String(200), nullable=False),
        sa.Column("pin_hash", sa.String(64), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("input_schema", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("live_hash", sa.String(64), nullable=True),
        sa.Column("pinned_by", sa.String(200), nullable=False),
        sa.Column("pinned_at", UTCDateTime, nullable=False),
        sa.Column("checked_at", UTCDateTime, nullable=True),
        sa.PrimaryKeyConstraint("server", "tool", name="pk_mcp_pins"),
    )


def downgrade() -> None:
    op.drop_table("mcp_pins")
