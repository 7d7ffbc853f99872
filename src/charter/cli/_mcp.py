"""``charter mcp --as USER`` (serve over stdio), ``charter mcp servers`` and ``charter tools approve-upstream``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from charter.cli._app import app
from charter.cli._common import AsOpt, CharterOpt, JsonOpt, acting_principal, console, emit, open_runtime
from charter.cli._tools import tools_app
from charter.errors import UsageError

mcp_app = typer.Typer(
    help="Model Context Protocol: serve the workflow to MCP clients (`charter mcp --as USER`, stdio), and "
    "inspect the upstream MCP servers the charter's tools come from.",
    invoke_without_command=True,
)
app.add_typer(mcp_app, name="mcp")


@mcp_app.callback()
def mcp_serve(
    ctx: typer.Context,
    user: Annotated[
        str | None,
        typer.Option(
            "--as", help="Serve as this user (stdio, for a local MCP client such as Claude Desktop)."
        ),
    ] = None,
    charter: CharterOpt = None,
) -> None:
    """Serve the workflow over MCP on stdin/stdout as USER: `ask`, `search`, the tools USER may call, and the
    documents USER may read. Every call is authorised, budgeted, masked, traced and audited."""
    if ctx.invoked_subcommand is not None:
        return
    if not user:
        raise UsageError("name the user to serve as: charter mcp --as USER (or see: charter mcp --help)")
    import anyio

    from charter.mcp import serve_stdio

    rt = open_runtime(charter)
    try:
        acting_principal(rt, user)
        anyio.run(serve_stdio, rt, user)
    finally:
        rt.close()


def server_status(rt: Any) -> list[dict[str, Any]]:
    """Per declared server: transport, reachability, and for each charter tool it backs the pinned and
    live hashes (a live hash that differs from the pin disables the tool, audited)."""
    from charter.mcp import definition_hash, get_pin, hub_for, record_live

    out: list[dict[str, Any]] = []
    for s in rt.spec.mcp.servers:
        row: dict[str, Any] = {
            "server": s.id,
            "transport": "stdio" if s.command else "http",
            "target": " ".join(s.command) if s.command else s.url,
            "owner": s.owner,
            "timeout_s": s.timeout.total_seconds(),
            "max_result_chars": s.max_result_chars,
            "status": "ok",
            "error": None,
            "tools": [],
        }
        live: dict[str, Any] | None
        try:
            live = hub_for(rt).list_tools(s.id)
        except Exception as exc:
            live = None
            row["status"], row["error"] = "unreachable", str(exc)
        for t in rt.spec.tools:
            if t.upstream is None or t.upstream.server != s.id:
                continue
            lt = live.get(t.upstream.tool) if live is not None else None
            live_hash = definition_hash(lt.name, lt.description, lt.input_schema) if lt is not None else None
            pin = get_pin(rt, s.id, t.upstream.tool)
            if pin is not None and live is not None:
                pin = record_live(rt, s.id, t.upstream.tool, lt)
            state = (
                "unpinned"
                if pin is None
                else ("missing upstream" if live is not None and lt is None else pin.status)
            )
            row["tools"].append(
                {
                    "tool": t.name,
                    "upstream_tool": t.upstream.tool,
                    "effect": t.effect,
                    "pinned_hash": pin.pin_hash if pin else None,
                    "live_hash": live_hash,
                    "state": state,
                    "pinned_by": pin.pinned_by if pin else None,
                }
            )
        out.append(row)
    return out


@mcp_app.command("servers")
def mcp_servers(charter: CharterOpt = None, as_json: JsonOpt = False) -> None:
    """Upstream MCP servers: reachability and, per exposed tool, pinned vs. live hash and state."""
    rt = open_runtime(charter)
    try:
        rows = server_status(rt)
    finally:
        rt.close()

    def render(data: list[dict[str, Any]]) -> None:
        if not data:
            console.print("No upstream MCP servers in this charter (mcp.servers).")
            return
        table = Table("server", "tool", "upstream tool", "effect", "pinned", "live", "state")
        for r in data:
            if not r["tools"]:
                table.add_row(r["server"], "-", "-", "-", "-", "-", r["status"])
            for t in r["tools"]:
                state = t["state"]
                style = "green" if state == "pinned" else "red"
                table.add_row(
                    r["server"],
                    t["tool"],
                    t["upstream_tool"],
                    t["effect"],
                    (t["pinned_hash"] or "-")[:12],
                    (t["live_hash"] or "-")[:12],
                    f"[{style}]{state}[/]" if r["status"] == "ok" else f"[red]{r['status']}[/]",
                )
        console.print(table)
        for r in data:
            if r["error"]:
                console.print(f"[red]{r['server']}:[/] {r['error']}", highlight=False)

    emit(rows, as_json, render)


@tools_app.command("approve-upstream")
def approve_upstream_cmd(
    server: Annotated[str, typer.Argument(help="Server id (mcp.servers).")],
    user: AsOpt,
    tools: Annotated[
        list[str] | None,
        typer.Argument(help="Upstream tool names (default: every tool the charter exposes)."),
    ] = None,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Pin (or re-pin after a change) the live name, description and input schema of upstream tools.

    Review what changed first (`charter mcp servers`); only the server's owner or the incidents owner may
    approve."""
    from charter.mcp import approve_upstream

    rt = open_runtime(charter)
    try:
        principal = acting_principal(rt, user)
        pins = [p.to_dict() for p in approve_upstream(rt, server, tools or None, principal.id)]
    finally:
        rt.close()

    def render(data: list[dict[str, Any]]) -> None:
        for p in data:
            console.print(f"pinned {p['server']}/{p['tool']} at {p['pin_hash'][:12]}… by {p['pinned_by']}")

    emit(pins, as_json, render)
