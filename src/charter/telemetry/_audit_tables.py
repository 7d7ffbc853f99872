"""The append-only, hash-chained audit log and its signed checkpoints."""

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, String, Table, Text

from charter.store._types import UTCDateTime, metadata

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("ts", UTCDateTime, nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("resource", String(500), nullable=False),
    Column("outcome", String(50), nullable=False),
    Column("details", JSON, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_audit_log_action", "action"),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("seq", BigInteger, nullable=False),
    Column("head_hash", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("key_id", String(64), nullable=False),
    Column("signature", Text, nullable=False),
)
