"""Stored actions: the :class:`Action` record, the :class:`Proposal` returned by ``propose``, reads, and the
optimistic-concurrency transition every state change goes through."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import bindparam, select

from charter.errors import Conflict, Denied, NotFound, UsageError
from charter.spec import Principal
from charter.store import sealer_for
from charter.store.tables import tool_actions

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from charter.runtime import Runtime
    from charter.store.clock import Clock
    from charter.telemetry.audit import AuditTransaction

Origin = Literal["api", "model", "cli", "mcp"]
ORIGINS = ("api", "model", "cli", "mcp")
OPEN_STATES = ("pending", "escalated")
STATES = ("pending", "approved", "rejected", "expired", "escalated", "executing", "executed", "failed")


@dataclass(frozen=True)
class Action:
    """One proposed tool call: its approval state and (once run) its stored outcome."""

    id: str
    request_id: str | None
    tool: str
    requester: str
    origin: str
    args: dict[str, Any]
    args_hash: str
    reason: str
    status: str
    needs_approval: bool
    required_role: str | None
    assigned_role: str | None
    escalation_level: int
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    sla_due_at: datetime | None
    decided_by: str | None
    decided_at: datetime | None
    decision_reason: str | None
    started_at: datetime | None
    finished_at: datetime | None
    result: Any
    error: str | None
    version: int
    #: ``args`` as they may be shown (masked by the runtime's masker); ``args`` itself is for execution only.
    shown_args: Any = None

    def to_dict(self) -> dict[str, Any]:
        """The action as it may be shown: arguments masked, never the raw ones."""
        out = {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(self).items()}
        out["args"] = out.pop("shown_args")
        return out


@dataclass(frozen=True)
class Proposal:
    """What ``propose`` returns: the stored action, and whether it ran or waits for an approval."""

    action: Action

    @property
    def id(self) -> str:
        return self.action.id

    @property
    def status(self) -> str:
        return self.action.status

    @property
    def executed(self) -> bool:
        return self.action.status == "executed"

    @property
    def approval_id(self) -> str | None:
        """The approval request's id while one is needed, else None."""
        return self.action.id if self.action.status in OPEN_STATES else None

    @property
    def result(self) -> Any:
        return self.action.result

    def to_dict(self) -> dict[str, Any]:
        return {**self.action.to_dict(), "approval_id": self.approval_id}


def clock_of(clock: Clock | None) -> Clock:
    from charter.store.clock import clock_or_default

    return clock_or_default(clock)


def resolve_principal(rt: Runtime, principal: Principal | str) -> Principal:
    """The charter's own view of a principal (roles are never taken from the caller); must be active."""
    pid = principal.id if isinstance(principal, Principal) else principal
    known = rt.charter.principal(pid)
    if not known.active:
        raise Denied(f"principal {pid!r} is not active", reasons=["identity.inactive"])
    return known


_UNSET: Any = object()


def row_to_action(
    rt: Runtime, row: Any, *, known: Action | None = None, result: Any = _UNSET, args: Any = _UNSET
) -> Action:
    """A stored row as an :class:`Action`: arguments and result unsealed, ``shown_args`` masked.

    ``known``: the same action as read before a write that left its arguments alone, so they (and their
    masked form) are taken from it instead of being unsealed and masked again; ``result``: the value just
    sealed into the row (JSON already), likewise, else ``known``'s result; ``args``: the arguments just
    sealed into a new row (they are masked here, not unsealed)."""
    from charter.telemetry import mask_value

    values = {c.name: getattr(row, c.name) for c in tool_actions.columns}
    if known is not None:
        values["args"] = known.args
        values["result"] = known.result if result is _UNSET else result
        return Action(**values, shown_args=known.shown_args)
    sealer = sealer_for(rt)
    values["args"] = sealer.open_json(values["args"]) if args is _UNSET else args
    values["result"] = sealer.open_json(values["result"]) if result is _UNSET else result
    return Action(**values, shown_args=mask_value(rt, values["args"]))


