"""Small tables owned by no single package: settings and switches that must survive restarts."""

from sqlalchemy import JSON, Column, String, Table

from charter.store._types import UTCDateTime, metadata

state = Table(
    "state",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
