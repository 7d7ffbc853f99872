"""Small tables owned by no single package: settings and switches that must survive restarts, and the
request counters that server workers share (``rate_limit_windows``, migration 0010)."""

from sqlalchemy import JSON, BigInteger, Column, Integer, PrimaryKeyConstraint, String, Table

from charter.store._types import UTCDateTime, metadata

state = Table(
    "state",
    metadata,
    Column("key", String(200), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

rate_limit_windows = Table(
    "rate_limit_windows",
    metadata,
    Column("key", String(200), nullable=False),
    Column("minute", BigInteger, nullable=False),  # the window: minutes since the epoch
    Column("hits", Integer, nullable=False),
    PrimaryKeyConstraint("key", "minute", name="pk_rate_limit_windows"),
)
