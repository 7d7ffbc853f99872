"""One row per request plus one row per stage (span). Content columns are written only through the masker."""

from sqlalchemy import JSON, Column, Float, Index, Integer, String, Table, Text

from charter.store._types import UTCDateTime, metadata

traces = Table(
    "traces",
    metadata,
    Column("request_id", String(40), primary_key=True),
    Column("workflow", String(100), nullable=False),
    Column("principal_id", String(200), nullable=False),  # as the monitoring policy says (raw or hashed)
    Column("started_at", UTCDateTime, nullable=False),
    Column("status", String(30), nullable=False),  # answered | needs_human | refused | error
    Column("model", String(200), nullable=True),
    Column("prompt_version", String(100), nullable=True),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("latency_ms", Float, nullable=False, default=0.0),
    Column("input_tokens", Integer, nullable=False, default=0),
    Column("output_tokens", Integer, nullable=False, default=0),
    Column("escalation", String(100), nullable=True),
    Column("groundedness", Float, nullable=True),
    Column("body", JSON, nullable=False),  # the masked trace document
    Index("ix_traces_started", "started_at"),
    Index("ix_traces_principal", "principal_id"),
)

trace_spans = Table(
    "trace_spans",
    metadata,
    Column("request_id", String(40), primary_key=True),
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("stage", String(50), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("duration_ms", Float, nullable=False),
    Column("status", String(20), nullable=False),
    Column("attributes", JSON, nullable=False),
    Column("error", Text, nullable=True),
)
