"""``charter audit verify`` and ``charter audit tail``: check and read the tamper-evident audit log.

Access: these commands read the database and the key folder directly, so whoever runs them is already
trusted with the local machine (an operator). The server will expose the same reads behind authorisation
(``audit.read``).
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from charter.cli._app import app
from charter.cli._common import CharterOpt, JsonOpt, console, emit, err_console, open_runtime

audit_app = typer.Typer(
    help="The tamper-evident audit log: verify the chain, show recent events. "
    "Local operators only (reads the database and key folder directly).",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def verify(
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
    expect_at_least: Annotated[
        int | None,
        typer.Option(
            "--expect-at-least",
            min=0,
            metavar="N",
            help="Fail unless the log has at least N entries (e.g. a count recorded elsewhere).",
        ),
    ] = None,
    checkpoint: Annotated[
        bool,
        typer.Option(
            "--checkpoint/--no-checkpoint",
            help="When intact, sign a checkpoint at the head so that later truncation below it is caught.",
        ),
    ] = True,
) -> None:
    """Recompute the whole hash chain and check every signed checkpoint.

    Exits 0 and prints the number of entries verified when the log is intact; exits 1 naming the first bad
    entry and the reason when anything was modified, deleted, inserted, reordered or truncated. Entries
    after the last signed checkpoint (the unsigned tail) are checked against their seals; a rewritten tail
    fails and is never signed.
    """
    rt = open_runtime(charter)
    try:
        result = rt.audit.verify(expect_at_least=expect_at_least, checkpoint=checkpoint)
    finally:
        rt.close()
    if as_json:
        emit(result.to_dict(), True)
    elif result.ok:
        console.print(
            f"[green]audit log intact:[/] {result.entries_verified} entries verified, "
            f"{result.checkpoints_verified} signed checkpoints "
            f"({result.elapsed_s:.2f} s)",
            highlight=False,
        )
        if result.unsigned_tail:
            how = "seals checked" if result.tail_checked else "seals NOT checked (no audit-seal.key here)"
            console.print(
                f"  unsigned tail: {result.unsigned_tail} entries after the last signed checkpoint ({how})",
                highlight=False,
            )
        for note in result.notes:
            console.print(f"  note: {escape(note)}", highlight=False, soft_wrap=True)
    else:
        reason = result.reason or ""
        reason = escape(reason.removeprefix(f"entry {result.first_bad_seq}: "))
        err_console.print(
            f"[bold red]audit log FAILED at entry {result.first_bad_seq}:[/] {reason}",
            highlight=False,
            soft_wrap=True,
        )
        err_console.print(f"  {result.entries_verified} entries verified before the failure", highlight=False)
        err_console.print(
            "  nothing was signed: fix or investigate before any new checkpoint", highlight=False
        )
    if not result.ok:
        raise typer.Exit(1)


@audit_app.command("tail")
def tail(
    charter: CharterOpt = None,
    as_json: JsonOpt = False,
    n: Annotated[int, typer.Option("-n", "--lines", min=0, help="How many events.")] = 20,
    action: Annotated[str | None, typer.Option("--action", help="Only events with this action.")] = None,
) -> None:
    """Show the most recent audit events, oldest first."""
    rt = open_runtime(charter)
    try:
        entries = rt.audit.tail(n, action=action)
    finally:
        rt.close()
    emit([e.to_dict() for e in entries], as_json, _render_tail)


def _render_tail(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console.print("no audit events")
        return
    wide = console.width >= 140  # details only fit on a wide terminal; --json always has them
    table = Table(show_lines=False)
    for col in ("seq", "time (UTC)", "actor", "action", "outcome"):
        table.add_column(col, no_wrap=True)
    table.add_column("resource", overflow="fold")
    if wide:
        table.add_column("details", overflow="ellipsis", no_wrap=True, max_width=console.width - 100)
    for r in rows:
        cells = [
            str(r["seq"]),
            r["ts"].replace("T", " ")[:19],
            r["actor"],
            r["action"],
            r["outcome"],
            r["resource"],
        ]
        if wide:
            cells.append(json.dumps(r["details"], ensure_ascii=False, sort_keys=True))
        table.add_row(*cells)
    console.print(table)
    if not wide:
        console.print("details: use --json (or a wider terminal)", style="dim")
