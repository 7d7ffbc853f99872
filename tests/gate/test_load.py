"""Check 6 also reads load measurements: production traces (not eval cases) of the last seven days.

Traces are planted straight into the trace table of a gate-ready copy of the billing example, as the
pipeline would have stored them for real requests; the gate must then fail the cost and latency check
only, naming the cost owner, and leave the eval run's own traces out of the measurement.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

from tests.gate.test_gate import assert_only, gate


def plant(
    charter: Path,
    n: int,
    *,
    latency_ms: float,
    cost_usd: float,
    age: timedelta = timedelta(hours=1),
    channel: str | None = "server",
) -> None:
    from charter.runtime import Runtime
    from charter.store import utcnow
    from charter.store.tables import traces

    rt = Runtime.open(charter)
    try:
        at = utcnow() - age
        rows = [
            {
                "request_id": "req_" + uuid.uuid4().hex[:16],
                "workflow": rt.spec.workflow.id,
                "principal_id": "planted",
                "started_at": at,
                "status": "answered",
                "model": rt.spec.model.name,
                "cost_usd": cost_usd,
                "latency_ms": latency_ms,
                "input_tokens": 100,
                "output_tokens": 50,
                "body": {"planted": True},
                "channel": channel,
            }
            for _ in range(n)
        ]
        with rt.store.begin() as conn:
            conn.execute(traces.insert(), rows)
    finally:
        rt.close()


def _load_findings(result):  # type: ignore[no-untyped-def]
    return [f for f in result.check("cost_latency").findings if "load" in f.evidence]


def test_slow_production_traffic_fails_cost_latency_only(gated_project: Path) -> None:
    plant(gated_project, 30, latency_ms=5000.0, cost_usd=0.0)
    res = gate(gated_project)
    assert_only(res, "cost_latency", "farid")
    (p95, cost) = _load_findings(res)
    assert p95.status == "fail" and "production p95 latency 5000 ms" in p95.message
    assert cost.status == "pass"
    load = p95.evidence["load"]
    assert load["requests"] == 30, load  # the eval run's own traces are not production traffic
    assert load["eval_requests_excluded"] > 0, load


def test_expensive_production_traffic_fails(gated_project: Path) -> None:
    plant(gated_project, 25, latency_ms=300.0, cost_usd=0.05)
    res = gate(gated_project)
    assert_only(res, "cost_latency", "farid")
    (p95, cost) = _load_findings(res)
    assert p95.status == "pass" and cost.status == "fail"
    assert "production cost per request 0.050000 USD" in cost.message


def test_only_served_requests_are_production_traffic(gated_project: Path) -> None:
    """Cold CLI asks (model loading counted as latency), evals, drills, in-process calls and traces from
    before channels were recorded are not production load: only ``server`` traces are."""
    for channel in ("cli", "eval", "drill", "local", None):
        plant(gated_project, 30, latency_ms=40934.0, cost_usd=1.0, channel=channel)
    res = gate(gated_project)
    assert res.failed == [], [
        (c.id, [f.message for f in c.findings if f.status == "fail"]) for c in res.checks
    ]
    (used,) = _load_findings(res)
    assert "0 production requests" in used.message, used.message
    assert used.evidence["load"]["not_served_excluded"] == 150, used.evidence
    plant(gated_project, 20, latency_ms=40934.0, cost_usd=0.0)  # now 20 served ones: measured, and slow
    assert_only(gate(gated_project), "cost_latency", "farid")


def test_little_or_old_traffic_is_not_used(gated_project: Path) -> None:
    plant(gated_project, 19, latency_ms=9000.0, cost_usd=1.0)  # too few to measure
    plant(gated_project, 40, latency_ms=9000.0, cost_usd=1.0, age=timedelta(days=8))  # outside the window
    res = gate(gated_project)
    assert res.failed == [], [
        (c.id, [f.message for f in c.findings if f.status == "fail"]) for c in res.checks
    ]
    (only,) = _load_findings(res)
    assert only.status == "pass" and "19 production requests" in only.message


def test_fast_cheap_production_traffic_passes(gated_project: Path) -> None:
    plant(gated_project, 40, latency_ms=250.0, cost_usd=0.001)
    res = gate(gated_project)
    assert res.failed == []
    assert all(f.status == "pass" for f in _load_findings(res))
