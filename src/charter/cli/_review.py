"""``charter review list|show|approve|edit|reject|tick|stats`` and ``charter approvals list|show|approve|
reject|recover``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from charter.cli._app import app
from charter.cli._common import AsOpt, CharterOpt, JsonOpt, acting_principal, console, emit, open_runtime
from charter.errors import Denied, UsageError

review_app = typer.Typer(help="The review queue for drafts, and SLA timers.", no_args_is_help=True)
approvals_app = typer.Typer(help="Approval requests for tool actions.", no_args_is_help=True)
app.add_typer(review_app, name="review")
app.add_typer(approvals_app, name="approvals")

StatusOpt = Annotated[str | None, typer.Option("--status", help="Only items in this state.")]
AllOpt = Annotated[bool, typer.Option("--all", help="Every item, not only yours and those you may decide.")]


def _short(dt: str | None) -> str:
    return dt[:16].replace("T", " ") if dt else "-"


# -------------------------------------------------------------------------------------------- approvals
def _render_actions(items: list[dict[str, Any]]) -> None:
    table = Table("id", "tool", "requester", "args", "status", "with role", "SLA due", "expires")
    for a in items:
        table.add_row(
            a["id"],
            a["tool"],
            a["requester"],
            str(a["args"])[:60],
            a["status"],
            a["assigned_role"] or "-",
            _short(a["sla_due_at"]),
            _short(a["expires_at"]),
        )
    console.print(table)


@approvals_app.command("list")
def approvals_list(
    user: AsOpt,
    status: StatusOpt = None,
    show_all: AllOpt = False,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approval requests you asked for or may decide (newest first)."""
    from charter.review import list_approvals

    rt = open_runtime(charter)
    who = acting_principal(rt, user)
    items = list_approvals(rt, status=status, principal=None if show_all else who)
    emit([a.to_dict() for a in items], as_json, _render_actions)


@approvals_app.command("show")
def approvals_show(
    approval_id: str, user: AsOpt, charter: CharterOpt = None, as_json: JsonOpt = False
) -> None:
    """One approval request: tool, exact arguments and their hash, state, who may decide, outcome."""
    from charter.review import approver_roles, visible_approval

    rt = open_runtime(charter)
    who = acting_principal(rt, user)
    action = visible_approval(rt, who, approval_id)
    emit({**action.to_dict(), "approver_roles": approver_roles(rt, action)}, as_json)


def _decide(
    approval_id: str, user: str, decision: str, reason: str, charter: Path | None, as_json: bool
) -> None:
    from charter.review import decide_approval

    rt = open_runtime(charter)
    who = acting_principal(rt, user)
    action = decide_approval(rt, approval_id, who, decision, reason=reason)  # type: ignore[arg-type]
    emit(
        action.to_dict(),
        as_json,
        lambda d: console.print(
            f"{d['id']}: [bold]{d['status']}[/]" + (f" — {d['error']}" if d.get("error") else ""),
            highlight=False,
            soft_wrap=True,
        ),
    )
    if rt.spec.workflow.kind == "agent" and action.status != "pending":
        from charter.agents import resume_ready

        resumed = resume_ready(rt)  # the run that waited for this decision goes on now
        if resumed and not as_json:
            console.print(f"continued agent run(s): {', '.join(resumed)}", highlight=False)
    if action.status == "failed":
        raise typer.Exit(1)


