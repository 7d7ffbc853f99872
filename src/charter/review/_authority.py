"""Who may decide an approval request or a draft, and where escalations send them.

Two checks, both required (deny by default):

1. **Role.** The decider holds a role the item is (or was) assigned to: the role the charter names
   first, plus every role an escalation has since moved it to. Escalation widens, never narrows: a late
   decision by the original role still counts.
2. **Cedar.** The action (``tools.approve`` with the call's arguments, or ``review.decide``) is permitted.
   One exception, stated by the charter itself: once an item has *escalated* to a role, a member of that
   role may decide it even when no generated policy permits it for these arguments (``review.escalations``
   is the grant), but an explicit ``forbid`` still wins.

Nobody decides their own request or draft (four-eyes), whatever their roles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from charter.errors import Denied

if TYPE_CHECKING:
    from charter.runtime import Runtime
    from charter.spec import Escalation, Principal


def escalation_rule(rt: Runtime, trigger: str, role: str | None) -> Escalation | None:
    """The first rule for ``trigger`` that applies to items currently with ``role`` (any role if None)."""
    for rule in rt.spec.review.escalations:
        if rule.when == trigger and (role is None or rule.to == role):
            return rule
    return None


def role_chain(rt: Runtime, trigger: str, start: str | None, level: int) -> list[str]:
    """The roles an item has been with: ``start`` and each role ``level`` escalations moved it to."""
    if start is None:
        return []
    roles = [start]
    role = start
    for _ in range(level):
        rule = escalation_rule(rt, trigger, role)
        if rule is None or rule.then is None:
            break
        role = rule.then
        roles.append(role)
    return roles


def require_authority(
    rt: Runtime,
    who: Principal,
    *,
    owner: str,
    roles: list[str],
    assigned: str | None,
    escalated: bool,
    cedar_action: str,
    resource: str | None,
    context: dict[str, Any] | None,
    what: str,
) -> list[str]:
    """Raise :class:`Denied` unless ``who`` may decide; returns the reasons it may (for the audit)."""
    if who.id == owner:
        raise Denied(
            f"{who.id} cannot decide their own {what} (four-eyes)",
            reasons=["four-eyes: requester == approver"],
        )
    held = [r for r in roles if r in who.roles]
    if not held:
        raise Denied(
            f"{who.id} lacks the role to decide this {what}: needs {' or '.join(roles) or 'a role'}",
            reasons=[
                f"required role: {' or '.join(roles) or '(none)'}; "
                f"{who.id} has {', '.join(who.roles) or 'none'}"
            ],
        )
    decision = rt.authorizer.authorize(who, cedar_action, resource, context)
    if decision.allowed:
        return [f"role {held[0]}", *decision.reasons]
    if not decision.policy_ids and escalated and assigned is not None and assigned in who.roles:
        return [f"escalated to role {assigned} (review.escalations)"]
    raise Denied(f"{who.id} may not decide this {what}", reasons=[*decision.reasons, *decision.errors])
