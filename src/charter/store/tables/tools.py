"""The ``tool_actions`` table and ``agent_runs`` (below): every proposed tool call, its approval state, and its stored result.

One row is one proposal. Its id is the approval id *and* the idempotency key of the execution; the row
binds the requester, the tool and the SHA-256 of the canonical arguments. ``version`` is the optimistic
concurrency counter: every transition is ``UPDATE … WHERE id = ? AND version = ?``.
"""

from sqlalchemy import JSON, Boolean, Column, Float, Index, Integer, String, Table, Text

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


# The ``agent_runs`` table: one row per task of an ``agent`` workflow, durable across restarts.
#
# The row holds what the loop needs to continue: the task and its state (passages, the steps so far with
# their tool calls and results, the approvals it waits for) — sealed (encrypted at rest, like tool arguments:
# they are needed verbatim to continue) — plus the plain columns a scheduler reads: status, step count, the
# approval it waits on, the lease of the process working on it. ``version`` is the optimistic-concurrency
# counter: every save is ``UPDATE … WHERE id = ? AND version = ?``, so two processes never advance one run.
agent_runs = Table(
    "agent_runs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("workflow", String(100), nullable=False),
    Column("principal_id", String(200), nullable=False),
    Column("subject_id", String(200), nullable=True),
    Column("status", String(20), nullable=False),
    Column("task", JSON, nullable=False),
    Column("state", JSON, nullable=False),
    Column("steps", Integer, nullable=False),
    Column("waiting_on", String(40), nullable=True),
    Column("stop_reason", Text, nullable=True),
    Column("result", JSON, nullable=True),
    Column("segments", Integer, nullable=False),
    Column("active_ms", Float, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("version", Integer, nullable=False),
    Index("ix_agent_runs_status", "status", "updated_at"),
    Index("ix_agent_runs_principal", "principal_id", "created_at"),
)
