"""``charter ask``."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.panel import Panel
from rich.table import Table

from charter.cli._app import app
from charter.cli._common import (
    AsOpt,
    CharterOpt,
    JsonOpt,
    acting_principal,
    console,
    emit,
    err_console,
    open_runtime,
)
from charter.errors import AuthenticationError, Denied, ProviderError, UsageError


def _render_answer(r: dict[str, Any]) -> None:
    badge = "[green]answered[/]" if r["status"] == "answered" else f"[yellow]{r['status']}[/]"
    esc = r.get("escalation")
    if esc:
        badge += f" — escalated ({esc['reason']}) to {esc['to']}"
    title = {"answer": "Answer", "agent": "Agent run"}.get(str(r.get("kind")), "Draft")
    if r.get("run_id"):
        title += f" {r['run_id']} ({r.get('run_status')})"
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
    if r.get("run_id") and r.get("tool_calls"):
        calls = Table("tool", "decision", "action", "reason", title="Tool calls")
        for c in r["tool_calls"]:
            calls.add_row(
                str(c.get("name") or "?"),
                str(c.get("decision")),
                str(c.get("action_id") or ""),
                str(c.get("reason") or ""),
            )
        console.print(calls)
    if r.get("run_status") == "waiting":
        console.print(
            "waiting for approval; when it is decided (`charter approvals decide …`), continue with "
            f"`charter agent resume {r['run_id']}` (a running server resumes it by itself)",
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
            help="Whom the conversation is about, if anyone (a client, an employee, a case id): tools "
            "see only them, and a draft_approved tool sends only to them (its subject_argument).",
        ),
    ] = None,
) -> None:
    """Ask the workflow a question as USER: a cited answer or draft, internal notes, checks, cost and latency.

    With ``CHARTER_URL`` (and ``CHARTER_TOKEN``, USER's API token) set, the question goes to that running
    server (``POST /api/ask``), which has everything loaded: the interactive loop is fast. Otherwise it runs
    in this process, which first loads the index and models (the warm-up, reported apart from the answer's
    latency); its trace is recorded with the ``cli`` channel, never as production traffic."""
    import os

    url = os.environ.get("CHARTER_URL", "").strip()
    if url:
        out = _ask_server(url, user, question, submit_for_review=not no_review, subject=subject)
        emit(out, as_json, _render_answer)
        return
    from charter.agents import respond as run_ask
    from charter.pipeline import warm_up
    from charter.telemetry import recording_channel

    rt = open_runtime(charter)
    principal = acting_principal(rt, user)
    warm = warm_up(rt)
    cold = sum(warm.values())
    if cold >= 0.5 and not as_json:
        err_console.print(
            f"cold start: loading the index and models took {cold:.1f} s (not part of the answer's latency); "
            "a running server has them loaded — `charter serve`, then set CHARTER_URL and CHARTER_TOKEN",
            highlight=False,
        )
    with recording_channel("cli"):
        result = run_ask(rt, principal, question, submit_for_review=not no_review, subject_id=subject)
    warm_ms = {k: round(v * 1000, 1) for k, v in warm.items()}
    emit({**result.as_dict(), "kind": rt.spec.workflow.kind, "warm_up_ms": warm_ms}, as_json, _render_answer)


def _ask_server(url: str, user: str, question: str, *, submit_for_review: bool, subject: str | None) -> Any:
    """``charter ask`` against a running server: the token in ``CHARTER_TOKEN`` must be USER's."""
    import os

    import httpx

    token = os.environ.get("CHARTER_TOKEN", "").strip()
    if not token:
        raise UsageError(
            "CHARTER_URL is set but CHARTER_TOKEN is not: set it to your API token "
            f"(charter tokens create --user {user}), or unset CHARTER_URL to ask in this process"
        )
    headers = {"Authorization": f"Bearer {token}"}
    base = url.rstrip("/")
    try:
        with httpx.Client(base_url=base, headers=headers, timeout=120) as client:
            me = client.get("/api/me")
            if me.status_code != 200:
                raise _server_error(me)
            if me.json().get("id") != user:
                raise UsageError(
                    f"CHARTER_TOKEN is {me.json().get('id')}'s token, not {user}'s: use --as "
                    f"{me.json().get('id')} or that user's token"
                )
            body = {"question": question, "submit_for_review": submit_for_review, "subject_id": subject}
            r = client.post("/api/ask", json=body)
            if r.status_code != 200:
                raise _server_error(r)
            return r.json()
    except httpx.HTTPError as exc:
        raise UsageError(
            f"cannot reach the server at {base} ({type(exc).__name__}: {exc}); start it with `charter serve` "
            "or unset CHARTER_URL to ask in this process"
        ) from exc


def _server_error(response: Any) -> Exception:
    """The server's JSON error as the CLI's own error (same exit code and message as in process)."""
    try:
        err = response.json()["error"]
        message, reasons = str(err["message"]), [str(r) for r in err.get("reasons") or []]
    except Exception:
        message, reasons = response.text[:500], []
    if response.status_code == 401:
        return AuthenticationError(f"the server refused CHARTER_TOKEN: {message}")
    if response.status_code in (403, 429):
        return Denied(message, reasons=reasons)
    if response.status_code >= 500:
        return ProviderError(f"the server failed ({response.status_code}): {message}")
    return UsageError(f"the server refused the request ({response.status_code}): {message}")
