"""Tables of the sources package: sync runs, per-source sync state, and the per-document catalog.

The index (``charter.retrieval``) holds what search needs; these tables hold what governance needs: when
each source was last synced successfully (freshness), every run's summary, and for each document the
metadata the connector reported — including *why* a document is private by default or failed.
"""

from sqlalchemy import JSON, Boolean, Column, Index, Integer, String, Table, Text

from charter.store._types import UTCDateTime, metadata

sync_runs = Table(
    "sync_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source_id", String(200), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("status", String(20), nullable=False),  # running | succeeded | partial | failed | interrupted
    Column("started_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("pid", Integer, nullable=True),
    Column("host", String(200), nullable=True),
    Column("config_hash", String(64), nullable=True),
    Column("summary", JSON, nullable=False),
    Column("error", Text, nullable=True),
    Index("ix_sync_runs_source", "source_id", "id"),
)

source_state = Table(
    "source_state",
    metadata,
    Column("source_id", String(200), primary_key=True),
    Column("last_success_at", UTCDateTime, nullable=True),
    Column("last_success_run", Integer, nullable=True),
    Column("last_run_at", UTCDateTime, nullable=True),
    Column("last_status", String(20), nullable=True),
    Column("config_hash", String(64), nullable=True),  # source config at the last successful sync
    Column("chunking_hash", String(64), nullable=True),  # chunking settings the index was built with
    Column("acl_synced_at", UTCDateTime, nullable=True),  # ACLs last read completely (full or --acl-only)
    Column("cursor", JSON, nullable=True),  # the connector's incremental state after its last success
)

source_documents = Table(
    "source_documents",
    metadata,
    Column("source_id", String(200), primary_key=True),
    Column("doc_id", String(1000), primary_key=True),
    Column("title", Text, nullable=False),
    Column("url", Text, nullable=True),
    Column("format", String(20), nullable=False),
    Column("acl_tokens", JSON, nullable=False),  # effective tokens, sorted
    Column("private_by_default", Boolean, nullable=False),
    Column("acl_error", Text, nullable=True),
    Column("content_hash", String(64), nullable=False),
    Column("updated_at", UTCDateTime, nullable=True),
    Column("failed_reason", Text, nullable=True),  # last sync could not read it (previous version kept)
    Column("recorded_at", UTCDateTime, nullable=False),  # when this row last changed
    Column("version", String(200), nullable=True),  # version at the source (Git blob hash, HTTP ETag)
    Column("revision", String(200), nullable=True),  # revision read (Git commit id, for citations)
)

source_screening = Table(
    "source_screening",
    metadata,
    Column("source_id", String(200), primary_key=True),
    Column("doc_id", String(1000), primary_key=True),
    Column("title", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),  # of the text as read (before screening)
    Column("state", String(20), nullable=False),  # excluded | quarantined | approved
    Column("reasons", JSON, nullable=False),  # sorted reason names
    Column("sentences", JSON, nullable=False),  # [{sentence, reasons}], at most 20
    Column("flagged_at", UTCDateTime, nullable=False),
    Column("approved_by", String(200), nullable=True),
    Column("approved_at", UTCDateTime, nullable=True),
)
