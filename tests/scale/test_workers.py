"""``charter serve --workers 2`` on one PostgreSQL: approvals, rate limits and the audit chain hold across
worker processes. Each test starts a real server (subprocess) on the session's PostgreSQL (``tests/_pg.py``)
and checks, by the workers' CPU time, that both workers served requests. Servers whose requests embed nothing
start without the warm-up (``tests/scale/_server.py``, ``NO_WARM_UP``); the budget race keeps it.

The budget test points the charter's ``openai`` model at a local upstream that answers after a few
seconds, so that every request has reserved its estimated cost before any settles: exactly N fit.
(``tests/models/test_budget.py::test_two_processes_share_one_budget`` tests the same through the library,
with exact costs, on both backends.)
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import run_cli
from tests.scale._server import (
    NO_WARM_UP,
    Server,
    conversations,
    cpu_seconds,
    http_client,
    http_get,
    http_post,
    issue_tokens,
    serve,
)
from tests.tools._helpers import INVOICE_ID, REFUND_50, billing_state

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def race(n: int, fn: Callable[[httpx.Client], httpx.Response]) -> list[httpx.Response]:
    """``n`` threads, each with its own connection, released together."""
    barrier = threading.Barrier(n)
    out: list[httpx.Response] = []
    lock = threading.Lock()

    def one() -> None:
        with http_client(timeout=120) as client:
            barrier.wait()
            r = fn(client)
        with lock:
            out.append(r)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def both_workers_busy(server: Server, action: Callable[[], Any]) -> Any:
    """Run ``action`` and assert that every worker process used CPU meanwhile (the kernel spread the load)."""
    workers = server.workers()
    assert len(workers) == server.n_workers
    before = cpu_seconds(workers)
    result = action()
    after = cpu_seconds(workers)
    assert all(after[p] > before[p] for p in before), (before, after)
    return result


def audit_verify(project: Path, database_url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("CHARTER_DATABASE_URL", database_url)
    result = run_cli("audit", "verify", "-c", str(project), "--json")
    monkeypatch.delenv("CHARTER_DATABASE_URL")
    assert result.exit_code == 0, result.stdout + result.stderr
    doc = result.json()
    assert isinstance(doc, dict)
    return doc


def test_twenty_concurrent_approvals_across_workers_execute_once(
    project: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = issue_tokens(project, pg_url, ("ana", "lena"))
    with serve(project, pg_url, workers=2, env=NO_WARM_UP) as server:
        proposed = http_post(
            f"{server.base}/api/tools/issue_refund/calls",
            json={"args": REFUND_50},
            headers=bearer(tokens["ana"]),
            timeout=60,
        )
        assert proposed.status_code == 200, proposed.text
        action = proposed.json()
        assert action["status"] == "pending"

        def approve(client: httpx.Client) -> httpx.Response:
            return client.post(
                f"{server.base}/api/approvals/{action['id']}/decision",
                json={"decision": "approve", "reason": "ok"},
                headers=bearer(tokens["lena"]),
            )

        responses = both_workers_busy(server, lambda: race(20, approve))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] + [409] * 19, [r.text for r in responses if r.status_code not in (200, 409)]
    [winner] = [r.json() for r in responses if r.status_code == 200]
    assert winner["status"] == "executed"
    assert len(billing_state(project)["refunds"]) == 1
    assert audit_verify(project, pg_url, monkeypatch)["ok"] is True


def test_the_rate_limit_holds_across_workers(project: Path, pg_url: str) -> None:
    tokens = issue_tokens(project, pg_url, ("ana", "ben"))
    env = {**NO_WARM_UP, "CHARTER_SERVER_RATE_LIMIT_PER_MINUTE": "10"}
    with serve(project, pg_url, workers=2, env=env) as server:
        if time.time() % 60 > 40:  # keep the burst inside one minute window, so that the count is exact
            time.sleep(61 - time.time() % 60)

        def me(client: httpx.Client) -> httpx.Response:
            return client.get(f"{server.base}/api/me", headers=bearer(tokens["ana"]))

        responses = both_workers_busy(server, lambda: race(30, me))
        other = http_get(f"{server.base}/api/me", headers=bearer(tokens["ben"]), timeout=30)
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 10 + [429] * 20  # per process, two workers would have let 20 through
    assert all(int(r.headers["Retry-After"]) >= 1 for r in responses if r.status_code == 429)
    assert other.status_code == 200  # the limit is per principal


def test_the_audit_chain_verifies_after_concurrent_writers_in_both_workers(
    project: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = issue_tokens(project, pg_url, ("ana", "ben"))
    n = 40
    unused = conversations(project, pg_url, ("ana", "ben"), n)  # each call in a conversation of its own
    taking = threading.Lock()
    with serve(project, pg_url, workers=2, env=NO_WARM_UP) as server:

        def lookup(client: httpx.Client) -> httpx.Response:
            user = "ana" if threading.get_ident() % 2 else "ben"
            with taking:
                request_id = unused[user].pop()
            return client.post(
                f"{server.base}/api/tools/lookup_invoice/calls",
                json={"args": {"invoice_id": INVOICE_ID}, "request_id": request_id},
                headers=bearer(tokens[user]),
            )

        responses = both_workers_busy(server, lambda: race(n, lookup))
    assert [r.status_code for r in responses] == [200] * n, [
        r.text for r in responses if r.status_code != 200
    ]
    assert all(r.json()["status"] == "executed" for r in responses)
    verified = audit_verify(project, pg_url, monkeypatch)
    assert verified["ok"] is True
    from charter.runtime import Runtime

    rt = Runtime.open(project, database_url=pg_url)
    try:
        executed = rt.audit.tail(10 * n, action="tools.executed")
        assert len(executed) == n  # every call audited once, none lost in the race for the chain
    finally:
        rt.close()


# ---------------------------------------------------------------------------------------------- budget
@contextmanager
def slow_upstream(delay: float) -> Iterator[str]:
    """An OpenAI-compatible endpoint that answers every chat completion after ``delay`` seconds."""
    body = json.dumps(
        {
            "id": "chatcmpl-slow",
            "object": "chat.completion",
            "created": 0,
            "model": "upstream",
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "Noted."}, "finish_reason": "stop"}
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            time.sleep(delay)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def _gateway_charter(project: Path, upstream: str, monthly_usd: float) -> None:
    import yaml

    data = yaml.safe_load(project.read_text())
    data["sources"] = []
    data["model"] = {
        "provider": "openai",
        "name": "upstream",
        "endpoint": upstream,
        "timeout": "60s",
        "retries": 0,
        "prices": {"input_per_1k": 1.0, "output_per_1k": 1.0},
        "max_output_tokens": 100,
    }
    data["budgets"] = {**data["budgets"], "per_task_usd": 100.0, "monthly_usd": monthly_usd}
    project.write_text(yaml.safe_dump(data, sort_keys=False))


def test_a_budget_for_n_requests_admits_n_across_workers(project: Path, pg_url: str) -> None:
    from sqlalchemy import select

    from charter.models import PromptRegistry
    from charter.runtime import Runtime
    from charter.store.tables import budget_months, budget_reservations

    question = {"question": "How long does a refund take to reach the card?", "submit_for_review": False}
    admit, concurrent = 5, 16
    with slow_upstream(delay=6.0) as upstream:
        _gateway_charter(project, upstream, monthly_usd=1000.0)
        rt = Runtime.open(project, database_url=pg_url)
        PromptRegistry(rt.charter, rt.store, audit=lambda **e: rt.audit.append(**e)).approve(
            "draft_reply", rt.spec.prompt("draft_reply").active, principal=rt.charter.principal("lena")
        )
        rt.close()
        tokens = issue_tokens(project, pg_url, ("ana",))
        # one request measures the reservation this question takes (the same for every identical request);
        # that server's one question loads the embedder in the worker that answers it, the other never needs it
        with serve(project, pg_url, workers=2, env=NO_WARM_UP) as server:
            first = http_post(
                f"{server.base}/api/ask", json=question, headers=bearer(tokens["ana"]), timeout=120
            )
            assert first.status_code == 200, first.text
        rt = Runtime.open(project, database_url=pg_url)
        with rt.store.connect() as conn:
            estimate = conn.execute(select(budget_reservations.c.estimated_nano)).scalar_one()
            spent = conn.execute(select(budget_months.c.spent_nano)).scalar_one()
        rt.close()
        _gateway_charter(project, upstream, monthly_usd=(spent + admit * estimate) / 1e9)

        with serve(project, pg_url, workers=2) as server:

            def ask(client: httpx.Client) -> httpx.Response:
                return client.post(f"{server.base}/api/ask", json=question, headers=bearer(tokens["ana"]))

            responses = both_workers_busy(server, lambda: race(concurrent, ask))
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * admit + [402] * (concurrent - admit), [r.text[:200] for r in responses]
    rt = Runtime.open(project, database_url=pg_url)
    try:
        with rt.store.connect() as conn:
            month = conn.execute(select(budget_months.c.spent_nano, budget_months.c.reserved_nano)).one()
        assert month.reserved_nano == 0 and month.spent_nano <= spent + admit * estimate
        assert len(rt.audit.tail(1000, action="model.budget_refused")) == concurrent - admit
    finally:
        rt.close()
