"""The documents a period's answers cited, as an index range scan: ``ix_trace_sources_cited`` on
``trace_sources (cited, started_at, source_id, doc_id)``.

The operator report built for a reader (the console, ``charter report --as``) asks which documents the
period's answers cited, to hide those the reader may not read (:mod:`charter.access`). ``trace_sources``
had no index on ``started_at``, so the question went through the period's traces (one primary-key probe
into ``trace_sources`` per request: 0.27 s for a 7-day period at 1M traces). With this index it is a
covering range scan of the cited rows of the period, in both SQLite and PostgreSQL. ``trace_sources`` rows
are written with their trace in one transaction (same ``started_at``) and deleted with it by retention, so
the range of ``trace_sources`` is the range of the traces (:func:`charter.telemetry._report.cited_documents`).

Revision ID: 0021_report
Revises: 0020_agent_runs
"""

from alembic import op

revision = "0021_report"
down_revision = "0020_agent_runs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_trace_sources_cited", "trace_sources", ["cited", "started_at", "source_id", "doc_id"])


def downgrade() -> None:
    op.drop_index("ix_trace_sources_cited", table_name="trace_sources")
