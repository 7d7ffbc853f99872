"""``charter tools list|call`` and ``charter kill-switch on|off|status``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from charter.cli._app import app
from charter.cli._common import AsOpt, CharterOpt, JsonOpt, acting_principal, console, emit, open_runtime
from charter.errors import UsageError

tools_app = typer.Typer(help="The charter's tools: list them, propose a call.", no_args_is_help=True)
app.add_typer(tools_app, name="tools")


def _approval_text(rule: Any) -> str:
    if rule.rule == "none":
        return "none"
    if rule.rule == "always":
        return f"always: {rule.approver_role}"
    return "; ".join(f"{c.when} → {c.approver_role}" for c in rule.conditions)


@tools_app.command("list")
def tools_list(charter: CharterOpt = None, as_json: JsonOpt = False) -> None:
    """List the charter's tools: effect, roles, approval rule, rate limit, kill switch."""
    from charter.tools import is_killed, tool_registry

    rt = open_runtime(charter)
    registry = tool_registry(rt)
    rows = []
    for t in rt.spec.tools:
        reg = registry.get(t.name)
        rows.append(
            {
                "name": t.name,
                "effect": t.effect,
                "roles": list(t.roles),
                "approval": t.approval.model_dump(mode="json"),
                "approval_text": _approval_text(t.approval),
                "rate_limit": t.rate_limit.model_dump(mode="json") if t.rate_limit else None,
                "requires": list(t.requires),
                "callable": t.callable,
                "origin": reg.origin or "python",
                "killed": is_killed(rt, t.name),
                "description": t.description,
                "args_schema": reg.json_schema(),
            }
        )

    def render(data: list[dict[str, Any]]) -> None:
        table = Table("tool", "effect", "roles", "approval", "rate limit", "requires", "origin", "state")
        for r in data:
            rl = r["rate_limit"]
            table.add_row(
                r["name"],
                r["effect"],
                ", ".join(r["roles"]),
                r["approval_text"],
                f"{rl['calls']}/{rl['per']}" if rl else "-",
                ", ".join(r["requires"]) or "-",
                r["origin"],
                "[red]killed[/]" if r["killed"] else "on",
            )
        console.print(table)

    emit(rows, as_json, render)


@tools_app.command("call")
def tools_call(
    name: Annotated[str, typer.Argument(help="Tool name.")],
    user: AsOpt,
    args: Annotated[str, typer.Option("--args", help="Arguments as a JSON object.")] = "{}",
    reason: Annotated[str, typer.Option(help="Why (recorded with the approval request).")] = "",
    request_id: Annotated[
        str | None, typer.Option("--request-id", help="The request this call belongs to.")
    ] = None,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Propose a tool call. It runs at once only when no approval is needed; otherwise the pending
    approval request's id is printed. A refused call exits 1 with the policy or rule that refused it."""
    from charter.tools import parse_args_json, propose

    rt = open_runtime(charter)
    who = acting_principal(rt, user)
    proposal = propose(
        rt, who, name, parse_args_json(args), request_id=request_id, origin="cli", reason=reason
    )
    data = proposal.to_dict()

    def render(d: dict[str, Any]) -> None:
        if d["status"] == "executed":
            console.print(f"[green]executed[/] {d['tool']} ({d['id']})", highlight=False)
            console.print_json(data=d["result"])
        elif d["status"] == "failed":
            console.print(
                f"[red]failed[/] {d['tool']} ({d['id']}): {d['error']}", highlight=False, soft_wrap=True
            )
        else:
            console.print(
                f"[yellow]pending approval[/] {d['id']}: needs role {d['assigned_role']} "
                f"({d['decision_reason']}); expires {d['expires_at']}",
                highlight=False,
                soft_wrap=True,
            )

    emit(data, as_json, render)
    if proposal.status == "failed":
        raise typer.Exit(1)


@app.command("kill-switch")
def kill_switch(
    state: Annotated[str, typer.Argument(help="on, off or status.")],
    user: Annotated[
        str | None,
        typer.Option(
            "--as", help="Act as this user (owners.incidents or a role with the kill_switch permission)."
        ),
    ] = None,
    tool: Annotated[
        str | None, typer.Option("--tool", help="Only this tool (default: the whole workflow).")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (audited).")] = "",
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Stop (on) or resume (off) the workflow or one tool, at once, for new calls and pending executions."""
    from charter.tools import kill_switch_status, set_kill_switch

    rt = open_runtime(charter)
    if state == "status":
        emit(kill_switch_status(rt), as_json)
        return
    if state not in ("on", "off"):
        raise UsageError("expected on, off or status")
    if not user:
        raise UsageError("--as USER is required to operate the kill switch")
    who = acting_principal(rt, user)
    result = set_kill_switch(rt, who, state == "on", tool=tool, reason=reason)
    emit(
        result,
        as_json,
        lambda r: console.print(
            f"kill switch for {r['target']} is [bold]{'ON' if r['on'] else 'off'}[/] (by {r['by']})",
            highlight=False,
        ),
    )
