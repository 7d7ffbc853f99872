"""Evaluation runs and their per-case results.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from charter.store._types import UTCDateTime

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("workflow", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("finished_at", UTCDateTime, nullable=True),
        sa.Column("charter_fingerprint", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("prompt_version", sa.String(100), nullable=True),
        sa.Column("index_version", sa.String(100), nullable=True),
        sa.Column("sets", sa.JSON, nullable=False),
        sa.Column("repeat", sa.Integer, nullable=False),
        sa.Column("n_cases", sa.Integer, nullable=False),
        sa.Column("passed", sa.Boolean, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("thresholds", sa.JSON, nullable=False),
        sa.Column("failures", sa.JSON, nullable=False),
        sa.Column("baseline_id", sa.String(40), nullable=True),
        sa.Column("comparison", sa.JSON, nullable=True),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("duration_s", sa.Float, nullable=False),
    )
    op.create_index("ix_eval_runs_fingerprint", "eval_runs", ["charter_fingerprint", "created_at"])
    op.create_index("ix_eval_runs_created", "eval_runs", ["created_at"])
    op.create_table(
        "eval_results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(40), sa.ForeignKey("eval_runs.id", ondelete="CASCADE"), nullable=False),
        sa.Column("case_id", sa.String(200), nullable=False),
        sa.Column("repeat", sa.Integer, nullable=False),
        sa.Column("category", sa.String(20), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("failure", sa.String(40), nullable=True),
        sa.Column("case", sa.JSON, nullable=False),
        sa.Column("output", sa.JSON, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("details", sa.Text, nullable=True),
    )
    op.create_index("ix_eval_results_run", "eval_results", ["run_id", "case_id"])


def downgrade() -> None:
    op.drop_index("ix_eval_results_run", table_name="eval_results")
    op.drop_table("eval_results")
    op.drop_index("ix_eval_runs_created", table_name="eval_runs")
    op.drop_index("ix_eval_runs_fingerprint", table_name="eval_runs")
    op.drop_table("eval_runs")
