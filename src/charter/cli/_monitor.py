"""Monitoring commands: ``traces list``, ``feedback``, ``metrics``, ``report``, ``retention apply``."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from charter.cli._app import app
from charter.cli._common import AsOpt, CharterOpt, JsonOpt, acting_principal, console, emit, open_runtime
from charter.errors import Denied, UsageError

traces_app = typer.Typer(
    help="Request traces: list them, show one (masked; principals are pseudonymous).", no_args_is_help=True
)
app.add_typer(traces_app, name="traces")
# ``charter trace show`` was the first name of ``charter traces show``; kept (hidden) for existing scripts.
_old_trace_app = typer.Typer(help="Same as `charter traces show`.", no_args_is_help=True)
app.add_typer(_old_trace_app, name="trace", hidden=True)
retention_app = typer.Typer(help="Enforce the charter's monitoring.retention.", no_args_is_help=True)
app.add_typer(retention_app, name="retention")

SinceOpt = Annotated[str, typer.Option("--since", help="How far back, e.g. 24h, 7d, 30d.")]


def _duration(text: str) -> timedelta:
    from charter.spec import parse_duration

    try:
        return parse_duration(text)
    except Exception as exc:
        raise UsageError(f"--since: {exc}") from None


def _workflow(rt: Any) -> str:
    return f"workflow:{rt.spec.workflow.id}"


@traces_app.command("list")
def traces_list(
    user: AsOpt,
    since: SinceOpt = "7d",
    status: Annotated[
        str | None, typer.Option("--status", help="answered, needs_human, refused or error.")
    ] = None,
    of_user: Annotated[
        str | None,
        typer.Option("--user", help="Only this user's requests (needs traces.read_all unless it is you)."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Recent requests: your own, or everyone's with the traces.read_all permission."""
    from charter import access
    from charter.store import utcnow
    from charter.telemetry import trace_store_for

    rt = open_runtime(charter)
    principal = acting_principal(rt, user)
    store = trace_store_for(rt)
    may_read_all = access.may_list_all_traces(rt, principal)
    target = of_user if of_user is not None else (None if may_read_all else principal.id)
    if target is not None and target != principal.id and not may_read_all:
        raise Denied(
            f"{principal.id} may only list their own traces", reasons=["no traces.read_all permission"]
        )
    rows = store.list(
        since=utcnow() - _duration(since),
        status=status,
        principal_id=store.principal_key(target) if target is not None else None,
        limit=limit,
    )
    data = [{**r, "started_at": r["started_at"].isoformat()} for r in rows]

    def render(items: list[dict[str, Any]]) -> None:
        t = Table(
            "request",
            "started",
            "user (pseudonymous)",
            "status",
            "prompt",
            "ms",
            "cost",
            "escalation",
            "error",
            title=f"{len(items)} traces",
        )
        for r in items:
            t.add_row(
                r["request_id"],
                r["started_at"][:19],
                str(r["principal_id"])[:20],
                r["status"],
                str(r["prompt_version"] or ""),
                f"{r['latency_ms']:.0f}",
                f"{r['cost_usd']:.5f}",
                str(r["escalation"] or ""),
                str(r["error_type"] or ""),
            )
        console.print(t)

    emit(data, as_json, render)


@app.command()
def feedback(
    request_id: Annotated[str, typer.Argument(help="The request (req_...).")],
    rating: Annotated[str, typer.Argument(help="up or down.")],
    user: AsOpt,
    reason: Annotated[
        list[str] | None, typer.Option("--reason", help="A reason category (repeatable).")
    ] = None,
    comment: Annotated[str | None, typer.Option("--comment", help="Free text (stored masked).")] = None,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rate an answer (thumbs up/down, reason categories, comment), linked to its request."""
    from charter.telemetry import record_feedback

    rt = open_runtime(charter)
    principal = acting_principal(rt, user)
    fid = record_feedback(rt, request_id, principal, rating=rating, reasons=reason or [], comment=comment)
    emit(
        {"feedback_id": fid, "request_id": request_id},
        as_json,
        lambda d: console.print(f"recorded {d['feedback_id']} for {d['request_id']}", highlight=False),
    )


@app.command()
def metrics(charter: CharterOpt = None) -> None:
    """Print the Prometheus metrics (text exposition format), computed from the database."""
    from charter.telemetry import metrics_for

    rt = open_runtime(charter)
    typer.echo(metrics_for(rt).exposition(), nl=False)


@app.command()
def report(
    user: AsOpt,
    since: SinceOpt = "7d",
    fmt: Annotated[str, typer.Option("--format", help="md, html or json.")] = "md",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
    min_support: Annotated[
        int, typer.Option("--min-support", min=1, help="Rated citations needed to blame a document.")
    ] = 5,
    trend_window: Annotated[
        str, typer.Option("--trend-window", help="Window of the trends over time and the failure clusters.")
    ] = "28d",
    semantic: Annotated[
        bool, typer.Option("--semantic", help="Cluster failing questions by the index's embeddings.")
    ] = False,
    charter: CharterOpt = None,
) -> None:
    """The operator report: usage, quality, cost, trends over time with change points, repeating failures
    from production (categories and question clusters, with owners), source blame."""
    from charter.telemetry import build_report, render_report

    if fmt not in ("md", "html", "json"):
        raise UsageError(f"--format must be md, html or json (got {fmt!r})")
    rt = open_runtime(charter)
    principal = acting_principal(rt, user)
    decision = rt.authorizer.authorize(principal, "reports.read", _workflow(rt))
    if not decision.allowed:
        raise Denied(
            f"{principal.id} may not read reports", reasons=list(decision.reasons) or ["no reports.read"]
        )
    embed = None
    if semantic:
        from charter.retrieval import Index

        emb = Index.for_runtime(rt).embedder
        embed = lambda texts: [list(map(float, v)) for v in emb.embed(list(texts))]  # noqa: E731
    report_doc = build_report(
        rt,
        since=_duration(since),
        min_support=min_support,
        trend_window=_duration(trend_window),
        embed=embed,
        principal=principal,
    )
    text = render_report(report_doc, fmt)
    if output is not None:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}", highlight=False)
    else:
        typer.echo(text, nl=False)


@retention_app.command("apply")
def retention_apply(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only count what would be deleted.")] = False,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete traces and feedback older than monitoring.retention (the audit chain is untouched)."""
    from charter.telemetry import apply_retention

    rt = open_runtime(charter)
    result = apply_retention(rt, dry_run=dry_run)
    emit(
        result.as_dict(),
        as_json,
        lambda d: console.print(
            f"{'would delete' if dry_run else 'deleted'} {d['traces']} traces, {d['spans']} spans, "
            f"{d['feedback']} feedback older than {d['cutoff']}",
            highlight=False,
        ),
    )


@traces_app.command("show")
def trace_show(
    request_id: Annotated[str, typer.Argument(help="Request id (req_...).")],
    user: AsOpt,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show one request's trace (your own, or any with the traces.read_all permission)."""
    from charter.telemetry import visible_trace

    rt = open_runtime(charter)
    principal = acting_principal(rt, user)
    doc = visible_trace(rt, principal, request_id)  # 404 for others' traces; unreadable parts redacted

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


_old_trace_app.command("show", help="Same as `charter traces show`.")(trace_show)
