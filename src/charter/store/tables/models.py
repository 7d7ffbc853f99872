"""Tables of the model gateway: budget ledger (per workflow-month totals and per-call reservations) and
prompt approvals and activations. Money is stored as integer nano-dollars (1e-9 USD) so that sums are exact.
"""

from sqlalchemy import BigInteger, Column, Index, Integer, String, Table, Text

from charter.store._types import UTCDateTime, metadata

budget_months = Table(
    "budget_months",
    metadata,
    Column("workflow_id", String(100), primary_key=True),
    Column("month", String(7), primary_key=True),  # "2026-11" (UTC calendar month)
    Column("spent_nano", BigInteger, nullable=False),
    Column("reserved_nano", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

budget_reservations = Table(
    "budget_reservations",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow_id", String(100), nullable=False),
    Column("month", String(7), nullable=False),
    Column("request_id", String(100), nullable=False),
    Column("principal_id", String(200), nullable=False),
    Column("model", String(200), nullable=False),
    Column("estimated_nano", BigInteger, nullable=False),
    Column("actual_nano", BigInteger, nullable=True),
    Column("status", String(20), nullable=False),  # reserved | settled | released | timed_out | expired
    Column("created_at", UTCDateTime, nullable=False),
    Column("settled_at", UTCDateTime, nullable=True),
    Index("ix_budget_reservations_request", "request_id"),
    Index("ix_budget_reservations_status", "status", "created_at"),
)

prompt_approvals = Table(
    "prompt_approvals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workflow_id", String(100), nullable=False),
    Column("prompt", String(100), nullable=False),
    Column("version", String(100), nullable=False),
    Column("file_hash", String(64), nullable=False),  # sha256 of the prompt file's bytes when approved
    Column("approved_by", String(200), nullable=False),
    Column("approved_at", UTCDateTime, nullable=False),
    Column("note", Text, nullable=True),
    Index("ix_prompt_approvals_version", "workflow_id", "prompt", "version"),
)

prompt_activations = Table(
    "prompt_activations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workflow_id", String(100), nullable=False),
    Column("prompt", String(100), nullable=False),
    Column("version", String(100), nullable=False),
    Column("file_hash", String(64), nullable=False),
    Column("charter_active", String(100), nullable=False),  # the charter's `active` when this was recorded
    Column("activated_by", String(200), nullable=False),
    Column("activated_at", UTCDateTime, nullable=False),
    Index("ix_prompt_activations_prompt", "workflow_id", "prompt"),
)
