"""The kill switch, per workflow and per tool, kept in the ``state`` table so that it survives restarts.

``is_killed`` is read on every proposal and again right before every execution, so turning a switch on
stops new requests and approved-but-not-started executions at once. A tool that is already running is not
interrupted (nothing can safely interrupt an external side effect halfway).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from charter.errors import Denied, UsageError
from charter.store import utcnow
from charter.store.switches import KILL_SWITCH_KEY, read_kill_switch, tool_switch_key

if TYPE_CHECKING:
    from charter.runtime import Runtime
    from charter.spec import Principal

_TOOL_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,99}$")  # the charter's identifier rule (spec._types)


def is_killed(rt: Runtime, tool: str | None = None) -> bool:
    """True if the workflow's kill switch is on, or (with ``tool``) that tool's switch is on.

    Read from the store on every call (never cached; :func:`charter.store.switches.read_kill_switch`). For
    a tool the charter declares, the query is a constant of the charter (compiled once); any other name goes
    the ordinary way, so no caller-supplied text is ever inlined into SQL."""
    declared = tool is None or (
        _TOOL_NAME.match(tool) is not None and any(t.name == tool for t in rt.spec.tools)
    )
    return read_kill_switch(rt.store, tool, declared=declared)


def kill_switch_status(rt: Runtime) -> dict[str, Any]:
    """``{"workflow": {...}, "tools": {name: {...}}}`` with who set each switch, when and why."""
    off = {"on": False}
    return {
        "workflow": rt.get_state(KILL_SWITCH_KEY) or off,
        "tools": {t.name: rt.get_state(tool_switch_key(t.name)) or off for t in rt.spec.tools},
    }


def may_operate_kill_switch(rt: Runtime, principal: Principal) -> tuple[bool, list[str]]:
    """The incidents owner, or anyone whose role has the ``kill_switch`` permission (decided by Cedar)."""
    if principal.id == rt.spec.owners.incidents and principal.active:
        return True, [f"{principal.id} is owners.incidents"]
    decision = rt.authorizer.authorize(principal, "kill_switch", None)
    return decision.allowed, [*decision.reasons, *decision.errors]


def set_kill_switch(
    rt: Runtime, principal: Principal | str, on: bool, *, tool: str | None = None, reason: str = ""
) -> dict[str, Any]:
    """Turn a switch on or off (audited). Raises :class:`Denied` for anyone but the incidents owner or a
    role with the ``kill_switch`` permission."""
    from charter.tools._records import masked, resolve_principal

    who = resolve_principal(rt, principal)
    if tool is not None and tool not in {t.name for t in rt.spec.tools}:
        raise UsageError(
            f"unknown tool {tool!r}; the charter's tools are: "
            f"{', '.join(t.name for t in rt.spec.tools) or 'none'}"
        )
    target = f"tool:{tool}" if tool else f"workflow:{rt.spec.workflow.id}"
    allowed, reasons = may_operate_kill_switch(rt, who)
    if not allowed:
        rt.audit.append(
            actor=who.id,
            action="kill_switch.refused",
            resource=target,
            outcome="denied",
            details={"on": on, "reasons": reasons},
        )
        raise Denied(
            f"{who.id} may not operate the kill switch (owners.incidents or a role with the "
            f"'kill_switch' permission may)",
            reasons=reasons,
        )
    reason = masked(rt, reason)
    value = {"on": bool(on), "by": who.id, "at": utcnow().isoformat(), "reason": reason}
    rt.set_state(tool_switch_key(tool) if tool else KILL_SWITCH_KEY, value)
    rt.audit.append(
        actor=who.id,
        action="kill_switch.on" if on else "kill_switch.off",
        resource=target,
        outcome="recorded",
        details={"reason": reason, "authorized_by": reasons},
    )
    return {"target": target, **value}
