"""``charter policy explain`` and ``charter policy show``: what the Cedar authorizer decides, and why."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape

from charter.cli._app import app
from charter.cli._common import CharterOpt, JsonOpt, console, emit, open_runtime
from charter.errors import UsageError

policy_app = typer.Typer(
    help="Cedar policies: explain a decision, show the generated policy set.", no_args_is_help=True
)
app.add_typer(policy_app, name="policy")


@policy_app.command("explain")
def explain(
    action: Annotated[str, typer.Argument(help="Action, e.g. ask, review.decide, tools.call.")],
    resource: Annotated[
        str | None,
        typer.Argument(help="Resource, e.g. tool:<name> or workflow:<id> (default: the workflow)."),
    ] = None,
    as_user: Annotated[
        str,
        typer.Option(
            "--as", help="The principal to decide for (any user in the charter, including inactive ones)."
        ),
    ] = "",
    context: Annotated[
        str | None, typer.Option(help='Request context as JSON, e.g. \'{"args": {"amount": 250}}\'.')
    ] = None,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Decide one request and print the decision with the policies that decided it.

    Exits 0 when allowed, 1 when denied. Nothing is executed; the explanation is not audited.
    """
    if not as_user:
        raise UsageError("--as USER is required: whose request should be explained?")
    ctx: Any = None
    if context is not None:
        try:
            ctx = json.loads(context)
        except json.JSONDecodeError as exc:
            raise UsageError(f"--context is not valid JSON: {exc.msg} at column {exc.colno}") from None
    rt = open_runtime(charter)
    try:
        rt.charter.principal(as_user)  # a usage error for unknown users, with the known ones listed
        authz = rt.authorizer
        decision = authz.authorize(as_user, action, resource, ctx)
        policies = [
            {
                "id": pid,
                "effect": authz.policy(pid).effect,
                "source": authz.policy(pid).source,
                "text": authz.policy(pid).text,
            }
            for pid in decision.policy_ids
        ]
    finally:
        rt.close()
    doc = {
        "principal": as_user,
        "action": action,
        "resource": resource or f"workflow:{authz.workflow_id}",
        "context": ctx,
        "decision": "allow" if decision.allowed else "deny",
        "allowed": decision.allowed,
        "reasons": list(decision.reasons),
        "policy_ids": list(decision.policy_ids),
        "errors": list(decision.errors),
        "policies": policies,
    }

    def render(d: dict[str, Any]) -> None:
        colour = "green" if d["allowed"] else "red"
        console.print(
            f"[bold {colour}]{d['decision'].upper()}[/] {escape(d['principal'])} → "
            f"{escape(d['action'])} on {escape(d['resource'])}",
            highlight=False,
        )
        for r in d["reasons"]:
            console.print(f"  because: {escape(r)}", highlight=False, soft_wrap=True)
        for e in d["errors"]:
            console.print(f"  [yellow]error:[/] {escape(e)}", highlight=False, soft_wrap=True)
        for p in d["policies"]:
            console.print(f"\n[bold]{escape(p['id'])}[/] ({escape(p['source'])}):", highlight=False)
            console.print(escape(p["text"]), highlight=False, soft_wrap=True)

    emit(doc, as_json, render)
    if not decision.allowed:
        raise typer.Exit(1)


@policy_app.command("show")
def show(charter: CharterOpt = None, as_json: JsonOpt = False) -> None:
    """Print the whole policy set: generated policies first (with the charter line each came from)."""
    rt = open_runtime(charter)
    try:
        authz = rt.authorizer
    finally:
        rt.close()
    doc = [
        {"id": p.id, "effect": p.effect, "source": p.source, "generated": p.generated, "text": p.text}
        for p in authz.policies
    ]

    def render(items: list[dict[str, Any]]) -> None:
        for p in items:
            console.print(f"// {escape(p['id'])} — {escape(p['source'])}", highlight=False, soft_wrap=True)
            console.print(escape(p["text"]) + "\n", highlight=False, soft_wrap=True)

    emit(doc, as_json, render)
