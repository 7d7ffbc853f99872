"""Approval requests for tool actions: decisions (approve / reject), expiry and escalation.

A request is a row of ``tool_actions`` that needs an approval. States::

    pending ──► approved ──► executing ──► executed | failed
       │  └───► rejected
       ├──────► expired            (its ``expires_after`` passed)
       └──────► escalated ──► approved | rejected | expired
                (its ``approval_sla`` passed: moved to the escalation rule's ``then`` role)

Every decision is optimistic: ``UPDATE … WHERE version = ?``; of N concurrent decisions exactly one
wins, the others get :class:`~charter.errors.Conflict`. Every transition is audited with actor, reason
and time. Approving runs the action at once (exactly once; see :mod:`charter.tools`).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal

from charter.errors import Conflict, Denied, NotFound, UsageError
from charter.review._authority import escalation_rule, require_authority, role_chain
from charter.store.clock import Clock, clock_or_default
from charter.tools import (
    OPEN_STATES,
    Action,
    execute,
    get_action,
    list_actions,
    masked,
    resolve_principal,
    transition,
)

if TYPE_CHECKING:
    from charter.runtime import Runtime
    from charter.spec import Principal

Decision = Literal["approve", "reject"]


def get_approval(rt: Runtime, approval_id: str) -> Action:
    """The approval request with this id (an action that needed an approval)."""
    action = get_action(rt, approval_id)
    if not action.needs_approval:
        raise NotFound(f"{approval_id} needed no approval; it is an action, not an approval request")
    return action


def list_approvals(
    rt: Runtime,
    *,
    status: str | list[str] | None = None,
    principal: Principal | str | None = None,
    limit: int = 200,
) -> list[Action]:
    """Approval requests, newest first. With ``principal``: those they asked for or may decide now."""
    items = list_actions(rt, status=status, needs_approval=True, limit=limit)
    if principal is None:
        return items
    who = resolve_principal(rt, principal)
    return [a for a in items if a.requester == who.id or set(approver_roles(rt, a)) & set(who.roles)]


def approver_roles(rt: Runtime, action: Action) -> list[str]:
    """The roles that may decide ``action`` now: its required role and every role it escalated to."""
    return role_chain(rt, "approval_sla", action.required_role, action.escalation_level)


def _expire_if_due(rt: Runtime, action: Action, now: datetime, actor: str) -> Action:
    if action.status in OPEN_STATES and action.expires_at is not None and now >= action.expires_at:
        try:
            expired = transition(
                rt, action, "expired", now=now, decision_reason="expired: no decision in time"
            )
        except Conflict:
            return get_action(rt, action.id)
        rt.audit.append(
            actor=actor,
            action="approval.expired",
            resource=f"action:{action.id}",
            outcome="expired",
            details={
                "tool": action.tool,
                "requester": action.requester,
                "expires_at": action.expires_at.isoformat(),
            },
        )
        return expired
    return action


def _check_open(rt: Runtime, who: Principal, action: Action, decision: str) -> None:
    """Refuse (audited) an expired request; a decided one is a :class:`Conflict`."""
    if action.status == "expired":
        rt.audit.append(
            actor=who.id,
            action="approval.refused",
            resource=f"action:{action.id}",
            outcome="denied",
            details={"decision": decision, "reasons": ["expired"]},
        )
        raise Denied(
            f"approval request {action.id} has expired; propose the call again",
            reasons=[f"expired at {action.expires_at.isoformat() if action.expires_at else '?'}"],
        )
    if action.status not in OPEN_STATES:
        raise Conflict(f"approval request {action.id} is already {action.status}")


def _approver_authority(rt: Runtime, who: Principal, action: Action, decision: str) -> list[str]:
    """Why ``who`` may decide ``action`` (recorded in the audit entry); a refusal is audited and raised."""
    try:
        return require_authority(
            rt,
            who,
            owner=action.requester,
            roles=approver_roles(rt, action),
            assigned=action.assigned_role,
            escalated=action.status == "escalated",
            cedar_action="tools.approve",
            resource=f"tool:{action.tool}",
            context={"args": action.args},
            what="approval request",
        )
    except Denied as exc:
        rt.audit.append(
            actor=who.id,
            action="approval.refused",
            resource=f"action:{action.id}",
            outcome="denied",
            details={
                "decision": decision,
                "reasons": exc.reasons,
                "tool": action.tool,
                "args_hash": action.args_hash,
            },
        )
        raise


def decide_approval(
    rt: Runtime,
    approval_id: str,
    principal: Principal | str,
    decision: Decision,
    *,
    reason: str = "",
    clock: Clock | None = None,
    run: bool = True,
) -> Action:
    """Approve or reject an approval request; approving runs the action (unless ``run=False``).

    Raises :class:`Denied` for self-approval, a missing role or Cedar permission, or an expired request;
    :class:`Conflict` when the request was already decided (or a concurrent decision won).
    """
    if decision not in ("approve", "reject"):
        raise UsageError("decision must be 'approve' or 'reject'")
    if decision == "reject" and not reason.strip():
        raise UsageError("a rejection needs a reason")
    now = clock_or_default(clock).now()
    who = resolve_principal(rt, principal)
    action = _expire_if_due(rt, get_approval(rt, approval_id), now, "system")
    resource = f"action:{action.id}"
    _check_open(rt, who, action, decision)
    because = _approver_authority(rt, who, action, decision)
    to = "approved" if decision == "approve" else "rejected"
    decided = transition(
        rt,
        action,
        to,
        now=now,
        allowed_from=OPEN_STATES,
        decided_by=who.id,
        decided_at=now,
        decision_reason=masked(rt, reason) or f"{decision}d by {who.id}",
    )
    rt.audit.append(
        actor=who.id,
        action=f"approval.{to}",
        resource=resource,
        outcome=to,
        details={
            "tool": action.tool,
            "requester": action.requester,
            "args_hash": action.args_hash,
            "reason": masked(rt, reason),
            "authority": because,
            "at": now.isoformat(),
        },
    )
    if to == "approved" and run:
        return execute(rt, decided.id, actor=who.id, clock=clock)
    return decided


def tick_approvals(rt: Runtime, now: datetime) -> dict[str, list[str]]:
    """Expire requests past ``expires_at``; escalate those past their SLA to the rule's ``then`` role."""
    expired: list[str] = []
    escalated: list[str] = []
    for action in list_actions(rt, status=list(OPEN_STATES), needs_approval=True, limit=100_000):
        after = _expire_if_due(rt, action, now, "system")
        if after.status == "expired":
            expired.append(action.id)
            continue
        if action.sla_due_at is None or now < action.sla_due_at:
            continue
        rule = escalation_rule(rt, "approval_sla", action.assigned_role)
        if rule is None or rule.then is None or rule.then == action.assigned_role:
            continue
        following = escalation_rule(rt, "approval_sla", rule.then)
        try:
            moved = transition(
                rt,
                action,
                "escalated",
                now=now,
                allowed_from=OPEN_STATES,
                assigned_role=rule.then,
                escalation_level=action.escalation_level + 1,
                sla_due_at=now + following.sla if following else None,
            )
        except Conflict:
            continue
        rt.audit.append(
            actor="system",
            action="approval.escalated",
            resource=f"action:{action.id}",
            outcome="escalated",
            details={
                "from": action.assigned_role,
                "to": rule.then,
                "sla": str(rule.sla),
                "sla_due_at": moved.sla_due_at.isoformat() if moved.sla_due_at else None,
            },
        )
        escalated.append(action.id)
    return {"expired": expired, "escalated": escalated}
