"""``charter ask`` and ``charter trace``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.table import Table

from charter.cli._app import app
from charter.cli._common import AsOpt, CharterOpt, JsonOpt, acting_principal, console, emit, open_runtime

trace_app = typer.Typer(help="Read request traces.", no_args_is_help=True)
app.add_typer(trace_app, name="trace")


def _render_answer(r: dict[str, Any]) -> None:
    badge = "[green]answered[/]" if r["status"] == "answered" else f"[yellow]{r['status']}[/]"
    esc = r.get("escalation")
    if esc:
        badge += f" — escalated ({esc['reason']}) to {esc['to']}"
    title = "Answer" if r.get("kind") == "answer" else "Draft"
    console.print(
        Panel(r["draft"] or "(empty)", title=f"{title} {badge}", title_align="left"), highlight=False
    )
    if r["agent_notes"]:
        console.print(
            Panel(
                r["agent_notes"],
                title="Internal notes (not to be sent)",
                title_align="left",
                border_style="blue",
            ),
            highlight=False,
        )
    if r["citations"]:
        t = Table("id", "document", "heading", "source", "link", title="Citations")
        for c in r["citations"]:
            t.add_row(c["id"], c["title"], c["heading"], c["source_id"], c.get("url") or "")
        console.print(t)
    g = r["groundedness"]
    console.print(
        f"groundedness {(f'{g:.2f}') if g is not None else 'n/a'} · model {r['model']} · prompt {r['prompt_version']} · "
        f"tokens {r['input_tokens']}+{r['output_tokens']} · cost ${r['cost_usd']:.5f} · request {r['request_id']}",
        highlight=False,
    )
    console.print(
        "latency ms: " + ", ".join(f"{k} {v:.1f}" for k, v in r["latency_ms"].items()), highlight=False
    )
    if r.get("review_id"):
        console.print(f"queued for review: {r['review_id']}", highlight=False)
    for w in r.get("warnings") or []:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question, as the asker would put it.")],
    user: AsOpt,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
    no_review: Annotated[
        bool, typer.Option("--no-review", help="Do not put the output in the review queue.")
    ] = False,
    subject: Annotated[
        str | None,
        typer.Option(
            "--subject",
            "--customer",
            help="The party the conversation is about, if any: tools see only them and a draft_approved "
            "tool sends only to them.",
        ),
    ] = None,
) -> None:
    """Ask the workflow a question as USER: a cited answer or draft, internal notes, checks, cost and latency."""
    from charter.pipeline import ask as run_ask

    rt = open_runtime(charter)
    principal = acting_principal(rt, user)
    result = run_ask(rt, principal, question, submit_for_review=not no_review, customer_id=subject)
    emit({**result.as_dict(), "kind": rt.spec.workflow.kind}, as_json, _render_answer)


@trace_app.command("show")
def trace_show(
    request_id: Annotated[str, typer.Argument(help="Request id (req_...).")],
    user: AsOpt,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one request's trace (your own, or any with the traces.read_all permission)."""
    from charter import access

    rt = open_runtime(charter)
    principal = acting_principal(rt, user)
    doc = access.visible_trace(rt, principal, request_id)  # 404 for others' traces; unreadable parts redacted

    def render(d: dict[str, Any]) -> None:
        console.print(
            f"[bold]{d['request_id']}[/] {d['status']} at {d['started_at']} model {d.get('model')}",
            highlight=False,
        )
        t = Table("stage", "status", "ms", "attributes")
        for s in d["spans"]:
            t.add_row(s["stage"], s["status"], f"{s['duration_ms']:.1f}", str(s["attributes"])[:200])
        console.print(t)

    emit(doc, as_json, render)
