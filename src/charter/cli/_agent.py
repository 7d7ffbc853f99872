"""``charter agent runs|show|resume``: the runs of an ``agent`` workflow (docs/agents.md)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from charter.cli._app import app
from charter.cli._common import AsOpt, CharterOpt, JsonOpt, acting_principal, console, emit, open_runtime
from charter.errors import Conflict

agent_app = typer.Typer(
    help="Agent runs (workflow.kind: agent): list them, show one, continue those whose approvals are decided.",
    no_args_is_help=True,
)
app.add_typer(agent_app, name="agent")


def _render_runs(items: list[dict[str, Any]]) -> None:
    table = Table("run", "asker", "status", "steps", "waiting on", "stopped because", "updated")
    for r in items:
        table.add_row(
            r["id"],
            r["principal_id"],
            r["status"],
            str(r["steps"]),
            ", ".join(r["waiting_on"]),
            r["stop_reason"] or "",
            r["updated_at"][:19],
        )
    console.print(table)


@agent_app.command("runs")
def agent_runs(
    user: AsOpt,
    status: Annotated[
        str | None, typer.Option("--status", help="running, waiting, completed, stopped or failed.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many, newest first.")] = 50,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Your agent runs (everyone's with traces.read_all), newest first. No task text is shown."""
    from charter.agents import shown_run, visible_runs

    rt = open_runtime(charter)
    who = acting_principal(rt, user)
    emit(
        [shown_run(r, who) for r in visible_runs(rt, who, status=status, limit=limit)], as_json, _render_runs
    )


@agent_app.command("show")
def agent_show(run_id: str, user: AsOpt, charter: CharterOpt = None, as_json: JsonOpt = False) -> None:
    """One run's state; its final answer when you are its asker."""
    from charter.agents import shown_run, visible_run

    rt = open_runtime(charter)
    who = acting_principal(rt, user)
    doc = shown_run(visible_run(rt, who, run_id), who)

    def render(d: dict[str, Any]) -> None:
        _render_runs([d])
        if d.get("result"):
            console.print(d["result"].get("draft") or "", highlight=False)

    emit(doc, as_json, render)


@agent_app.command("resume")
def agent_resume(
    run_id: Annotated[
        str | None, typer.Argument(help="The run; without it, every run that can go on.")
    ] = None,
    user: AsOpt = "",
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Continue runs whose approvals are decided (a running server does this by itself)."""
    from charter.agents import resume_ready, resume_run, visible_run
    from charter.cli._ask import _render_answer

    rt = open_runtime(charter)
    if run_id is None:
        acting_principal(rt, user)
        advanced = resume_ready(rt)
        emit({"resumed": advanced}, as_json, lambda d: console.print(f"resumed {len(d['resumed'])} run(s)"))
        return
    who = acting_principal(rt, user)
    visible_run(rt, who, run_id)
    result = resume_run(rt, run_id)
    if result is None:
        raise Conflict(f"agent run {run_id} cannot go on now (an approval is open, or it is not waiting)")
    emit({**result.as_dict(), "kind": "agent"}, as_json, _render_answer)
