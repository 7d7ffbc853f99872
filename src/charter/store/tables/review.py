"""The ``review_items`` table: drafts waiting for (or decided by) a human reviewer.

Decisions stored here are the ground truth for "review acceptance". ``version`` is the optimistic
concurrency counter, as for tool actions.
"""

from sqlalchemy import JSON, Column, Float, Index, Integer, String, Table, Text

from charter.store._types import UTCDateTime, metadata

review_items = Table(
    "review_items",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("request_id", String(64), nullable=True),
    Column("submitter", String(200), nullable=False),
    Column("question", Text, nullable=False),
    Column("draft", Text, nullable=False),
    Column("citations", JSON, nullable=False),
    Column("agent_notes", JSON, nullable=False),
    Column("groundedness", Float, nullable=True),
    Column("escalation_reason", String(50), nullable=True),
    Column("status", String(20), nullable=False),
    Column("assigned_role", String(100), nullable=True),
    Column("escalation_level", Integer, nullable=False),
    Column("sla_due_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("decision", String(20), nullable=True),
    Column("decided_by", String(200), nullable=True),
    Column("decided_at", UTCDateTime, nullable=True),
    Column("final_text", Text, nullable=True),
    Column("diff", Text, nullable=True),
    Column("reject_reason", String(50), nullable=True),
    Column("comment", Text, nullable=True),
    Column("version", Integer, nullable=False),
    # 0012_access: routing to a source owner, the conversation's subject, a pending edit (four-eyes)
    Column("assigned_user", String(200), nullable=True),
    Column("routing", Text, nullable=True),
    Column("subject_id", String(100), nullable=True),
    Column("edited_by", String(200), nullable=True),
    Column("edit_checks", JSON, nullable=True),
    Index("ix_review_items_status", "status"),
    Index("ix_review_items_request", "request_id"),
)
