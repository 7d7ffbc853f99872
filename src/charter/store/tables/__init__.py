"""The database schema: every table of every package, on the one :data:`charter.store.metadata`.

The schema lives here, in the bottom store layer next to the migrations that create it, so that the
migrations see it whole and every package imports the tables it reads downward, from one public place
(``from charter.store.tables import chunks, documents``). One module per owning package; the owner is the
package that writes the table (its docstring says so), the others only read it.
"""

from charter.store.tables.audit import audit_checkpoints, audit_log
from charter.store.tables.core import rate_limit_windows, state
from charter.store.tables.evals import eval_results, eval_runs
from charter.store.tables.identity import console_sessions, tokens
from charter.store.tables.mcp import mcp_pins
from charter.store.tables.models import (
    budget_months,
    budget_reservations,
    prompt_activations,
    prompt_approvals,
)
from charter.store.tables.monitoring import feedback, monitor_rollup
from charter.store.tables.retrieval import acl, chunks, documents, embeddings, meta, versions
from charter.store.tables.review import review_items
from charter.store.tables.sources import source_documents, source_screening, source_state, sync_runs
from charter.store.tables.tools import agent_runs, tool_actions
from charter.store.tables.traces import trace_sources, trace_spans, traces

__all__ = [
    "acl",
    "agent_runs",
    "audit_checkpoints",
    "audit_log",
    "budget_months",
    "budget_reservations",
    "chunks",
    "console_sessions",
    "documents",
    "embeddings",
    "eval_results",
    "eval_runs",
    "feedback",
    "mcp_pins",
    "meta",
    "monitor_rollup",
    "prompt_activations",
    "prompt_approvals",
    "rate_limit_windows",
    "review_items",
    "source_documents",
    "source_screening",
    "source_state",
    "state",
    "sync_runs",
    "tokens",
    "tool_actions",
    "trace_sources",
    "trace_spans",
    "traces",
    "versions",
]
