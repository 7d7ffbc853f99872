"""Tables of the evaluation harness: one row per run, one row per (case, repeat) result."""

from sqlalchemy import JSON, Boolean, Column, Float, ForeignKey, Index, Integer, String, Table, Text

from charter.store._types import UTCDateTime, metadata

eval_runs = Table(
    "eval_runs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("charter_fingerprint", String(100), nullable=False),
    Column("model", String(200), nullable=True),
    Column("prompt_version", String(100), nullable=True),
    Column("index_version", String(100), nullable=True),
    Column("sets", JSON, nullable=False),
    Column("repeat", Integer, nullable=False),
    Column("n_cases", Integer, nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("thresholds", JSON, nullable=False),
    Column("failures", JSON, nullable=False),
    Column("baseline_id", String(40), nullable=True),
    Column("comparison", JSON, nullable=True),
    Column("options", JSON, nullable=False),
    Column("duration_s", Float, nullable=False),
    Index("ix_eval_runs_fingerprint", "charter_fingerprint", "created_at"),
    Index("ix_eval_runs_created", "created_at"),
)

eval_results = Table(
    "eval_results",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(40), ForeignKey("eval_runs.id", ondelete="CASCADE"), nullable=False),
    Column("case_id", String(200), nullable=False),
    Column("repeat", Integer, nullable=False),
    Column("category", String(20), nullable=False),
    Column("request_id", String(64), nullable=True),
    Column("status", String(20), nullable=False),
    Column("failure", String(40), nullable=True),
    Column("case", JSON, nullable=False),
    Column("output", JSON, nullable=False),
    Column("metrics", JSON, nullable=False),
    Column("details", Text, nullable=True),
    Index("ix_eval_results_run", "run_id", "case_id"),
)
