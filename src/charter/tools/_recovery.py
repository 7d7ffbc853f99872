"""Explicit recovery of actions a crash left ``executing``.

The guarantee it completes is stated in :mod:`charter.tools._actions`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Literal

from charter.errors import Conflict, Denied, UsageError
from charter.spec import Principal
from charter.tools._actions import registered_tool, run_action
from charter.tools._killswitch import is_killed
from charter.tools._records import (
    Action,
    AuditNote,
    audit_action,
    clock_of,
    get_action,
    list_actions,
    masked,
    resolve_principal,
    transition,
)

if TYPE_CHECKING:
    from charter.runtime import Runtime
    from charter.store.clock import Clock


def stuck_actions(
    rt: Runtime, *, older_than: timedelta = timedelta(0), clock: Clock | None = None
) -> list[Action]:
    """Actions left ``executing`` (a crash or a still-running call) for longer than ``older_than``."""
    cutoff = clock_of(clock).now() - older_than
    return [
        a
        for a in list_actions(rt, status="executing", limit=10_000)
        if a.started_at is None or a.started_at <= cutoff
    ]


def resolve_stuck(
    rt: Runtime,
    action_id: str,
    principal: Principal | str,
    outcome: Literal["executed", "failed", "retry"],
    *,
    reason: str,
    clock: Clock | None = None,
) -> Action:
    """An operator's explicit recovery of an action left ``executing``.

    ``executed`` / ``failed`` record what the operator found in the external system; ``retry`` re-runs the
    tool with the same idempotency key and is allowed only for tools marked ``@tool(idempotent=True)``.
    Only the incidents owner or a role with the ``kill_switch`` permission may do this (audited).
    """
    from charter.tools._killswitch import may_operate_kill_switch

    clk = clock_of(clock)
    who = resolve_principal(rt, principal)
    if not reason.strip():
        raise UsageError("say why (reason): what did you check before resolving the action?")
    allowed, reasons = may_operate_kill_switch(rt, who)
    action = get_action(rt, action_id)
    if not allowed:
        audit_action(rt, who.id, "tools.recover_refused", action, "denied", reasons=reasons)
        raise Denied(f"{who.id} may not resolve stuck actions", reasons=reasons)
    if action.status != "executing":
        raise Conflict(f"action {action.id} is {action.status}, not executing; nothing to recover")
    if outcome == "retry":
        reg = registered_tool(rt, action.tool)
        if not reg.definition.idempotent:
            raise Denied(
                f"{action.tool} is not marked idempotent; record the outcome you found instead "
                f"(executed or failed)",
                reasons=[f"@tool({action.tool}): idempotent=False"],
            )
        if is_killed(rt, action.tool):
            raise Denied(
                f"the kill switch is on for {action.tool}; turn it off before re-running",
                reasons=["kill_switch: on"],
            )
        note = AuditNote(who.id, "tools.recovered", "retry", {"reason": masked(rt, reason)})
        again = transition(rt, action, "executing", now=clk.now(), started_at=clk.now(), audit=note)
        return run_action(rt, reg, again, who.id, clk)
    note = AuditNote(who.id, "tools.recovered", outcome, {"reason": masked(rt, reason)})
    if outcome == "executed":
        return transition(
            rt,
            action,
            "executed",
            now=clk.now(),
            finished_at=clk.now(),
            result={"recovered_by": who.id, "note": masked(rt, reason)},
            audit=note,
        )
    if outcome == "failed":
        return transition(
            rt,
            action,
            "failed",
            now=clk.now(),
            finished_at=clk.now(),
            error=f"interrupted; marked failed by {who.id}: {masked(rt, reason)}",
            audit=note,
        )
    raise UsageError("outcome must be executed, failed or retry")
