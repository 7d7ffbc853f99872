"""Agent runs through the real server app: a run that waits for an approval survives a server restart and is
continued by the new server (at start-up, and right after an approval decided over the API)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from charter.identity import create_token
from charter.review import decide_approval
from charter.runtime import Runtime
from charter.server import ServerSettings, create_app
from tests.agents.test_loop import use

REFUND = "ORD-10422 arrived damaged (photo attached); refund the full 129 EUR."


def _refund(req: Any, step: int) -> Any:
    if not req.turns:
        return [("refund_order", {"order_id": "ORD-10422", "amount_eur": 129.0, "reason": "damaged"})]
    return f"The refund of 129 EUR for ORD-10422 was issued [{req.turns[0].results[0].citation}]."


@contextmanager
def serve(charter: Path, *, tick: float) -> Iterator[tuple[TestClient, Runtime, dict[str, dict[str, str]]]]:
    rt = Runtime.open(charter)
    use(rt, _refund)  # the model's outputs are scripted; everything else is the real app
    headers = {
        u: {"Authorization": f"Bearer {create_token(rt, u, label='test').token}"}
        for u in ("noor", "ines", "theo")
    }
    settings = ServerSettings(  # type: ignore[call-arg]
        background_telemetry=False,
        review_tick_seconds=tick,
        drift_seconds=0,
        warm_up=False,
        auth_failure_delay=0,
    )
    try:
        with TestClient(create_app(rt, settings), raise_server_exceptions=False) as client:
            yield client, rt, headers
    finally:
        rt.close()


def _wait_for(client: TestClient, run_id: str, who: dict[str, str], status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while True:
        got = client.get(f"/api/runs/{run_id}", headers=who)
        assert got.status_code == 200, got.text
        if got.json()["status"] == status or time.monotonic() > deadline:
            return dict(got.json())
        time.sleep(0.1)


def test_a_waiting_run_survives_a_server_restart(order_desk: Path) -> None:
    with serve(order_desk, tick=0) as (client, _rt, h):
        asked = client.post("/api/ask", json={"question": REFUND}, headers=h["noor"])
        assert asked.status_code == 200, asked.text
        body = asked.json()
        assert body["run_status"] == "waiting" and body["status"] == "needs_human"
        run_id, (approval,) = body["run_id"], body["escalation"]["approvals"]
        assert client.get(f"/api/runs/{run_id}", headers=h["noor"]).json()["waiting_on"] == [approval]
        # another agent does not see the run (404, as for no run); a lead (traces.read_all) sees its state only
        assert client.get(f"/api/runs/{run_id}", headers=h["theo"]).status_code == 404
        seen = client.get(f"/api/runs/{run_id}", headers=h["ines"]).json()
        assert seen["status"] == "waiting" and seen["result"] is None
        assert client.post(f"/api/runs/{run_id}/resume", headers=h["noor"]).status_code == 409
    # the server is gone; the lead approves from the command line's functions meanwhile
    rt = Runtime.open(order_desk)
    try:
        decide_approval(rt, approval, rt.charter.principal("ines"), "approve")
    finally:
        rt.close()
    with serve(order_desk, tick=30) as (client, _rt, h):  # the new server resumes it at start-up
        done = _wait_for(client, run_id, h["noor"], "completed")
        assert done["status"] == "completed", done
        assert done["result"]["status"] == "answered" and "129 EUR" in done["result"]["draft"]


def test_an_approval_decided_over_the_api_continues_the_run(order_desk: Path) -> None:
    with serve(order_desk, tick=0) as (client, _rt, h):
        body = client.post("/api/ask", json={"question": REFUND}, headers=h["noor"]).json()
        run_id, (approval,) = body["run_id"], body["escalation"]["approvals"]
        decided = client.post(
            f"/api/approvals/{approval}/decision", json={"decision": "approve"}, headers=h["ines"]
        )
        assert decided.status_code == 200, decided.text
        assert decided.json()["status"] == "executed"
        done = _wait_for(client, run_id, h["noor"], "completed")
        assert done["status"] == "completed" and done["steps"] == 2, done
        listed = client.get("/api/runs", headers=h["noor"]).json()["items"]
        assert [r["id"] for r in listed] == [run_id] and "task" not in listed[0]
