"""Traces, their spans and the passages each request retrieved.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from charter.store._types import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "traces",
        sa.Column("request_id", sa.String(40), primary_key=True),
        sa.Column("workflow", sa.String(100), nullable=False),
        sa.Column("principal_id", sa.String(200), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("status", sa.String(30), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("provider", sa.String(100), nullable=True),
        sa.Column("prompt_version", sa.String(100), nullable=True),
        sa.Column("cost_usd", sa.Float, nullable=False),
        sa.Column("cost_source", sa.String(30), nullable=True),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("escalation", sa.String(100), nullable=True),
        sa.Column("groundedness", sa.Float, nullable=True),
        sa.Column("error_type", sa.String(100), nullable=True),
        sa.Column("error_stage", sa.String(50), nullable=True),
        sa.Column("body", sa.JSON, nullable=False),
    )
    op.create_index("ix_traces_started", "traces", ["started_at"])
    op.create_index("ix_traces_principal", "traces", ["principal_id"])
    op.create_table(
        "trace_spans",
        sa.Column("request_id", sa.String(40), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("stage", sa.String(50), nullable=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("duration_ms", sa.Float, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attributes", sa.JSON, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
    )
    op.create_table(
        "trace_sources",
        sa.Column("request_id", sa.String(40), primary_key=True),
        sa.Column("rank", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("started_at", UTCDateTime, nullable=False),
        sa.Column("source_id", sa.String(100), nullable=False),
        sa.Column("doc_id", sa.String(300), nullable=False),
        sa.Column("chunk_id", sa.String(300), nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("cited", sa.Boolean, nullable=False),
    )
    op.create_index("ix_trace_sources_doc", "trace_sources", ["source_id", "doc_id"])
