"""Who may run the launch gate: the workflow's owners (every person named under ``owners``: they answer for
what the gate checks), or anyone whose role has the ``gate.run`` permission (decided by Cedar)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from charter.runtime import Runtime
    from charter.spec import Principal


def gate_owners(rt: Runtime) -> dict[str, list[str]]:
    """Owner id -> the duties the charter names them for."""
    out: dict[str, list[str]] = {}
    for duty, who in rt.spec.owners.model_dump().items():
        if isinstance(who, str):
            out.setdefault(who, []).append(duty)
    return out


def may_run_gate(rt: Runtime, principal: Principal) -> tuple[bool, list[str]]:
    """(allowed, reasons). An inactive principal never may."""
    if not principal.active:
        return False, [f"{principal.id} is not active"]
    duties = gate_owners(rt).get(principal.id)
    if duties:
        return True, [f"{principal.id} is owners.{', owners.'.join(duties)}"]
    decision = rt.authorizer.authorize(principal, "gate.run", f"workflow:{rt.spec.workflow.id}")
    return decision.allowed, [*decision.reasons, *decision.errors]
