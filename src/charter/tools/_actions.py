"""Proposals and exactly-once execution of tool calls.

``propose`` is how the pipeline (``origin="model"``), the API and the CLI ask for a tool call. The call
runs at once only when *all* of these hold, checked in this order, each refusal audited and raised as
:class:`~charter.errors.Denied` (or :class:`~charter.errors.UsageError` for bad arguments):

1. the tool is not a forbidden action and is in the charter's tool list;
2. the arguments validate (a JSON object; no NaN, unknown fields or wrong types);
3. Cedar permits ``tools.call`` on ``Tool::"<name>"`` for this principal, with the arguments as context;
4. neither the workflow's nor the tool's kill switch is on;
5. the tool's preconditions hold (``requires``, e.g. ``draft_approved``);
6. the principal's rate limit for the tool is not used up;
7. the approval rule asks for no approval.

Otherwise a pending approval request is stored and returned: its id is the approval id *and* the
idempotency key of the eventual execution.

With a ``request_id``, proposing the same call (same principal, tool and arguments) again within that
request returns the action already stored instead of creating a second one, so a retried request cannot
queue a second action.

**The execution guarantee.** The tool function runs *at most once* per action id without an operator's
say-so, and an approved action is never lost:

* the transition ``approved → executing`` is committed (optimistic concurrency, ``version``) *before*
  the function is called, so of any number of concurrent executors exactly one runs it; a call that needs
  no approval is stored, audited (``tools.proposed``) and moved to ``executing`` (``tools.executing``) in
  one transaction by ``propose`` itself, after the same checks ``execute`` makes — so its decision is
  committed, with its audit entries, before the function is called;
* the outcome is committed afterwards (``executed`` with the JSON result, or ``failed`` with the error);
  a retry of ``execute`` returns the stored outcome and never runs the function again;
* if the process dies while the function runs, the row stays ``executing``: nothing re-runs it
  automatically. ``stuck_actions`` lists such rows and ``resolve_stuck`` lets an operator record what
  happened (``executed`` or ``failed``, after checking the external system) or, for tools marked
  ``@tool(idempotent=True)`` that pass the idempotency key on, re-run it with the same key.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, select, text

from charter.errors import CharterException, Conflict, Denied, IntegrityError, UsageError
from charter.spec import Principal, Tool
from charter.store import UTCDateTime
from charter.store.tables import review_items, tool_actions
from charter.tools._killswitch import is_killed
from charter.tools._preconditions import check_preconditions
from charter.tools._records import (
    OPEN_STATES,
    ORIGINS,
    Action,
    AuditNote,
    Origin,
    Proposal,
    audit_action,
    audit_fields,
    clock_of,
    get_action,
    inserted_action,
    masked,
    resolve_principal,
    row_to_action,
    seal_values,
    transition,
)
from charter.tools._registry import RegisteredTool, ToolContext, args_hash, tool_registry

if TYPE_CHECKING:
    from charter.runtime import Runtime
    from charter.store.clock import Clock


# ------------------------------------------------------------------------------------------ approvals
def approval_requirement(spec: Tool, args: dict[str, Any]) -> tuple[str | None, str]:
    """``(approver_role or None, why)`` from the charter's approval rule for these arguments.

    For ``conditional`` the first condition that holds decides; a condition that cannot be evaluated
    (missing or mistyped argument) counts as holding, so it can only make an approval *more* necessary.
    """
    from charter.policy import parse_condition

    rule = spec.approval
    if rule.rule == "none":
        return None, "approval rule: none"
    if rule.rule == "always":
        return rule.approver_role, f"approval rule: always ({rule.approver_role})"
    for i, cond in enumerate(rule.conditions):
        try:
            holds = parse_condition(cond.when).evaluate(args)
        except UsageError as exc:
            return (
                cond.approver_role,
                f"approval condition {i + 1} ({cond.when}) could not be evaluated: {exc}",
            )
        if holds:
            return cond.approver_role, f"approval condition {i + 1}: {cond.when} → {cond.approver_role}"
    return None, "no approval condition holds"


def _sla_rule(rt: Runtime, trigger: str, role: str | None) -> Any:
    """The escalation rule for ``trigger`` that applies to items currently with ``role``."""
    for rule in rt.spec.review.escalations:
        if rule.when == trigger and (role is None or rule.to == role):
            return rule
    return None


# ------------------------------------------------------------------------------------------ propose
#: the statements of a proposal's transaction, built once (every value a bound parameter, so the store keeps
#: them compiled): the insert of a new action, the action a request already proposed, the rate-limit count
_INSERT = tool_actions.insert()
_BY_REQUEST = (
    select(tool_actions)
    .where(
        tool_actions.c.request_id == bindparam("request_id"),
        tool_actions.c.requester == bindparam("requester"),
        tool_actions.c.tool == bindparam("tool"),
        tool_actions.c.args_hash == bindparam("args_hash"),
    )
    .order_by(tool_actions.c.created_at)
    .limit(1)
)
_USED = (
    select(func.count())
    .select_from(tool_actions)
    .where(
        tool_actions.c.requester == bindparam("requester"),
        tool_actions.c.tool == bindparam("tool"),
        tool_actions.c.created_at > bindparam("since", type_=UTCDateTime),
    )
)


def _lock_key(principal_id: str, tool: str) -> int:
    """A signed 64-bit key for PostgreSQL's advisory lock on one principal's use of one tool."""
    digest = hashlib.sha256(f"charter.rate:{principal_id}:{tool}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@dataclass(frozen=True)
class _Refusal:
    """Audits a refused proposal (``tools.refused``) and builds the :class:`Denied` to raise."""

    rt: Runtime
    actor: str
    tool: Any
    base: dict[str, Any]

    def __call__(self, message: str, reasons: list[str]) -> Denied:
        self.rt.audit.append(
            actor=self.actor,
            action="tools.refused",
            resource=f"tool:{str(self.tool)[:100]}",
            outcome="denied",
            details={**self.base, "reasons": reasons},
        )
        return Denied(message, reasons=reasons)


@dataclass(frozen=True)
class _Allowed:
    """A proposal that passed every check: the tool, the validated arguments, the deciding policies and
    the approval it needs (``role`` None: none)."""

    reg: RegisteredTool
    validated: dict[str, Any]
    policy_ids: tuple[str, ...]
    role: str | None
    why: str

    @property
    def needs(self) -> bool:
        return self.role is not None


@dataclass
class _Stored:
    """What :func:`_store_proposal` did under the write lock."""

    existing: Action | None = None
    action: Action | None = None
    running: Action | None = None
    used: int = 0


def _check_proposal(rt: Runtime, who: Principal, tool: Any, args: Any, refuse: _Refusal) -> _Allowed:
    """Every check before a proposal is stored, in order; a failed one is audited and raised."""
    if not isinstance(tool, str):
        raise UsageError("tool must be a name")
    if tool in rt.spec.scope.forbidden_actions:
        raise refuse(f"{tool!r} is a forbidden action", [f"scope.forbidden_actions: {tool}"])
    registry = tool_registry(rt)
    if tool not in registry:
        raise refuse(
            f"{tool!r} is not in the workflow's tool list",
            [f"tools: {tool} is not declared (declared: {', '.join(registry.names()) or 'none'})"],
        )
    reg = registry.get(tool)
    try:
        validated = reg.validate(args)
    except UsageError as exc:
        rt.audit.append(
            actor=who.id,
            action="tools.refused",
            resource=f"tool:{tool}",
            outcome="invalid",
            details={**refuse.base, "reasons": [str(exc)]},
        )
        raise
    decision = rt.authorizer.authorize(who, "tools.call", f"tool:{tool}", {"args": validated})
    if not decision.allowed:
        raise refuse(f"{who.id} may not call {tool}", [*decision.reasons, *decision.errors])
    if is_killed(rt, tool):
        raise refuse(f"the kill switch is on for {tool} (or the whole workflow)", ["kill_switch: on"])
    role, why = approval_requirement(reg.spec, validated)
    # upstream MCP tools: pinned and not changed (charter.mcp); a call that runs now is checked as
    # ``execute`` checks it, against the upstream's live definition
    unavailable = reg.unavailable(live=role is None)
    if unavailable:
        raise refuse(unavailable, [f"upstream: {reg.origin} is not pinned or changed"])
    try:
        check_preconditions(rt, reg.spec, validated, who)
    except Denied as exc:
        raise refuse(str(exc), exc.reasons) from None
    return _Allowed(reg, validated, tuple(decision.policy_ids), role, why)


def _action_row(
    rt: Runtime,
    who: Principal,
    tool: str,
    ok: _Allowed,
    *,
    request_id: str | None,
    origin: Origin,
    reason: str,
    now: Any,
) -> dict[str, Any]:
    """The new action's row: pending approval, or (when it runs now) already moved ``approved → executing``."""
    needs, role = ok.needs, ok.role
    sla = _sla_rule(rt, "approval_sla", role) if needs else None
    row: dict[str, Any] = {
        "id": "act_" + secrets.token_hex(12),
        "request_id": request_id,
        "tool": tool,
        "requester": who.id,
        "origin": origin,
        "args": ok.validated,
        "args_hash": args_hash(ok.validated),
        "reason": reason,
        "status": "pending" if needs else "approved",
        "needs_approval": needs,
        "required_role": role,
        "assigned_role": role,
        "escalation_level": 0,
        "created_at": now,
        "updated_at": now,
        "expires_at": now + ok.reg.spec.approval.expires_after if needs else None,
        "sla_due_at": now + sla.sla if sla is not None else None,
        "decided_by": None if needs else "policy",
        "decided_at": None if needs else now,
        "decision_reason": ok.why,
        "version": 0,
    }
    if not needs:
        row.update(status="executing", started_at=now, version=1)
    return row