def inserted_action(rt: Runtime, stored: dict[str, Any], args: dict[str, Any]) -> Action:
    """The :class:`Action` a new row holds, from the column values just inserted (``stored``, as
    :func:`seal_values` made them) and the unsealed ``args`` — what reading the row back would give
    (timestamps as UTC, the result still empty), without the read."""
    from charter.telemetry import mask_value

    values: dict[str, Any] = {c.name: stored.get(c.name) for c in tool_actions.columns}
    for name, value in values.items():
        if isinstance(value, datetime):
            values[name] = value.astimezone(UTC)
    values["args"] = args
    values["result"] = None
    return Action(**values, shown_args=mask_value(rt, args))


def seal_values(rt: Runtime, values: dict[str, Any]) -> dict[str, Any]:
    """Column values as stored: ``args`` and ``result`` sealed (encrypted, see ``charter.store._sealing``)
    — the arguments are needed verbatim to execute the call, so they cannot be masked at rest — and the
    free-text ``reason``, ``decision_reason`` and ``error`` masked."""
    out = dict(values)
    sealer = sealer_for(rt)
    for name in ("args", "result"):
        if name in out and out[name] is not None:
            out[name] = sealer.seal_json(out[name])
    for name in ("reason", "decision_reason", "error"):
        if isinstance(out.get(name), str):
            out[name] = masked(rt, out[name], limit=10_000)
    return out


def get_action(rt: Runtime, action_id: str, *, conn: Connection | None = None) -> Action:
    """The action (approval request) with this id; :class:`NotFound` if there is none."""
    query = select(tool_actions).where(tool_actions.c.id == action_id)
    if conn is not None:
        row = conn.execute(query).first()
    else:
        with rt.store.connect() as c:
            row = c.execute(query).first()
    if row is None:
        raise NotFound(f"no action or approval request {action_id!r}")
    return row_to_action(rt, row)


def list_actions(
    rt: Runtime,
    *,
    status: str | list[str] | None = None,
    requester: str | None = None,
    tool: str | None = None,
    request_id: str | None = None,
    needs_approval: bool | None = None,
    limit: int = 200,
) -> list[Action]:
    """Actions, newest first, filtered by status(es), requester, tool, request or approval need."""
    query = select(tool_actions).order_by(tool_actions.c.created_at.desc(), tool_actions.c.id).limit(limit)
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        unknown = [s for s in statuses if s not in STATES]
        if unknown:
            raise UsageError(f"unknown status {unknown[0]!r}; expected one of: {', '.join(STATES)}")
        query = query.where(tool_actions.c.status.in_(statuses))
    if requester is not None:
        query = query.where(tool_actions.c.requester == requester)
    if tool is not None:
        query = query.where(tool_actions.c.tool == tool)
    if request_id is not None:
        query = query.where(tool_actions.c.request_id == request_id)
    if needs_approval is not None:
        query = query.where(tool_actions.c.needs_approval == needs_approval)
    with rt.store.connect() as conn:
        return [row_to_action(rt, r) for r in conn.execute(query)]


_updates: dict[tuple[tuple[str, ...], int], Any] = {}


def _update_for(columns: tuple[str, ...], sources: int) -> Any:
    """The optimistic-concurrency ``UPDATE … RETURNING`` setting ``columns`` for a move from one of
    ``sources`` states, built once per shape, with every value a bound parameter (``set_<column>``;
    ``w_id``, ``w_version``, ``w_from_<i>``), so the store can keep it compiled."""
    stmt = _updates.get((columns, sources))
    if stmt is None:
        stmt = _updates[(columns, sources)] = (
            tool_actions.update()
            .where(
                tool_actions.c.id == bindparam("w_id"),
                tool_actions.c.version == bindparam("w_version"),
                tool_actions.c.status.in_([bindparam(f"w_from_{i}") for i in range(sources)]),
            )
            .values({c: bindparam(f"set_{c}", type_=tool_actions.c[c].type) for c in columns})
            .returning(*tool_actions.columns)  # the moved row, without reading it again
        )
    return stmt


