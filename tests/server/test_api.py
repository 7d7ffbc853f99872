"""The REST API: an authorisation matrix (endpoint × demo role × own/other's resources) and error mapping.

Exactly the cells listed as allowed succeed; everything else gets the status named here. Other people's
traces, drafts and approval requests answer 404 (the same as a missing id), never 200.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.server.conftest import DEMO_USERS, Served

QUESTION = "How long does a refund take to show up on my card?"
EVERYONE = set(DEMO_USERS)
ASKERS = EVERYONE - {"guest"}
AGENTS = {"ana", "ben", "svc-helpdesk"}
TOOL_USERS = AGENTS | {"lena", "farid"}


def _check(
    client: Any,
    served: Served,
    method: str,
    path: str,
    expect: dict[str, int],
    body: Any = None,
    order: list[str] | None = None,
) -> None:
    """``expect`` maps user → status; users in the order given (successes that change state last)."""
    failures = []
    for user in order or sorted(expect):
        r = client.request(method, path, headers=served.headers(user), json=body)
        if r.status_code != expect[user]:
            failures.append(
                f"{user}: {method} {path} → {r.status_code} (expected {expect[user]}): {r.text[:200]}"
            )
        if r.status_code >= 400:
            assert r.json()["error"]["code"] == r.status_code
    assert not failures, "\n".join(failures)


def _matrix(allowed: set[str], ok: int = 200, denied: int = 403, **others: int) -> dict[str, int]:
    out = {u: (ok if u in allowed else denied) for u in DEMO_USERS}
    out.update({k.replace("_", "-"): v for k, v in others.items()})
    return out


@pytest.fixture
def world(client: Any, served: Served) -> dict[str, Any]:
    """Ana asks (a trace and a draft in review) and asks for two refunds (one for a lead, one for finance)."""
    r = client.post("/api/ask", json={"question": QUESTION}, headers=served.headers("ana"))
    assert r.status_code == 200, r.text
    ask = r.json()
    small = client.post(
        "/api/tools/issue_refund/calls",
        headers=served.headers("ana"),
        json={"args": {"invoice_id": "INV-2026-00093", "amount": 20.0, "reason": "duplicate seat"}},
    )
    big = client.post(
        "/api/tools/issue_refund/calls",
        headers=served.headers("ana"),
        json={"args": {"invoice_id": "INV-2026-00048", "amount": 150.0, "reason": "downgrade"}},
    )
    assert small.status_code == 200 and big.status_code == 200, (small.text, big.text)
    assert small.json()["status"] == "pending" and big.json()["status"] == "pending"
    return {
        "request_id": ask["request_id"],
        "review_id": ask["review_id"],
        "small": small.json()["id"],
        "big": big.json()["id"],
    }


def test_every_endpoint_needs_a_token(client: Any, served: Served) -> None:
    paths = [
        ("GET", "/api/me"),
        ("POST", "/api/ask"),
        ("GET", "/api/traces"),
        ("GET", "/api/reviews"),
        ("GET", "/api/approvals"),
        ("GET", "/api/tools"),
        ("GET", "/api/sources"),
        ("GET", "/api/reports"),
        ("GET", "/api/audit/tail"),
        ("POST", "/api/audit/verify"),
        ("GET", "/api/kill-switch"),
        ("GET", "/api/evals"),
        ("POST", "/api/evals"),
        ("GET", "/api/evals/eval_x"),
        ("GET", "/api/evals/eval_x/report/md"),
        ("GET", "/api/gate"),
        ("GET", "/api/gate/history"),
        ("POST", "/api/gate/runs"),
        ("GET", "/api/gate/runs/job_x"),
        ("GET", "/api/gate/reports/gate_x/md"),
        ("GET", "/metrics"),
        ("GET", "/v1/models"),
        ("POST", "/v1/chat/completions"),
    ]
    from charter.server._auth import FailureLimiter

    auth = served.app.state.charter.auth  # type: ignore[attr-defined]
    for method, path in paths:
        # 44 refused requests from one client would trip the per-client failure limit (429, tested in
        # test_auth_hardening); this test is about each endpoint's own answer, so each starts with a fresh one
        auth.client_failures = FailureLimiter(1_000)
        r = client.request(method, path, json={})
        assert r.status_code == 401, (path, r.status_code)
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = client.request(method, path, json={}, headers={"Authorization": "Bearer chr_nope_nope"})
        assert r.status_code == 401
    assert client.get("/api/health").status_code == 200
    assert client.get("/api/ready").json()["status"] == "ready"


def test_workflow_level_matrix(client: Any, served: Served) -> None:
    _check(client, served, "GET", "/api/me", _matrix(EVERYONE))
    _check(
        client, served, "POST", "/api/search", _matrix(ASKERS - {"casey"}), body={"query": "refund", "k": 2}
    )
    _check(client, served, "GET", "/api/traces", _matrix(ASKERS))
    _check(client, served, "GET", "/api/reviews", _matrix(AGENTS | {"lena", "farid"}))
    _check(client, served, "GET", "/api/approvals", _matrix(TOOL_USERS))
    _check(client, served, "GET", "/api/tools", _matrix(TOOL_USERS))
    _check(client, served, "GET", "/api/sources", _matrix({"omar", "lena", "farid"}))
    _check(client, served, "GET", "/api/reports", _matrix({"omar", "farid"}))
    _check(client, served, "GET", "/metrics", _matrix({"omar", "farid", "lena"}))
    _check(client, served, "GET", "/api/audit/tail", _matrix({"omar"}))
    _check(client, served, "POST", "/api/audit/verify", _matrix({"omar"}))
    _check(client, served, "GET", "/api/kill-switch", _matrix({"omar"}))
    _check(
        client,
        served,
        "POST",
        "/api/kill-switch",
        _matrix(set()),
        body={"on": True, "reason": "x"},
        order=[u for u in DEMO_USERS if u != "omar"],
    )  # omar may: see test_kill_switch_by_the_operator
    _check(client, served, "POST", "/api/sources/help-center/sync", _matrix({"omar"}))
    _check(
        client,
        served,
        "POST",
        "/api/tools/lookup_invoice/calls",
        _matrix(TOOL_USERS),
        body={"args": {"invoice_id": "INV-2026-00093"}},
    )


def test_evals_and_gate_matrix(client: Any, served: Served) -> None:
    """Reading needs evals.run / gate.run or reports.read (the gate also: being an owner); starting needs
    evals.run / for the gate gate.run or being one of the charter's owners (omar, lena, farid). Both slots are
    held by a running job first, so an allowed start answers 409 (it passed authorisation) without starting
    a real run; tests/server/test_launch.py starts real ones."""
    from tests.server.test_launch import blocking_job

    eval_readers, gate_readers = {"omar", "lena", "farid"}, {"omar", "lena", "farid"}
    release = [blocking_job(served, "eval"), blocking_job(served, "gate")]
    jobs = served.app.state.charter.jobs  # type: ignore[attr-defined]
    eval_job, gate_job = jobs.running("eval").id, jobs.running("gate").id
    try:
        _check(client, served, "GET", "/api/evals", _matrix(eval_readers))
        _check(client, served, "GET", f"/api/evals/{eval_job}", _matrix(eval_readers))
        _check(
            client,
            served,
            "GET",
            "/api/evals/eval_missing",
            _matrix(set(), denied=403, **_all(eval_readers, 404)),
        )
        _check(client, served, "POST", "/api/evals", _matrix({"omar", "lena"}, ok=409), body={})
        _check(client, served, "GET", "/api/gate", _matrix(gate_readers))
        _check(client, served, "GET", "/api/gate/history", _matrix(gate_readers))
        _check(client, served, "GET", f"/api/gate/runs/{gate_job}", _matrix(gate_readers))
        _check(client, served, "GET", f"/api/gate/runs/{eval_job}", _matrix(set(), **_all(gate_readers, 404)))
        _check(client, served, "POST", "/api/gate/runs", _matrix({"omar", "lena", "farid"}, ok=409))
        _check(
            client,
            served,
            "GET",
            "/api/gate/reports/gate_missing/md",
            _matrix(set(), **_all(gate_readers, 404)),
        )
    finally:
        for event in release:
            event.set()


def _all(users: set[str], status: int) -> dict[str, int]:
    return {u.replace("-", "_"): status for u in users}


def test_ask_matrix(client: Any, served: Served) -> None:
    _check(client, served, "POST", "/api/ask", _matrix(ASKERS), body={"question": QUESTION})


def test_own_and_others_resources(client: Any, served: Served, world: dict[str, Any]) -> None:
    rid, rev, small, big = world["request_id"], world["review_id"], world["small"], world["big"]
    readers = {"ana", "lena", "farid", "omar"}  # the owner and everyone with traces.read_all
    _check(client, served, "GET", f"/api/traces/{rid}", _matrix(readers, denied=404, guest=403))
    _check(
        client,
        served,
        "POST",
        f"/api/traces/{rid}/feedback",
        _matrix({"ana", "lena", "farid"}, denied=404, omar=403, guest=403),
        body={"rating": "up"},
    )
    # the draft went to the lead; the submitter sees it too; finance does not (not assigned to them)
    _check(
        client,
        served,
        "GET",
        f"/api/reviews/{rev}",
        _matrix({"ana", "lena"}, denied=404, omar=403, casey=403, guest=403),
    )
    _check(
        client,
        served,
        "GET",
        f"/api/approvals/{small}",
        _matrix({"ana", "lena"}, denied=404, omar=403, casey=403, guest=403),
    )
    _check(
        client,
        served,
        "GET",
        f"/api/approvals/{big}",
        _matrix({"ana", "farid"}, denied=404, omar=403, casey=403, guest=403),
    )
    # decisions: the owner is refused (four-eyes), strangers get 404, the right approver wins, once
    users = ["ana", "ben", "casey", "farid", "guest", "omar", "svc-helpdesk", "lena"]
    _check(
        client,
        served,
        "POST",
        f"/api/reviews/{rev}/decision",
        _matrix({"lena"}, denied=403, ben=403, farid=404, **{"svc_helpdesk": 403}),
        body={"decision": "approve"},
        order=users,
    )
    _check(
        client,
        served,
        "POST",
        f"/api/approvals/{small}/decision",
        _matrix({"lena"}, denied=404, ana=403, omar=403, casey=403, guest=403),
        body={"decision": "approve", "reason": "ok"},
        order=users,
    )
    order = ["ana", "ben", "casey", "lena", "guest", "omar", "svc-helpdesk", "farid"]
    _check(
        client,
        served,
        "POST",
        f"/api/approvals/{big}/decision",
        _matrix({"farid"}, denied=404, ana=403, omar=403, casey=403, guest=403),
        body={"decision": "approve", "reason": "ok"},
        order=order,
    )
    again = client.post(
        f"/api/approvals/{big}/decision",
        headers=served.headers("farid"),
        json={"decision": "approve", "reason": "again"},
    )
    assert again.status_code == 409
    # each user's trace list holds only their own requests unless they may read all
    mine = client.get("/api/traces", headers=served.headers("ben")).json()["items"]
    assert all(t["request_id"] != rid for t in mine)
    theirs = client.get("/api/traces", headers=served.headers("lena")).json()["items"]
    assert any(t["request_id"] == rid for t in theirs)


def test_kill_switch_by_the_operator(client: Any, served: Served) -> None:
    h = served.headers("omar")
    r = client.post("/api/kill-switch", headers=h, json={"on": True, "reason": "drill"})
    assert r.status_code == 200 and r.json()["workflow"]["on"] is True
    r = client.post("/api/ask", headers=served.headers("ana"), json={"question": QUESTION})
    assert r.status_code == 403 and "kill switch" in r.json()["error"]["message"]
    assert client.post("/api/kill-switch", headers=h, json={"on": False, "reason": "done"}).status_code == 200


def test_bad_input_is_4xx_not_500(client: Any, served: Served) -> None:
    h = served.headers("ana")
    cases = [
        ("POST", "/api/ask", {"question": ""}),
        ("POST", "/api/ask", {"question": 3}),
        ("POST", "/api/ask", []),
        ("POST", "/api/ask", {"question": "x", "extra": 1}),
        ("POST", "/api/ask", {"question": "a\x00b"}),
        ("POST", "/api/tools/issue_refund/calls", {"args": {"amount": "50"}}),
        ("POST", "/api/tools/nope/calls", {"args": {}}),
        ("GET", "/api/traces/nope", None),
        ("GET", "/api/reviews?status=bogus", None),
        ("POST", "/v1/chat/completions", {"model": "billing-support"}),
        (
            "POST",
            "/v1/chat/completions",
            {"model": "billing-support", "messages": [{"role": "user", "content": ""}]},
        ),
    ]
    for method, path, body in cases:
        r = client.request(method, path, headers=h, json=body)
        assert 400 <= r.status_code < 500, (path, body, r.status_code, r.text)
        assert r.json()["error"]["message"]


def test_body_size_limit_and_headers(client: Any, served: Served) -> None:
    r = client.post("/api/ask", headers=served.headers("ana"), content=b"{" + b" " * 2_000_000 + b"}")
    assert r.status_code == 413
    r = client.get("/api/health")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-request-id"].startswith("req_")


def test_rate_limit_per_principal(server_project: Any) -> None:
    from fastapi.testclient import TestClient

    from tests.server.conftest import _build

    s = _build(server_project, rate_limit_per_minute=3)
    with TestClient(s.app) as c:  # type: ignore[arg-type]
        codes = [c.get("/api/me", headers=s.headers("ana")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        assert c.get("/api/me", headers=s.headers("ben")).status_code == 200  # per principal
    s.rt.close()  # type: ignore[attr-defined]


def test_status_mapping_is_in_one_place() -> None:
    from charter.errors import (
        AuthenticationError,
        BudgetExceeded,
        Conflict,
        Denied,
        IntegrityError,
        NotFound,
        ProviderError,
        SpecError,
        UsageError,
    )
    from charter.server import RateLimited, status_for

    assert [
        status_for(e)
        for e in (
            UsageError("x"),
            NotFound("x"),
            SpecError([]),
            AuthenticationError("x"),
            Denied("x"),
            BudgetExceeded("x"),
            Conflict("x"),
            ProviderError("x"),
            ProviderError("x", retryable=True),
            IntegrityError("x"),
            RateLimited("x", retry_after=1),
            RuntimeError("x"),
        )
    ] == [400, 404, 422, 401, 403, 402, 409, 502, 503, 500, 429, 500]


def test_review_tick_runs_in_the_background(server_project: Any) -> None:
    import time

    from fastapi.testclient import TestClient

    from tests.server.conftest import _build

    s = _build(server_project, review_tick_seconds=0.1)
    with TestClient(s.app) as c:  # type: ignore[arg-type]
        time.sleep(0.5)  # several ticks; each is idempotent and must not disturb requests
        assert c.get("/api/me", headers=s.headers("omar")).status_code == 200
        assert c.post("/api/audit/verify", headers=s.headers("omar")).json()["ok"] is True
    s.rt.close()  # type: ignore[attr-defined]


def test_traces_record_the_channel_a_request_arrived_by(client: Any, served: Served) -> None:
    """Served requests are ``server`` (the gate's production traffic); an eval case run in the same process
    is ``eval``, and a plain in-process call ``local`` — the channel is per request, not per process."""
    from sqlalchemy import select

    from charter.evals import EvalCase
    from charter.evals._runner import run_case
    from charter.pipeline import ask
    from charter.store.tables import traces

    rt: Any = served.rt
    r = client.post("/api/ask", json={"question": QUESTION}, headers=served.headers("ana"))
    assert r.status_code == 200, r.text
    case = EvalCase(id="c1", category="normal", user="ana", question=QUESTION)
    evaluated = run_case(rt, case)
    local = ask(rt, rt.charter.principal("ana"), QUESTION, submit_for_review=False)
    with rt.store.connect() as conn:
        rows = dict(conn.execute(select(traces.c.request_id, traces.c.channel)).tuples().all())
    assert rows[r.json()["request_id"]] == "server"
    assert rows[evaluated.request_id] == "eval"
    assert rows[local.request_id] == "local"
    assert (
        client.get(f"/api/traces/{r.json()['request_id']}", headers=served.headers("ana")).json()["channel"]
        == "server"
    )


@pytest.mark.parametrize("field", ["subject_id"])
def test_ask_names_whom_the_conversation_is_about(client: Any, served: Served, field: str) -> None:
    """``subject_id`` is stored on the draft, where ``draft_approved`` binds a tool's ``subject_argument`` to
    it; a malformed id is refused, and so is an unknown field (a misspelt subject is never silently dropped)."""
    from charter.review import get_review

    r = client.post("/api/ask", json={"question": QUESTION, field: "cus_1001"}, headers=served.headers("ana"))
    assert r.status_code == 200, r.text
    review_id = r.json()["review_id"]
    assert review_id and get_review(served.rt, review_id).subject_id == "cus_1001"  # type: ignore[arg-type]
    bad = client.post(
        "/api/ask", json={"question": QUESTION, field: "x' OR 1=1"}, headers=served.headers("ana")
    )
    assert bad.status_code == 422
    unknown = client.post(
        "/api/ask", json={"question": QUESTION, "client_id": "cus_1001"}, headers=served.headers("ana")
    )
    assert unknown.status_code == 422 and "client_id" in unknown.text
