"""Pinning upstream MCP tools: what was approved, and whether the upstream still says the same.

The pin of a tool is the SHA-256 of the canonical JSON of ``{"name", "description", "input_schema"}`` as
the upstream listed them when an owner approved it (``charter tools approve-upstream``). Invariants:

* an upstream tool without a pin, or whose pin is ``drifted``, cannot be proposed or executed;
* every check against the live listing that finds a different hash marks the pin ``drifted`` — at most once
  per change — with an ``mcp.upstream_changed`` audit entry and a warning log naming the server's owner;
  only a new approval (a human's, audited as ``mcp.upstream_pinned``) re-enables the tool;
* arguments are validated against the *pinned* schema, never the live one;
* before a call leaves Charter, :func:`checked_pin` makes sure the pin was compared with the live listing
  no longer ago than the server's ``pin_recheck`` and with no change signalled since (a
  ``tools/list_changed`` notification, a reconnect: see :mod:`charter.tools._mcp_upstream`); otherwise it lists
  the tools again first. So a change the upstream announces is never missed by a later call, and a silent
  one is caught by the first call more than ``pin_recheck`` after the last comparison (``0s``: every call).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from charter.errors import NotFound, UsageError
from charter.spec import canonical_json
from charter.store import utcnow
from charter.store.tables import mcp_pins

if TYPE_CHECKING:
    from charter.runtime import Runtime
    from charter.tools._mcp_upstream import LiveTool

log = logging.getLogger("charter.mcp")


def definition_hash(name: str, description: str, input_schema: dict[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of a tool's name, description and input schema."""
    doc = {"name": name, "description": description, "input_schema": input_schema}
    return hashlib.sha256(canonical_json(doc).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Pin:
    """The approved definition of one upstream tool."""

    server: str
    tool: str
    pin_hash: str
    description: str
    input_schema: dict[str, Any]
    status: str
    live_hash: str | None
    pinned_by: str
    pinned_at: datetime
    checked_at: datetime | None

    @property
    def enabled(self) -> bool:
        return self.status == "pinned"

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "tool": self.tool,
            "pin_hash": self.pin_hash,
            "status": self.status,
            "live_hash": self.live_hash,
            "pinned_by": self.pinned_by,
            "pinned_at": self.pinned_at.isoformat(),
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
        }


def get_pin(rt: Runtime, server: str, tool: str) -> Pin | None:
    with rt.store.connect() as conn:
        row = conn.execute(
            select(mcp_pins).where(mcp_pins.c.server == server, mcp_pins.c.tool == tool)
        ).first()
    if row is None:
        return None
    return Pin(**{c.name: getattr(row, c.name) for c in mcp_pins.columns})


def all_pins(rt: Runtime) -> dict[tuple[str, str], Pin]:
    with rt.store.connect() as conn:
        rows = conn.execute(select(mcp_pins)).all()
    return {(r.server, r.tool): Pin(**{c.name: getattr(r, c.name) for c in mcp_pins.columns}) for r in rows}


def pin_tool(rt: Runtime, server: str, live: LiveTool, actor: str) -> Pin:
    """Record ``live`` as the approved definition (insert or replace), audited as ``mcp.upstream_pinned``."""
    h = definition_hash(live.name, live.description, live.input_schema)
    now = utcnow()
    values = {
        "pin_hash": h,
        "description": live.description,
        "input_schema": live.input_schema,
        "status": "pinned",
        "live_hash": h,
        "pinned_by": actor,
        "pinned_at": now,
        "checked_at": now,
    }
    with rt.audit.transaction() as tx:
        updated = tx.conn.execute(
            mcp_pins.update()
            .where(mcp_pins.c.server == server, mcp_pins.c.tool == live.name)
            .values(**values)
        ).rowcount
        if not updated:
            tx.conn.execute(mcp_pins.insert().values(server=server, tool=live.name, **values))
        tx.append(
            actor=actor,
            action="mcp.upstream_pinned",
            resource=f"mcp:{server}/{live.name}",
            outcome="pinned",
            details={"server": server, "tool": live.name, "hash": h},
        )
    pin = get_pin(rt, server, live.name)
    assert pin is not None
    return pin


