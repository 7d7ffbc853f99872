"""Evaluation and launch-gate runs started through the API, in the background; the server's drift
scheduler; the start-up warm-up.

Runs are real: the eval runs cases of the example's eval set through the pipeline and stores the run; the
gate runs its seven checks with their drills and writes a signed report. The synced example is not
gate-ready (no eval run, no policy approval), so the gate *fails* here — what matters is that the result,
its evidence and its signature reach the API.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import Served, _build

CASES = ["n-refund-monthly", "n-duplicate-charge", "n-grace-period", "n-pending-authorisation"]


def _wait(served: Served, job_id: str, timeout: float = 300.0) -> dict[str, Any]:
    doc = served.app.state.charter.jobs.wait(job_id, timeout)  # type: ignore[attr-defined]
    assert doc["status"] != "running", f"{job_id} still running after {timeout} s"
    return dict(doc)


def test_start_an_eval_run(client: Any, served: Served) -> None:
    h = served.headers("omar")
    bad = client.post("/api/evals", headers=h, json={"cases": ["no-such-case"]})
    assert bad.status_code == 400 and "no-such-case" in bad.json()["error"]["message"]
    r = client.post(
        "/api/evals", headers=h, json={"cases": CASES, "permission_probes": False, "concurrency": 2}
    )
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "running" and job["kind"] == "eval" and job["href"] == f"/api/evals/{job['id']}"
    again = client.post("/api/evals", headers=served.headers("lena"), json={})
    assert again.status_code == 409, again.text
    assert job["id"] in again.json()["error"]["message"]
    done = _wait(served, job["id"])
    assert done["status"] == "succeeded", done
    status = client.get(job["href"], headers=served.headers("farid")).json()  # reports.read may look
    assert status["status"] == "succeeded" and status["error"] is None
    run_id = status["summary"]["run_id"]
    assert status["summary"]["cases"] == len(CASES)
    detail = client.get(f"/api/evals/{run_id}", headers=h).json()
    assert detail["status"] == "succeeded" and detail["summary"]["id"] == run_id
    assert {t["threshold"] for t in detail["summary"]["thresholds"]}
    listed = client.get("/api/evals", headers=h).json()["items"]
    assert listed[0]["id"] == run_id and listed[0]["options"]["origin"] == "api"
    events = served.rt.audit.tail(50, action="evals.run")  # type: ignore[attr-defined]
    assert any(e.actor == "omar" and e.details["run_id"] == run_id for e in events)
    # the slot is free again
    assert client.get("/api/evals/job_eval_0000", headers=h).status_code == 404
    assert client.get("/api/evals/eval_nope", headers=h).status_code == 404


def test_a_failing_job_is_reported_not_a_500(client: Any, served: Served) -> None:
    from charter.errors import ProviderError

    def broken(job: Any) -> dict[str, Any]:
        raise ProviderError("the model endpoint refused the connection")

    jobs = served.app.state.charter.jobs  # type: ignore[attr-defined]
    job = jobs.start("eval", "omar", broken)
    _wait(served, job.id)
    r = client.get(f"/api/evals/{job.id}", headers=served.headers("omar"))
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "failed" and "refused the connection" in body["error"]
    assert body["summary"] is None


def test_run_the_gate(client: Any, served: Served) -> None:
    h = served.headers("omar")
    r = client.post("/api/gate/runs", headers=h)
    assert r.status_code == 202, r.text
    job = r.json()
    assert client.post("/api/gate/runs", headers=h).status_code == 409
    running = client.get(job["href"], headers=served.headers("farid")).json()
    assert running["status"] in ("running", "succeeded")
    done = _wait(served, job["id"])
    assert done["status"] == "succeeded", done
    s = done["summary"]
    assert set(s["checks"]) == {
        "scope",
        "sources",
        "evaluation",
        "review",
        "monitoring",
        "cost_latency",
        "owners",
    }
    assert s["status"] == "fail" and "evaluation" in s["failed"] and s["owners"]["evaluation"] == "lena"
    latest = client.get("/api/gate", headers=h).json()
    assert latest["latest"]["id"] == s["gate_run"]
    assert len(latest["report"]["checks"]) == 7 and latest["report"]["checks"][0]["id"] == "scope"
    assert all(c["findings"] and c["owner"] for c in latest["report"]["checks"])
    assert latest["verification"]["signature"] is True and latest["verification"]["current"] is True
    history = client.get("/api/gate/history", headers=h).json()["items"]
    assert history[0]["id"] == s["gate_run"] and history[0]["actor"] == "omar"
    assert history[0]["verification"]["signature"] is True
    for fmt, media in (("json", "application/json"), ("md", "text/markdown"), ("html", "text/html")):
        f = client.get(f"/api/gate/reports/{s['gate_run']}/{fmt}", headers=h)
        assert f.status_code == 200 and f.headers["content-type"].startswith(media)
        assert "attachment" in f.headers["content-disposition"]
        assert s["gate_run"] in f.text
    assert client.get("/api/gate/reports/gate_nope/md", headers=h).status_code == 404
    assert client.get("/api/gate/reports/x/pdf", headers=h).status_code == 422
    # an edited report no longer verifies, and the history says so
    folder = Path(latest["latest"]["report"])
    md = folder / "gate-report.md"
    md.write_text(md.read_text() + "edited\n")
    again = client.get("/api/gate/history", headers=h).json()["items"][0]
    assert again["verification"]["signature"] is False and "modified" in again["verification"]["message"]
    # a run whose report was written elsewhere (e.g. `charter gate --report` on another machine)
    from charter.gate import record_gate, run_gate

    other = run_gate(served.rt, only=["owners"], drills=False)  # type: ignore[arg-type]
    record_gate(served.rt, other, actor="cli:local", report=Path("/nonexistent/report"), manifest=None)  # type: ignore[arg-type]
    elsewhere = client.get("/api/gate/history", headers=h).json()["items"][0]
    assert elsewhere["id"] == other.id and elsewhere["report"] is True
    assert (
        elsewhere["verification"]["signature"] is None
        and "not on this server" in elsewhere["verification"]["message"]
    )
    assert client.get(f"/api/gate/reports/{other.id}/md", headers=h).status_code == 404


def test_server_drift_scheduler_notifies_and_restricts(server_project: Path, caplog: Any) -> None:
    from fastapi.testclient import TestClient
    from sqlalchemy import update

    from charter.gate import is_restricted
    from charter.runtime import Runtime
    from charter.store import utcnow
    from charter.store.tables import source_state

    rt = Runtime.open(server_project)
    with rt.store.begin() as conn:  # a regression: every source is long past its freshness
        conn.execute(update(source_state).values(last_success_at=utcnow() - timedelta(days=400)))
    rt.close()
    s = _build(server_project, drift_seconds=0.3)
    caplog.set_level(logging.WARNING, logger="charter.gate")
    try:
        with TestClient(s.app) as c:  # type: ignore[arg-type]
            deadline = time.monotonic() + 60
            while not s.rt.audit.tail(5, action="gate.drift.regression"):  # type: ignore[attr-defined]
                assert time.monotonic() < deadline, "the server's drift scheduler never ran"
                time.sleep(0.2)
            assert c.get("/api/me", headers=s.headers("omar")).status_code == 200
            drift = c.get("/api/gate", headers=s.headers("omar")).json()["drift"]
            assert drift["checks"]["sources"] == "fail" and drift["owners"]["sources"] == "omar"
        assert s.app.state.charter.drift._thread.is_alive() is False  # type: ignore[attr-defined]  # stopped
        # the first regression restricts; later passes (every 0.3 s) find it restricted and only notify
        event = s.rt.audit.tail(1000, action="gate.drift.regression")[0]  # type: ignore[attr-defined]
        (restricted,) = s.rt.audit.tail(100, action="workflow.restricted")  # type: ignore[attr-defined]
        assert restricted.outcome == "on" and "sources" in restricted.details["checks"]
        assert "sources" in event.details["failed"] and event.details["owners"]["sources"] == "omar"
        assert event.details["notified"] == "log" and event.outcome == "restricted"
        assert is_restricted(s.rt)  # the billing charter says drift.on_regression: restrict
        assert any("gate drift regression" in r.getMessage() for r in caplog.records)
    finally:
        s.rt.close()  # type: ignore[attr-defined]


def test_drift_is_off_with_zero(server_project: Path) -> None:
    from fastapi.testclient import TestClient

    s = _build(server_project, drift_seconds=0)
    with TestClient(s.app):  # type: ignore[arg-type]
        assert s.app.state.charter.drift is None  # type: ignore[attr-defined]
    s.rt.close()  # type: ignore[attr-defined]


def test_warm_up_then_gc_freeze(server_project: Path) -> None:
    import gc

    from fastapi.testclient import TestClient

    s = _build(server_project, warm_up=True)
    gc.unfreeze()
    try:
        with TestClient(s.app) as c:  # type: ignore[arg-type]
            assert gc.get_freeze_count() > 0, "the server did not gc.freeze() after warming up"
            r = c.post("/api/ask", headers=s.headers("ana"), json={"question": "How do refunds work?"})
            assert r.status_code == 200, r.text
    finally:
        gc.unfreeze()
        s.rt.close()  # type: ignore[attr-defined]


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from charter.server import ServerSettings

    assert ServerSettings().drift_seconds == 3600 and ServerSettings().warm_up is True
    monkeypatch.setenv("CHARTER_SERVER_DRIFT_SECONDS", "0")
    monkeypatch.setenv("CHARTER_SERVER_WARM_UP", "0")
    s = ServerSettings.from_env()
    assert s.drift_seconds == 0 and s.warm_up is False


def blocking_job(served: Served, kind: str) -> threading.Event:
    """Occupy the server's slot for ``kind`` with a job that waits until the returned event is set."""
    release = threading.Event()

    def work(job: Any) -> dict[str, Any]:
        # held until released (the cap only guards a test that never releases it; the thread is a daemon):
        # a slot freed mid-test lets the next valid POST start a real run — the OpenAPI fuzzing module, which
        # runs longer than the old 120 s cap under load, then ran a whole eval (~40 s of CPU) in the background
        release.wait(1800)
        return {}

    served.app.state.charter.jobs.start(kind, "test", work)  # type: ignore[attr-defined]
    return release