def _store_proposal(
    rt: Runtime,
    who: Principal,
    tool: str,
    ok: _Allowed,
    row: dict[str, Any],
    *,
    request_id: str | None,
    origin: Origin,
    now: Any,
) -> _Stored:
    """Look up, count and insert under one write lock: SQLite BEGIN IMMEDIATE; PostgreSQL a
    transaction-scoped advisory lock per (principal, tool), so concurrent workers cannot both take the last
    call. The new action commits with its ``tools.proposed`` entry and, when it runs now, already moved to
    ``executing`` with its ``tools.executing`` entry: every check ``execute`` makes before that move was
    just made by :func:`_check_proposal`, so the call leaves after one commit that records the decision,
    and its outcome is committed after it."""
    out = _Stored()
    limit = ok.reg.spec.rate_limit
    needs = ok.needs
    with rt.audit.transaction() as tx:
        conn = tx.conn
        if not rt.store.is_sqlite:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(who.id, tool)})
        store = rt.store
        if request_id is not None:  # the same request proposing the same call again gets the same action
            found = store.execute_in(
                conn,
                _BY_REQUEST,
                {"request_id": request_id, "requester": who.id, "tool": tool, "args_hash": row["args_hash"]},
            )
            out.existing = row_to_action(rt, found[0]) if found else None
        if out.existing is None and limit is not None:
            counted = store.execute_in(
                conn, _USED, {"requester": who.id, "tool": tool, "since": now - limit.per}
            )
            out.used = int(counted[0][0])
        if out.existing is None and (limit is None or out.used < limit.calls):
            stored = seal_values(rt, row)
            store.execute_in(conn, _INSERT, stored)
            action = out.action = inserted_action(rt, stored, ok.validated)
            # the entries say what they said when the move was a separate step: proposed (approved, or
            # pending), then executing
            entries = [
                audit_fields(
                    who.id,
                    "tools.proposed",
                    action if needs else replace(action, status="approved", version=0, started_at=None),
                    "pending" if needs else "approved",
                    origin=origin,
                    request_id=request_id,
                    approval=ok.why,
                    approver_role=ok.role,
                    policy=list(ok.policy_ids),
                )
            ]
            if not needs:
                entries.append(audit_fields(who.id, "tools.executing", action, "started"))
                out.running = action
            tx.append_many(entries)
    return out