@approvals_app.command("approve")
def approvals_approve(
    approval_id: str,
    user: AsOpt,
    reason: Annotated[str, typer.Option(help="Why (audited).")] = "",
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a request; the action then runs exactly once."""
    _decide(approval_id, user, "approve", reason, charter, as_json)


@approvals_app.command("reject")
def approvals_reject(
    approval_id: str,
    user: AsOpt,
    reason: Annotated[str, typer.Option(help="Why (required, audited).")] = "",
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject a request (a reason is required)."""
    _decide(approval_id, user, "reject", reason, charter, as_json)


@approvals_app.command("recover")
def approvals_recover(
    user: AsOpt,
    resolve: Annotated[str | None, typer.Option(help="Resolve this stuck action.")] = None,
    outcome: Annotated[
        str | None, typer.Option(help="executed, failed or retry (idempotent tools only).")
    ] = None,
    reason: Annotated[str, typer.Option(help="What you checked (required with --resolve).")] = "",
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List actions left ``executing`` by a crash; with ``--resolve ID --outcome …`` record what happened."""
    from charter.tools import resolve_stuck, stuck_actions

    rt = open_runtime(charter)
    who = acting_principal(rt, user)
    if resolve is None:
        emit([a.to_dict() for a in stuck_actions(rt)], as_json, _render_actions)
        return
    if outcome not in ("executed", "failed", "retry"):
        raise UsageError("--outcome must be executed, failed or retry")
    action = resolve_stuck(rt, resolve, who, outcome, reason=reason)  # type: ignore[arg-type]
    emit(
        action.to_dict(),
        as_json,
        lambda d: console.print(f"{d['id']}: [bold]{d['status']}[/]", highlight=False),
    )


# -------------------------------------------------------------------------------------------- drafts
def _render_reviews(items: list[dict[str, Any]]) -> None:
    table = Table("id", "submitter", "question", "status", "reason", "with role", "SLA due")
    for r in items:
        table.add_row(
            r["id"],
            r["submitter"],
            r["question"][:50],
            r["status"],
            r["escalation_reason"] or "-",
            r["assigned_role"] or "-",
            _short(r["sla_due_at"]),
        )
    console.print(table)


def _render_review(d: dict[str, Any]) -> None:
    console.print(
        f"[bold]{d['id']}[/] {d['status']} (with {d['assigned_role'] or '-'}, SLA {_short(d['sla_due_at'])},"
        f" escalation: {d['escalation_reason'] or 'none'}, groundedness: {d['groundedness']})",
        highlight=False,
    )
    console.print(f"[bold]question[/]: {d['question']}", highlight=False, soft_wrap=True)
    console.print(f"[bold]draft[/]:\n{d['draft']}", highlight=False, soft_wrap=True)
    if d["citations"]:
        console.print(f"[bold]citations[/]: {d['citations']}", highlight=False, soft_wrap=True)
    if d["agent_notes"]:
        console.print(f"[bold]agent notes[/]: {d['agent_notes']}", highlight=False, soft_wrap=True)
    if d["decision"]:
        console.print(
            f"[bold]decision[/]: {d['decision']} by {d['decided_by']} {d['reject_reason'] or ''} "
            f"{d['comment'] or ''}",
            highlight=False,
            soft_wrap=True,
        )
    if d.get("routing"):
        console.print(f"[bold]routing[/]: {d['routing']}", highlight=False, soft_wrap=True)
    if d.get("edited_by") and d["status"] in ("pending", "escalated"):
        console.print(
            f"[bold]edit by {d['edited_by']}[/] waits for another reviewer's approval; checks: "
            f"{d.get('edit_checks')}",
            highlight=False,
            soft_wrap=True,
        )
    if d["diff"]:
        console.print(d["diff"], highlight=False, markup=False)


@review_app.command("list")
def review_list(
    user: AsOpt,
    status: StatusOpt = None,
    show_all: AllOpt = False,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Drafts you submitted or may decide (newest first); escalated ones show their role and SLA.

    ``--all`` (with ``traces.read_all``) lists every item, each shown as you may read it (parts from sources
    you cannot read are redacted)."""
    from charter import access
    from charter.review import list_reviews, redact_review

    rt = open_runtime(charter)
    who = acting_principal(rt, user)
    if show_all and not access.may_list_all_traces(rt, who):
        raise Denied(f"{who.id} may not list every draft", reasons=["--all needs traces.read_all"])
    items = list_reviews(rt, status=status, principal=None if show_all else who)
    emit([redact_review(rt, who, i) for i in items], as_json, _render_reviews)


@review_app.command("show")
def review_show(item_id: str, user: AsOpt, charter: CharterOpt = None, as_json: JsonOpt = False) -> None:
    """One draft with its citations, groundedness, escalation and decision: yours, or one you may decide
    (anything else answers "no review item", the same as a missing id)."""
    from charter.review import redact_review, visible_review

    rt = open_runtime(charter)
    who = acting_principal(rt, user)
    item = visible_review(rt, who, item_id)
    emit(redact_review(rt, who, item), as_json, _render_review)


def _decide_draft(
    item_id: str, user: str, decision: str, charter: Path | None, as_json: bool, **kw: Any
) -> None:
    from charter.review import decide_draft, redact_review, visible_review

    rt = open_runtime(charter)
    who = acting_principal(rt, user)
    visible_review(rt, who, item_id)
    item = decide_draft(rt, item_id, who, decision, **kw)  # type: ignore[arg-type]
    emit(redact_review(rt, who, item), as_json, _render_review)


@review_app.command("approve")
def review_approve(
    item_id: str,
    user: AsOpt,
    comment: Annotated[str, typer.Option()] = "",
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a draft as it is."""
    _decide_draft(item_id, user, "approve", charter, as_json, comment=comment)


@review_app.command("edit")
def review_edit(
    item_id: str,
    user: AsOpt,
    text: Annotated[str | None, typer.Option(help="The edited reply.")] = None,
    text_file: Annotated[
        Path | None, typer.Option("--file", help="Read the edited reply from a file.")
    ] = None,
    comment: Annotated[str, typer.Option()] = "",
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Propose an edit (checked like a draft; the edit and a diff are stored); another reviewer approves it
    with ``charter review approve`` before it can be sent."""
    if text_file is not None:
        text = text_file.read_text(encoding="utf-8")
    if text is None:
        raise UsageError("give the edited text with --text or --file")
    _decide_draft(item_id, user, "edit", charter, as_json, text=text, comment=comment)


@review_app.command("reject")
def review_reject(
    item_id: str,
    user: AsOpt,
    reason: Annotated[
        str,
        typer.Option(
            help="inaccurate, unsupported_by_sources, incomplete, wrong_tone, "
            "out_of_scope, sensitive_data, policy_violation or other."
        ),
    ] = "",
    comment: Annotated[str, typer.Option(help="Free text.")] = "",
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject a draft with a reason from the fixed list, plus free text."""
    _decide_draft(item_id, user, "reject", charter, as_json, reason=reason or None, comment=comment)


@review_app.command("tick")
def review_tick(charter: CharterOpt = None, as_json: JsonOpt = False) -> None:
    """Advance SLA timers once: expire approval requests, escalate approvals and drafts past their SLA."""
    from charter.review import tick

    rt = open_runtime(charter)
    report = tick(rt).to_dict()
    emit(
        report,
        as_json,
        lambda r: console.print(
            f"expired {len(r['approvals_expired'])} approval(s), escalated {len(r['approvals_escalated'])} "
            f"approval(s) and {len(r['reviews_escalated'])} draft(s)",
            highlight=False,
        ),
    )


@review_app.command("stats")
def review_stats_cmd(charter: CharterOpt = None, as_json: JsonOpt = False) -> None:
    """Review decisions so far and the acceptance rate (approved as-is / decided by a human)."""
    from charter.review import review_stats

    emit(review_stats(open_runtime(charter)), as_json)
