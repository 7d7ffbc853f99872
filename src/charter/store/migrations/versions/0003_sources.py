"""Sources: sync runs, per-source sync state (freshness), and the per-document catalog.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

from charter.store._types import UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sync_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source_id", sa.String(200), nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.Column("pid", sa.Integer, nullable=True),
        sa.Column("host", sa.String(200), nullable=True),
        sa.Column("config_hash", sa.String(64), nullable=True),
        sa.Column("summary", sa.JSON, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_index("ix_sync_runs_source", "sync_runs", ["source_id", "id"])
    op.create_table(
        "source_state",
        sa.Column("source_id", sa.String(200), primary_key=True),
        sa.Column("last_success_at", UTCDateTime, nullable=True),
        sa.Column("last_success_run", sa.Integer, nullable=True),
        sa.Column("last_run_at", UTCDateTime, nullable=True),
        sa.Column("last_status", sa.String(20), nullable=True),
        sa.Column("config_hash", sa.String(64), nullable=True),
        sa.Column("chunking_hash", sa.String(64), nullable=True),
    )
    op.create_table(
        "source_documents",
        sa.Column("source_id", sa.String(200), primary_key=True),
        sa.Column("doc_id", sa.String(1000), primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=True),
        sa.Column("format", sa.String(20), nullable=False),
        sa.Column("acl_tokens", sa.JSON, nullable=False),
        sa.Column("private_by_default", sa.Boolean, nullable=False),
        sa.Column("acl_error", sa.Text, nullable=True),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=True),
        sa.Column("failed_reason", sa.Text, nullable=True),
        sa.Column("recorded_at", UTCDateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("source_documents")
    op.drop_table("source_state")
    op.drop_index("ix_sync_runs_source", table_name="sync_runs")
    op.drop_table("sync_runs")
