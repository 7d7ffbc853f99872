"""The ``tool_actions`` table: every proposed tool call, its approval state, and its stored result.

One row is one proposal. Its id is the approval id *and* the idempotency key of the execution; the row
binds the requester, the tool and the SHA-256 of the canonical arguments. ``version`` is the optimistic
concurrency counter: every transition is ``UPDATE … WHERE id = ? AND version = ?``.
"""

from sqlalchemy import JSON, Boolean, Column, Index, Integer, String, Table, Text

from charter.store._types import UTCDateTime, metadata

tool_actions = Table(
    "tool_actions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("request_id", String(64), nullable=True),
    Column("tool", String(100), nullable=False),
    Column("requester", String(200), nullable=False),
    Column("origin", String(20), nullable=False),
    Column("args", JSON, nullable=False),
    Column("args_hash", String(64), nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(20), nullable=False),
    Column("needs_approval", Boolean, nullable=False),
    Column("required_role", String(100), nullable=True),
    Column("assigned_role", String(100), nullable=True),
    Column("escalation_level", Integer, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("sla_due_at", UTCDateTime, nullable=True),
    Column("decided_by", String(200), nullable=True),
    Column("decided_at", UTCDateTime, nullable=True),
    Column("decision_reason", Text, nullable=True),
    Column("started_at", UTCDateTime, nullable=True),
    Column("finished_at", UTCDateTime, nullable=True),
    Column("result", JSON, nullable=True),
    Column("error", Text, nullable=True),
    Column("version", Integer, nullable=False),
    Index("ix_tool_actions_status", "status"),
    Index("ix_tool_actions_requester", "requester", "tool", "created_at"),
    Index("ix_tool_actions_request", "request_id"),
)
