"""``charter prompts list|approve|activate``: versioned prompts and the prompt owner's approvals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from charter.cli._app import app
from charter.cli._common import AsOpt, CharterOpt, JsonOpt, acting_principal, console, emit, open_runtime

if TYPE_CHECKING:
    from charter.runtime import Runtime

prompts_app = typer.Typer(
    help="Versioned prompts: list them, approve a version, make it active.", no_args_is_help=True
)
app.add_typer(prompts_app, name="prompts")

NameArg = Annotated[str, typer.Argument(help="Prompt name, as in the charter's 'prompts'.")]
VersionArg = Annotated[str, typer.Argument(help="Version label, e.g. v2.")]


def _registry(rt: Runtime) -> Any:
    from charter.models import PromptRegistry

    return PromptRegistry(rt.charter, rt.store, audit=lambda **event: rt.audit.append(**event))


def _render_one(d: dict[str, Any]) -> None:
    problem = escape(d["approval_problem"] or "not approved")
    state = "[green]approved[/]" if d["approved"] else f"[red]{problem}[/]"
    console.print(
        f"{escape(d['prompt'])} {escape(d['version'])}: {state}"
        + (" [bold](active)[/]" if d["active"] else ""),
        highlight=False,
    )


@prompts_app.command("list")
def list_prompts(
    name: Annotated[str | None, typer.Argument(help="Only this prompt.")] = None,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every prompt version with its file hash, approval and whether it is active."""
    rt = open_runtime(charter)
    try:
        rows = [s.to_dict() for s in _registry(rt).versions(name)]
    finally:
        rt.close()

    def render(items: list[dict[str, Any]]) -> None:
        table = Table("prompt", "version", "file", "sha256", "approval", "active")
        for d in items:
            if d["approved"]:
                approval = f"[green]{escape(d['approved_by'])} {d['approved_at']:%Y-%m-%d %H:%M}Z[/]"
            else:
                approval = f"[red]{escape(d['approval_problem'] or 'not approved')}[/]"
            active = "[bold]active[/]" if d["active"] else ""
            if d["charter_active"] and not d["active"]:
                active = "charter's active (overridden)"
            table.add_row(
                escape(d["prompt"]),
                escape(d["version"]),
                escape(d["file"]),
                (d["file_hash"] or "missing")[:12],
                approval,
                active,
            )
        console.print(table)

    emit(rows, as_json, render)


@prompts_app.command("approve")
def approve(
    name: NameArg,
    version: VersionArg,
    as_user: AsOpt,
    note: Annotated[str | None, typer.Option(help="Why it is approved (recorded).")] = None,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Approve a prompt version's current file content (the prompt owner only; audited).

    Editing the file afterwards voids the approval.
    """
    rt = open_runtime(charter)
    try:
        principal = acting_principal(rt, as_user)
        status = _registry(rt).approve(name, version, principal=principal, note=note).to_dict()
    finally:
        rt.close()
    emit(status, as_json, _render_one)


@prompts_app.command("activate")
def activate(
    name: NameArg, version: VersionArg, as_user: AsOpt, charter: CharterOpt = None, as_json: JsonOpt = False
) -> None:
    """Make an approved version the active one (the prompt owner only; audited). Refused if not approved."""
    rt = open_runtime(charter)
    try:
        principal = acting_principal(rt, as_user)
        status = _registry(rt).activate(name, version, principal=principal).to_dict()
    finally:
        rt.close()
    emit(status, as_json, _render_one)
