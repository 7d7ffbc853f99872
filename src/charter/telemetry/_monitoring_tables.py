"""User feedback on answers, linked to the request. The comment is stored masked (or as the policy says)."""

from sqlalchemy import JSON, Column, Index, Integer, String, Table, Text

from charter.store._types import UTCDateTime, metadata

feedback = Table(
    "feedback",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("request_id", String(40), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("principal_id", String(200), nullable=False),  # as monitoring.fields.principal says
    Column("rating", Integer, nullable=False),  # +1 thumbs up, -1 thumbs down
    Column("reasons", JSON, nullable=False),  # reason categories
    Column("comment", Text, nullable=True),  # masked per monitoring.fields.feedback_comment
    Index("ix_feedback_request", "request_id"),
    Index("ix_feedback_created", "created_at"),
)