def propose(
    rt: Runtime,
    principal: Principal | str,
    tool: str,
    args: Any,
    *,
    request_id: str | None = None,
    origin: Origin = "api",
    reason: str = "",
    clock: Clock | None = None,
    subject_id: str | None = None,
) -> Proposal:
    """Propose a tool call; see the module docstring for what is checked. Runs it when nothing more is
    needed, else stores a pending approval request. Refusals are audited and raised.

    ``subject_id``: the conversation's subject when the caller knows it (the pipeline does); otherwise the
    tool gets the subject of the draft submitted for ``request_id`` by this principal (see
    :func:`conversation_subject`)."""
    now = clock_of(clock).now()
    if origin not in ORIGINS:
        raise UsageError(f"origin must be one of {', '.join(ORIGINS)}")
    if not isinstance(reason, str) or len(reason) > 10_000:
        raise UsageError("reason must be a string of at most 10,000 characters")
    who = resolve_principal(rt, principal)
    refuse = _Refusal(rt, who.id, tool, {"tool": tool, "origin": origin, "request_id": request_id})
    ok = _check_proposal(rt, who, tool, args, refuse)
    row = _action_row(rt, who, tool, ok, request_id=request_id, origin=origin, reason=reason, now=now)
    done = _store_proposal(rt, who, tool, ok, row, request_id=request_id, origin=origin, now=now)
    existing = done.existing
    if existing is not None:
        if existing.status == "approved" and not existing.needs_approval:
            return Proposal(execute(rt, existing.id, actor=who.id, clock=clock, subject_id=subject_id))
        return Proposal(existing)
    limit = ok.reg.spec.rate_limit
    if limit is not None and done.used >= limit.calls:
        raise refuse(
            f"rate limit: {who.id} used {done.used} of {limit.calls} calls of {tool} per {limit.per}",
            [f"tools.{tool}.rate_limit: {limit.calls} per {limit.per}"],
        )
    if done.running is not None:
        return Proposal(run_action(rt, ok.reg, done.running, who.id, clock_of(clock), subject_id=subject_id))
    assert done.action is not None
    return Proposal(done.action)


