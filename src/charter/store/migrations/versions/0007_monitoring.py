"""Feedback on answers.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

from charter.store._types import UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("request_id", sa.String(40), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("principal_id", sa.String(200), nullable=False),
        sa.Column("rating", sa.Integer, nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
    )
    op.create_index("ix_feedback_request", "feedback", ["request_id"])
    op.create_index("ix_feedback_created", "feedback", ["created_at"])
