"""``charter gate`` (the seven launch checks, a signed report, drift with ``--watch``), ``charter gate
verify REPORT``, ``charter gate approve-policies`` and ``charter gate ack-private SOURCE``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from charter.cli._app import app
from charter.cli._common import AsOpt, CharterOpt, JsonOpt, acting_principal, console, emit, open_runtime
from charter.errors import Denied, IntegrityError, UsageError

gate_app = typer.Typer(
    help="The launch gate: seven checks with evidence, drills, a signed report, drift.",
    invoke_without_command=True,
)
app.add_typer(gate_app, name="gate")

_STYLE = {"pass": "[green]PASS[/]", "warn": "[yellow]WARN[/]", "fail": "[red]FAIL[/]"}


def parse_interval(text: str) -> float:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise UsageError(f"interval {text!r}: use e.g. 30s, 15m, 1h, 1d")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def _render(data: dict[str, Any]) -> None:
    t = Table(
        "check", "status", "owner", "evidence (problems first)", title=f"Launch gate: {data['workflow']}"
    )
    for c in data["checks"]:
        msgs = sorted(c["findings"], key=lambda f: {"fail": 0, "warn": 1, "pass": 2}[f["status"]])
        shown = "\n".join(
            f"{_STYLE[f['status']]} {f['message']}" + (f" → next: {f['fix']}" if f.get("fix") else "")
            for f in msgs[:4]
        )
        if len(msgs) > 4:
            shown += f"\n… {len(msgs) - 4} more"
        t.add_row(c["title"], _STYLE[c["status"]], f"{c['owner']} ({c['owner_duty']})", shown)
    console.print(t)
    console.print(
        f"{_STYLE[data['status']]} · gate run {data['id']} · fingerprint {data['charter_fingerprint']}"
        f" · {data['duration_s']} s" + (f" · report {data['report']}" if data.get("report") else ""),
        highlight=False,
    )


@gate_app.callback()
def gate(
    ctx: typer.Context,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write the signed report into this folder.")
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail the gate too.")] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Re-run the post-launch checks periodically (drift).")
    ] = False,
    interval: Annotated[str, typer.Option("--interval", help="With --watch: e.g. 15m, 1h.")] = "1h",
    once: Annotated[bool, typer.Option("--once", help="With --watch: one pass, then exit.")] = False,
    user: Annotated[
        str | None,
        typer.Option(
            "--as", help="Run as this user (an owner, or a role with gate.run); default: local operator."
        ),
    ] = None,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run the seven launch checks; exit 0 only when all pass (warnings allowed unless --strict)."""
    if ctx.invoked_subcommand:
        return
    from charter.gate import record_gate, run_gate, write_report
    from charter.gate import watch as watch_loop

    rt = open_runtime(charter)
    try:
        actor = "cli:local"
        if user:
            who = acting_principal(rt, user)
            _require(rt, who)
            actor = who.id
        if watch:
            seconds = parse_interval(interval)
            worst = {"failed": False}

            def show(result: Any, action: Any) -> None:
                data = {**result.as_dict(), "action": action}
                worst["failed"] = worst["failed"] or bool(result.failed)
                emit(data, as_json, _render)

            watch_loop(rt, interval_s=seconds, once=once, on_pass=show)
            if worst["failed"]:
                raise typer.Exit(1)
            return
        result = run_gate(rt)
        manifest = write_report(rt, result, report) if report else None
        record_gate(rt, result, actor=actor, report=report, manifest=manifest, strict=strict)
        data = {
            **result.as_dict(),
            "status": result.status(strict),
            "strict": strict,
            "report": str(report) if report else None,
        }
        emit(data, as_json, _render)
        if not result.passed(strict):
            raise typer.Exit(1)
    finally:
        rt.close()


def _require(rt: Any, who: Any) -> None:
    from charter.gate import may_run_gate

    allowed, reasons = may_run_gate(rt, who)
    if not allowed:
        rt.audit.append(
            actor=who.id,
            action="gate.run",
            resource=f"workflow:{rt.spec.workflow.id}",
            outcome="denied",
            details={"reasons": reasons},
        )
        raise Denied(f"{who.id} may not run the gate", reasons=reasons)


@gate_app.command("verify")
def verify(
    report: Annotated[Path, typer.Argument(help="Report folder, manifest, or one report file.")],
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Prove a gate report was produced by this installation for this configuration and not edited."""
    from charter.gate import verify_report

    rt = open_runtime(charter)
    try:
        try:
            out = verify_report(rt, report)
        except IntegrityError as exc:
            emit(
                {"ok": False, "error": str(exc)},
                as_json,
                lambda d: console.print(f"[red]NOT VERIFIED[/] {d['error']}"),
            )
            raise typer.Exit(1) from None
        emit(
            out,
            as_json,
            lambda d: console.print(
                f"[green]VERIFIED[/] gate run {d['gate_run']} ({d['status']}) · key {d['key_id']} · "
                f"fingerprint {d['charter_fingerprint']} · {', '.join(d['files'])}",
                highlight=False,
            ),
        )
    finally:
        rt.close()


@gate_app.command("approve-policies")
def approve_policies_cmd(user: AsOpt, charter: CharterOpt = None, as_json: JsonOpt = False) -> None:
    """Approve the current role and policy set by its hash (the scope owner only; audited)."""
    from charter.gate import approve_policies

    rt = open_runtime(charter)
    try:
        rec = approve_policies(rt, acting_principal(rt, user))
        emit(
            rec,
            as_json,
            lambda d: console.print(f"policy set {d['hash']} approved by {d['by']}", highlight=False),
        )
    finally:
        rt.close()


@gate_app.command("ack-private")
def ack_private_cmd(
    source: Annotated[str, typer.Argument(help="Source id.")],
    user: AsOpt,
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Acknowledge a source's private-by-default documents (the source owner only; audited)."""
    from charter.gate import acknowledge_private

    rt = open_runtime(charter)
    try:
        rec = acknowledge_private(rt, source, acting_principal(rt, user))
        emit(
            rec,
            as_json,
            lambda d: console.print(
                f"{len(d['documents'])} private-by-default documents of {source} acknowledged by {d['by']}"
            ),
        )
    finally:
        rt.close()
