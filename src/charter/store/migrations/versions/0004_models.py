"""Model gateway: budget ledger and prompt approvals.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from charter.store._types import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_months",
        sa.Column("workflow_id", sa.String(100), primary_key=True),
        sa.Column("month", sa.String(7), primary_key=True),
        sa.Column("spent_nano", sa.BigInteger, nullable=False),
        sa.Column("reserved_nano", sa.BigInteger, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
    )
    op.create_table(
        "budget_reservations",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("workflow_id", sa.String(100), nullable=False),
        sa.Column("month", sa.String(7), nullable=False),
        sa.Column("request_id", sa.String(100), nullable=False),
        sa.Column("principal_id", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("estimated_nano", sa.BigInteger, nullable=False),
        sa.Column("actual_nano", sa.BigInteger, nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("settled_at", UTCDateTime, nullable=True),
    )
    op.create_index("ix_budget_reservations_request", "budget_reservations", ["request_id"])
    op.create_index("ix_budget_reservations_status", "budget_reservations", ["status", "created_at"])
    op.create_table(
        "prompt_approvals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workflow_id", sa.String(100), nullable=False),
        sa.Column("prompt", sa.String(100), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("file_hash", sa.String(64), nullable=False),
        sa.Column("approved_by", sa.String(200), nullable=False),
        sa.Column("approved_at", UTCDateTime, nullable=False),
        sa.Column("note", sa.Text, nullable=True),
    )
    op.create_index("ix_prompt_approvals_version", "prompt_approvals", ["workflow_id", "prompt", "version"])
    op.create_table(
        "prompt_activations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workflow_id", sa.String(100), nullable=False),
        sa.Column("prompt", sa.String(100), nullable=False),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("file_hash", sa.String(64), nullable=False),
        sa.Column("charter_active", sa.String(100), nullable=False),
        sa.Column("activated_by", sa.String(200), nullable=False),
        sa.Column("activated_at", UTCDateTime, nullable=False),
    )
    op.create_index("ix_prompt_activations_prompt", "prompt_activations", ["workflow_id", "prompt"])


def downgrade() -> None:
    op.drop_table("prompt_activations")
    op.drop_table("prompt_approvals")
    op.drop_table("budget_reservations")
    op.drop_table("budget_months")
