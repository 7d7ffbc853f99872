"""Tool actions (proposals, approvals, executions) and the review queue for drafts.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

from charter.store._types import UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tool_actions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("tool", sa.String(100), nullable=False),
        sa.Column("requester", sa.String(200), nullable=False),
        sa.Column("origin", sa.String(20), nullable=False),
        sa.Column("args", sa.JSON, nullable=False),
        sa.Column("args_hash", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("needs_approval", sa.Boolean, nullable=False),
        sa.Column("required_role", sa.String(100), nullable=True),
        sa.Column("assigned_role", sa.String(100), nullable=True),
        sa.Column("escalation_level", sa.Integer, nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=True),
        sa.Column("sla_due_at", UTCDateTime, nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("decided_at", UTCDateTime, nullable=True),
        sa.Column("decision_reason", sa.Text, nullable=True),
        sa.Column("started_at", UTCDateTime, nullable=True),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_tool_actions_status", "tool_actions", ["status"])
    op.create_index("ix_tool_actions_requester", "tool_actions", ["requester", "tool", "created_at"])
    op.create_index("ix_tool_actions_request", "tool_actions", ["request_id"])
    op.create_table(
        "review_items",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("submitter", sa.String(200), nullable=False),
        sa.Column("question", sa.Text, nullable=False),
        sa.Column("draft", sa.Text, nullable=False),
        sa.Column("citations", sa.JSON, nullable=False),
        sa.Column("agent_notes", sa.JSON, nullable=False),
        sa.Column("groundedness", sa.Float, nullable=True),
        sa.Column("escalation_reason", sa.String(50), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("assigned_role", sa.String(100), nullable=True),
        sa.Column("escalation_level", sa.Integer, nullable=False),
        sa.Column("sla_due_at", UTCDateTime, nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.Column("decision", sa.String(20), nullable=True),
        sa.Column("decided_by", sa.String(200), nullable=True),
        sa.Column("decided_at", UTCDateTime, nullable=True),
        sa.Column("final_text", sa.Text, nullable=True),
        sa.Column("diff", sa.Text, nullable=True),
        sa.Column("reject_reason", sa.String(50), nullable=True),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_review_items_status", "review_items", ["status"])
    op.create_index("ix_review_items_request", "review_items", ["request_id"])