# ------------------------------------------------------------------------------------------ execute
def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value, default=str, allow_nan=False))
    except ValueError:
        return json.loads(json.dumps(repr(value)))


def execute(
    rt: Runtime,
    action_id: str,
    *,
    args: dict[str, Any] | None = None,
    actor: str | None = None,
    clock: Clock | None = None,
    subject_id: str | None = None,
) -> Action:
    """Run an approved action exactly once; a retry returns the stored outcome.

    ``args``, when given, must hash to what was approved (an approval for ``pay(50)`` cannot run
    ``pay(500)``). Raises :class:`Denied` if the action is not approved, is bound to other arguments,
    the kill switch is on, the requester lost the right to call the tool, or a precondition fails;
    :class:`Conflict` if it is already executing (or was interrupted by a crash: see ``stuck_actions``).
    """
    clk = clock_of(clock)
    action = get_action(rt, action_id)
    who = actor or action.requester
    if args is not None and args_hash(args) != action.args_hash:
        audit_action(
            rt,
            who,
            "tools.refused",
            action,
            "denied",
            reasons=["arguments differ from the approved ones"],
        )
        raise Denied(
            f"action {action.id} was approved for other arguments",
            reasons=[f"approval bound to args sha256 {action.args_hash[:12]}…, got {args_hash(args)[:12]}…"],
        )
    if action.status in ("executed", "failed"):
        return action
    if action.status == "executing":
        raise Conflict(
            f"action {action.id} is already executing (or was interrupted; see `charter approvals recover`)"
        )
    if action.status != "approved":
        raise Denied(
            f"action {action.id} is {action.status}; it cannot run",
            reasons=[
                f"status {action.status}: needs an approval"
                if action.status in OPEN_STATES
                else f"status {action.status}"
            ],
        )
    if args_hash(action.args) != action.args_hash:
        audit_action(rt, who, "tools.integrity_failed", action, "denied")
        raise IntegrityError(f"action {action.id}: stored arguments do not match their approved hash")
    reg = registered_tool(rt, action.tool)
    requester = resolve_principal(rt, action.requester)
    decision = rt.authorizer.authorize(requester, "tools.call", f"tool:{action.tool}", {"args": action.args})
    if not decision.allowed:
        audit_action(rt, who, "tools.refused", action, "denied", reasons=list(decision.reasons))
        raise Denied(f"{requester.id} may no longer call {action.tool}", reasons=list(decision.reasons))
    if is_killed(rt, action.tool):
        audit_action(rt, who, "tools.refused", action, "denied", reasons=["kill_switch: on"])
        raise Denied(
            f"the kill switch is on for {action.tool}; the approved action waits", reasons=["kill_switch: on"]
        )
    unavailable = reg.unavailable(live=True)  # upstream MCP tools: the live definition still matches its pin
    if unavailable:
        audit_action(rt, who, "tools.refused", action, "denied", reasons=[unavailable])
        raise Denied(f"{unavailable}; the approved action waits", reasons=[f"upstream: {reg.origin}"])
    check_preconditions(rt, reg.spec, action.args, requester)
    running = transition(
        rt,
        action,
        "executing",
        now=clk.now(),
        started_at=clk.now(),
        audit=AuditNote(who, "tools.executing", "started"),
    )
    return run_action(rt, reg, running, who, clk, subject_id=subject_id)