def transition(
    rt: Runtime,
    action: Action,
    to: str,
    *,
    now: datetime,
    allowed_from: tuple[str, ...] | None = None,
    audit: AuditNote | None = None,
    tx: AuditTransaction | None = None,
    **values: Any,
) -> Action:
    """Move ``action`` to state ``to`` if nobody changed it since it was read; else :class:`Conflict`.

    With ``audit``, the audit entry is appended in the same transaction: the new state and its entry are
    stored together or not at all (a crash or a lost database between the two cannot leave an
    ``executed`` action without its ``tools.executed`` entry). ``tx``: run inside this open audit
    transaction (it commits, or not, with the caller's other writes) instead of a new one."""
    sets = {"status": to, "version": action.version + 1, "updated_at": now, **seal_values(rt, values)}
    sources = allowed_from or (action.status,)
    params = {
        **{f"set_{k}": v for k, v in sets.items()},
        "w_id": action.id,
        "w_version": action.version,
        **{f"w_from_{i}": s for i, s in enumerate(sources)},
    }
    stmt = _update_for(tuple(sorted(sets)), len(sources))

    def move(conn: Connection) -> Action:
        rows = rt.store.execute_in(conn, stmt, params)
        row = rows[0] if rows else None
        if row is None:
            raise Conflict(f"action {action.id} was changed concurrently; re-read it and retry")
        # a transition never changes the arguments: reuse the unsealed (and masked) ones
        return row_to_action(rt, row, known=action, result=values.get("result", _UNSET))

    if tx is not None:
        moved = move(tx.conn)
        if audit is not None:
            tx.append(**_audit_fields(audit.actor, audit.action, moved, audit.outcome, audit.details))
        return moved
    if audit is None:
        with rt.store.begin() as conn:
            return move(conn)
    with rt.audit.transaction() as atx:
        moved = move(atx.conn)
        atx.append(**_audit_fields(audit.actor, audit.action, moved, audit.outcome, audit.details))
    return moved


@dataclass(frozen=True)
class AuditNote:
    """The audit entry a :func:`transition` writes with the state change."""

    actor: str
    action: str
    outcome: str
    details: dict[str, Any] = field(default_factory=dict)


def _audit_fields(
    actor: str, action: str, act: Action | None, outcome: str, details: dict[str, Any]
) -> dict[str, Any]:
    resource = f"action:{act.id}" if act else f"tool:{details.get('tool', '?')}"
    if act is not None:
        details = {
            "tool": act.tool,
            "requester": act.requester,
            "args_hash": act.args_hash,
            "status": act.status,
            **details,
        }
    return {"actor": actor, "action": action, "resource": resource, "outcome": outcome, "details": details}


def audit_fields(actor: str, action: str, act: Action | None, outcome: str, **details: Any) -> dict[str, Any]:
    """The audit entry of an action event, as :func:`audit_action` appends it (for a batch of entries)."""
    return _audit_fields(actor, action, act, outcome, details)


def audit_action(
    rt: Runtime,
    actor: str,
    action: str,
    act: Action | None,
    outcome: str,
    *,
    tx: AuditTransaction | None = None,
    **details: Any,
) -> None:
    """Append the audit entry of an action event (inside ``tx`` when given, else in its own transaction)."""
    fields = _audit_fields(actor, action, act, outcome, details)
    if tx is not None:
        tx.append(**fields)
    else:
        rt.audit.append(**fields)


def masked(rt: Runtime, text: str, limit: int = 1000) -> str:
    """Free text a person (or a tool's error) wrote — a reason, a comment — as it may be recorded: masked
    at the telemetry choke point (fail closed) and cut to ``limit`` characters."""
    from charter.telemetry import mask_text

    return (mask_text(rt, text[:limit]) or "") if text else ""
