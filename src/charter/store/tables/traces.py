"""One row per request, one per stage (span) and one per retrieved passage. Content is written only masked.

``traces`` keeps the columns the metrics and the operator report aggregate on (status, cost, tokens, first
error) next to the masked trace document (``body``); ``trace_sources`` lists the passages a request
retrieved and whether the answer cited them, so "which source caused bad answers" is one join.
"""

from sqlalchemy import JSON, Boolean, Column, Float, Index, Integer, String, Table, Text

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
    Column("provider", String(100), nullable=True),
    Column("prompt_version", String(100), nullable=True),
    Column("index_version", String(100), nullable=True),  # for trends by index version (0015_monitor)
    Column("tool_refusals", Integer, nullable=True),  # model-proposed tool calls that were refused
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("cost_source", String(30), nullable=True),  # reported | estimated
    Column("latency_ms", Float, nullable=False, default=0.0),
    Column("input_tokens", Integer, nullable=False, default=0),
    Column("output_tokens", Integer, nullable=False, default=0),
    Column("escalation", String(100), nullable=True),
    Column("groundedness", Float, nullable=True),
    Column("error_type", String(100), nullable=True),  # first error's class name
    Column("error_stage", String(50), nullable=True),
    Column("body", JSON, nullable=False),  # the masked trace document
    Column("channel", String(20), nullable=True),  # server | cli | eval | drill | … (0017; NULL before)
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

trace_sources = Table(
    "trace_sources",
    metadata,
    Column("request_id", String(40), primary_key=True),
    Column("rank", Integer, primary_key=True, autoincrement=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("source_id", String(100), nullable=False),
    Column("doc_id", String(300), nullable=False),
    Column("chunk_id", String(300), nullable=False),
    Column("score", Float, nullable=True),
    Column("cited", Boolean, nullable=False),
    Index("ix_trace_sources_doc", "source_id", "doc_id"),
    # the documents a period's answers cited: a covering range scan (0021_report)
    Index("ix_trace_sources_cited", "cited", "started_at", "source_id", "doc_id"),
)