def conversation_subject(rt: Runtime, request_id: str | None, requester: str) -> str | None:
    """The subject of the conversation ``request_id``: the one its requester named when asking (stored on
    the draft they submitted). ``None`` without a request, or when it is someone else's."""
    if not request_id:
        return None
    with rt.store.connect() as conn:
        found = conn.execute(
            select(review_items.c.subject_id)
            .where(review_items.c.request_id == request_id, review_items.c.submitter == requester)
            .order_by(review_items.c.created_at)
            .limit(1)
        ).scalar()
    return str(found) if found else None


def registered_tool(rt: Runtime, tool: str) -> RegisteredTool:
    registry = tool_registry(rt)
    if tool not in registry:
        raise Denied(f"tool {tool!r} is no longer in the workflow's tool list", reasons=[f"tools: {tool}"])
    return registry.get(tool)


def run_action(
    rt: Runtime,
    reg: RegisteredTool,
    running: Action,
    who: str,
    clk: Clock,
    *,
    subject_id: str | None = None,
) -> Action:
    """Call the tool for an action already moved to ``executing``; the context carries the conversation's
    subject (given, else :func:`conversation_subject`) so tools can scope their data to it."""
    ctx = ToolContext(
        idempotency_key=running.id,
        principal_id=running.requester,
        tool=running.tool,
        base_dir=rt.charter.base_dir,
        runtime=rt,
        subject_id=subject_id or conversation_subject(rt, running.request_id, running.requester),
        request_id=running.request_id,
    )
    try:
        result = reg.call(running.args, ctx)
    except Exception as exc:  # the tool's failure is recorded, never lost
        message = str(exc) if isinstance(exc, CharterException) else f"{type(exc).__name__}: {exc}"
        return transition(
            rt,
            running,
            "failed",
            now=clk.now(),
            finished_at=clk.now(),
            error=message[:4000],  # masked by transition (seal_values)
            audit=AuditNote(who, "tools.failed", "failed", {"error": masked(rt, message)}),
        )
    # the result and its audit entry commit together: never an executed action without its entry
    return transition(
        rt,
        running,
        "executed",
        now=clk.now(),
        finished_at=clk.now(),
        result=_jsonable(result),
        audit=AuditNote(who, "tools.executed", "executed"),
    )
