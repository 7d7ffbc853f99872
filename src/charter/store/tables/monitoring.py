"""User feedback on answers, linked to the request. The comment is stored masked (or as the policy says).

``monitor_rollup`` is the daily rollup of the monitoring aggregates (migration ``0018_rollup``): written
only by database triggers on ``traces``, ``feedback`` and ``review_items``, read by
:mod:`charter.telemetry._trends` and :mod:`charter.telemetry._clusters`.
"""

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

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

#: Additive counts per (UTC day, prompt version, model, index version) and ``kind``/``label``: the base row
#: (``kind = ''``) holds the per-request sums; ``esc``/``lat``/``rej``/``down``/``fail`` rows hold ``n`` per
#: escalation reason, latency bucket, rejection reason, thumbs-down reason, failure category.
monitor_rollup = Table(
    "monitor_rollup",
    metadata,
    Column("day", String(10), nullable=False),
    Column("prompt_version", String(100), nullable=False),  # '-' for none
    Column("model", String(200), nullable=False),
    Column("index_version", String(100), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("label", Text, nullable=False),
    Column("n", BigInteger, nullable=False),  # requests (base row) or the label's count
    Column("served", BigInteger, nullable=False),
    Column("errors", BigInteger, nullable=False),
    Column("refused", BigInteger, nullable=False),
    Column("tool_refusals", BigInteger, nullable=False),
    Column("cost_usd", Float, nullable=False),
    Column("g_sum", Float, nullable=False),
    Column("g_n", BigInteger, nullable=False),
    Column("fb_up", BigInteger, nullable=False),
    Column("fb_down", BigInteger, nullable=False),
    Column("unchanged", BigInteger, nullable=False),
    Column("edited", BigInteger, nullable=False),
    Column("rejected", BigInteger, nullable=False),
    PrimaryKeyConstraint(
        "day", "prompt_version", "model", "index_version", "kind", "label", name="pk_monitor_rollup"
    ),
)
