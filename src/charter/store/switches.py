"""The switches every layer reads, kept in the ``state`` table so that they survive restarts: the kill
switches (one per workflow, one per tool) and drift's restricted mode.

Each is stored as ``{"on": bool, "by", "at", "reason", ...}`` under its key. Reading them lives here, in the
bottom store layer, so that the request flow, the review queue, the metrics and the alerts read them
downward; *setting* them (who may, and the audit event) belongs to :mod:`charter.tools`
(``set_kill_switch``) and :mod:`charter.gate` (``set_restricted``). Every read goes to the store: nothing is
cached, so turning a switch on stops the very next request.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import select

from charter.store._engine import Store
from charter.store.tables import state

KILL_SWITCH_KEY = "kill_switch.workflow"
RESTRICTED_KEY = "workflow.restricted"


class HasState(Protocol):
    """Anything that reads the ``state`` table by key (a :class:`charter.runtime.Runtime`)."""

    def get_state(self, key: str, default: Any = None) -> Any: ...


def tool_switch_key(tool: str) -> str:
    """The ``state`` key of one tool's kill switch."""
    return f"kill_switch.tool.{tool}"


def switch_on(value: Any) -> bool:
    """How every switch is stored in ``state`` (kill switches, restricted mode): ``{"on": bool, ...}``."""
    return isinstance(value, dict) and bool(value.get("on"))


def is_restricted(rt: HasState) -> bool:
    """True while restricted mode is on (every draft requires review)."""
    return switch_on(rt.get_state(RESTRICTED_KEY))


_queries: dict[str | None, Any] = {}


def _switch_query(tool: str | None) -> Any:
    """The one ``SELECT`` of both switches, built once per tool (so the store can keep it compiled)."""
    query = _queries.get(tool)
    if query is None:
        keys = [KILL_SWITCH_KEY] if tool is None else [KILL_SWITCH_KEY, tool_switch_key(tool)]
        query = _queries[tool] = select(state.c.value).where(state.c.key.in_(keys))
    return query


def read_kill_switch(store: Store, tool: str | None = None, *, declared: bool = True) -> bool:
    """True if the workflow's kill switch is on, or (with ``tool``) that tool's switch is on.

    ``declared``: ``tool`` is one the charter declares, so its query is a constant of the charter
    (:meth:`~charter.store.Store.read_constant`, compiled once); any other name goes the ordinary way, so no
    caller-supplied text is ever inlined into SQL. :func:`charter.tools.is_killed` decides it."""
    if declared:
        values = [r[0] for r in store.read_constant(_switch_query(tool))]
    else:
        assert tool is not None
        keys = [KILL_SWITCH_KEY, tool_switch_key(tool)]
        with store.connect() as conn:  # one read for both switches
            values = list(conn.execute(select(state.c.value).where(state.c.key.in_(keys))).scalars())
    return any(switch_on(v) for v in values)