def record_live(rt: Runtime, server: str, tool: str, live: LiveTool | None) -> Pin | None:
    """Compare the live definition with the pin; a difference (or a tool gone) disables it.

    Returns the pin as it is now (``None`` when the tool was never pinned)."""
    pin = get_pin(rt, server, tool)
    if pin is None:
        return None
    live_hash = (
        definition_hash(live.name, live.description, live.input_schema) if live is not None else "missing"
    )
    now = utcnow()
    if live_hash == pin.pin_hash:
        if pin.status == "pinned":
            return pin
        # the upstream reverted to exactly what was approved: still disabled until a human re-approves
        with rt.store.begin() as conn:
            conn.execute(
                mcp_pins.update()
                .where(mcp_pins.c.server == server, mcp_pins.c.tool == tool)
                .values(live_hash=live_hash, checked_at=now)
            )
        return get_pin(rt, server, tool)
    if pin.status == "drifted" and pin.live_hash == live_hash:
        return pin
    owner = rt.spec.mcp.server(server).owner
    with rt.audit.transaction() as tx:
        tx.conn.execute(
            mcp_pins.update()
            .where(mcp_pins.c.server == server, mcp_pins.c.tool == tool)
            .values(status="drifted", live_hash=live_hash, checked_at=now)
        )
        tx.append(
            actor="system",
            action="mcp.upstream_changed",
            resource=f"mcp:{server}/{tool}",
            outcome="disabled",
            details={
                "server": server,
                "tool": tool,
                "pinned_hash": pin.pin_hash,
                "live_hash": live_hash,
                "notify": owner,
                "next_step": f"review the change, then: charter tools approve-upstream {server} {tool}",
            },
        )
    log.warning(
        "upstream MCP tool %s/%s changed (pinned %s…, live %s…): disabled; owner %s must review and run "
        "`charter tools approve-upstream %s %s`",
        server,
        tool,
        pin.pin_hash[:12],
        live_hash[:12],
        owner,
        server,
        tool,
    )
    return get_pin(rt, server, tool)


def exposed_tools(rt: Runtime, server: str) -> list[str]:
    """The upstream tool names of ``server`` that some charter tool exposes."""
    return sorted(
        {t.upstream.tool for t in rt.spec.tools if t.upstream is not None and t.upstream.server == server}
    )


def _compare(rt: Runtime, server: str, tools: list[str]) -> dict[str, Pin | None]:
    """List ``server``'s tools now and :func:`record_live` each of ``tools``; remember the result as fresh.
    The caller holds the server's check lock."""
    from charter.tools._mcp_upstream import hub_for

    hub = hub_for(rt)
    started = hub.check_started(server)
    listing = hub.list_tools(server)
    pins = {t: record_live(rt, server, t, listing.get(t)) for t in tools}
    hub.checked(server, started, pins)
    return pins


def recheck_server(rt: Runtime, server: str) -> dict[str, Pin | None]:
    """Compare the live listing of ``server`` with the pins of every exposed tool now (what a
    ``tools/list_changed`` notification triggers)."""
    from charter.tools._mcp_upstream import hub_for

    with hub_for(rt).check_lock(server):
        return _compare(rt, server, exposed_tools(rt, server))


def checked_pin(rt: Runtime, server: str, tool: str) -> Pin | None:
    """The pin of ``tool``, compared with the live listing recently enough to let a call leave now.

    The last comparison is reused while it is fresh: younger than the server's ``pin_recheck`` and with no
    change signalled since it started. Otherwise the tools are listed again and every exposed tool of the
    server is compared; concurrent callers wait for that one listing."""
    from charter.tools._mcp_upstream import hub_for

    hub = hub_for(rt)
    fresh = hub.fresh_pins(server)
    if fresh is not None and tool in fresh:
        return fresh[tool]  # type: ignore[no-any-return]
    with hub.check_lock(server):
        fresh = hub.fresh_pins(server)  # another thread may have compared while this one waited
        if fresh is not None and tool in fresh:
            return fresh[tool]  # type: ignore[no-any-return]
        return _compare(rt, server, sorted(set(exposed_tools(rt, server)) | {tool}))[tool]


def approve_upstream(rt: Runtime, server: str, tools: list[str] | None, actor: str) -> list[Pin]:
    """Pin the *live* definitions of ``tools`` (default: every charter tool from ``server``).

    Only tools the charter exposes can be pinned; the actor must be the server's owner or the incidents
    owner (the people the charter makes responsible for what upstream tools do)."""
    from charter.tools._mcp_upstream import hub_for

    try:
        spec = rt.spec.mcp.server(server)
    except KeyError:
        raise NotFound(f"no MCP server {server!r} in the charter's mcp.servers") from None
    if actor not in (spec.owner, rt.spec.owners.incidents):
        from charter.errors import Denied

        rt.audit.append(
            actor=actor,
            action="mcp.pin_refused",
            resource=f"mcp:{server}",
            outcome="denied",
            details={"reason": "not the server owner or the incidents owner"},
        )
        raise Denied(
            f"{actor} may not approve upstream tools of {server}",
            reasons=[
                f"mcp.servers.{server}.owner is {spec.owner}; owners.incidents is {rt.spec.owners.incidents}"
            ],
        )
    exposed = exposed_tools(rt, server)
    wanted = exposed if not tools else list(tools)
    unknown = [t for t in wanted if t not in exposed]
    if unknown:
        raise UsageError(
            f"{', '.join(unknown)}: not exposed by any charter tool from {server} "
            f"(exposed: {', '.join(exposed) or 'none'}); add a tools[] entry with upstream first"
        )
    live = hub_for(rt).list_tools(server)
    missing = [t for t in wanted if t not in live]
    if missing:
        raise UsageError(f"{server} does not list {', '.join(missing)} now; nothing was pinned")
    try:
        return [pin_tool(rt, server, live[t], actor) for t in wanted]
    finally:
        hub_for(rt).changed(server)  # this process's last comparison predates the new pins
