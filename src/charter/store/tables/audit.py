"""The append-only, hash-chained audit log and its signed checkpoints.

``ts`` and ``details`` are stored as the exact canonical text that the entry's hash covers (see
``_audit_canon``): ISO-8601 UTC with microseconds (fixed width, so text order is time order) and canonical
JSON. Verification therefore hashes the stored bytes, identically on SQLite and PostgreSQL.
"""

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from charter.store._types import UTCDateTime, metadata

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=False),
    Column("ts", String(32), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("resource", String(500), nullable=False),
    Column("outcome", String(50), nullable=False),
    Column("details", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # HMAC of (seq, hash) under the secret audit-seal.key beside the signing key: see charter.telemetry.audit (0011)
    Column("seal", String(64), nullable=True),
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
    Index("ix_audit_checkpoints_seq", "seq"),
)
