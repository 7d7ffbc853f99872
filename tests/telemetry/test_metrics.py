"""Prometheus metrics: computed from the database, parseable, equal to what was recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
from _monitoring_helpers import scripted_trace
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from charter.runtime import Runtime
from charter.store import utcnow
from charter.telemetry import SpanRecord, metrics_for, record_feedback, trace_store_for


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "workflow")))] = s.value
    return out


def test_metrics_reflect_the_database(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    import random

    rng = random.Random(1)
    rt = Runtime.open(project)
    store = trace_store_for(rt)
    now = utcnow()
    ids = []
    for i in range(12):
        status = "error" if i % 4 == 0 else "answered"
        t = scripted_trace(
            rng,
            workflow=rt.spec.workflow.id,
            principal="ana",
            started_at=now,
            cited=[("help-center", "a.md")],
            status=status,
            cost=0.01,
            escalation="no_sources" if i % 6 == 1 else None,
            error=("ProviderError", "timeout", "generate") if status == "error" else None,
        )
        t.spans = [
            SpanRecord(stage="retrieve", started_at=now, duration_ms=3.0 + i),
            SpanRecord(stage="generate", started_at=now, duration_ms=200.0 * (i + 1)),
        ]
        t.latency_ms = 1000.0
        store.write(t)
        ids.append(t.request_id)
    record_feedback(rt, ids[1], rt.charter.principal("ana"), rating="down")
    text = metrics_for(rt).exposition()
    s = _samples(text)
    assert s[("charter_requests_total", (("status", "answered"),))] == 9
    assert s[("charter_requests_total", (("status", "error"),))] == 3
    assert s[("charter_errors_total", (("category", "ProviderError"), ("stage", "generate")))] == 3
    assert s[("charter_escalations_total", (("reason", "no_sources"),))] == 2
    assert s[("charter_tokens_total", (("direction", "input"), ("model", "extractive")))] == 12 * 100
    assert s[("charter_cost_usd_total", (("model", "extractive"), ("source", "estimated")))] == pytest.approx(
        0.12
    )
    assert s[("charter_feedback_total", (("rating", "down"),))] == 1
    assert s[("charter_stage_latency_seconds_count", (("stage", "generate"),))] == 12
    assert (
        s[("charter_stage_latency_seconds_bucket", (("le", "1.0"), ("stage", "generate")))] == 5
    )  # 200..1000 ms
    assert s[("charter_stage_latency_seconds_sum", (("stage", "retrieve"),))] == pytest.approx(
        sum(3.0 + i for i in range(12)) / 1000
    )
    assert s[("charter_budget_month_spent_usd", ())] == pytest.approx(0.12)
    assert s[("charter_budget_month_consumed_ratio", ())] == pytest.approx(0.12 / rt.spec.budgets.monthly_usd)
    assert s[("charter_review_outcomes_total", (("outcome", "rejected"),))] == 0
    assert ("charter_source_age_seconds", (("source", "help-center"),)) in s
    # own registry per runtime: nothing leaks into the process-global one
    assert not [m for m in REGISTRY.collect() if m.name.startswith("charter_")]
    # a write invalidates the cache: the next scrape counts it
    store.write(scripted_trace(rng, workflow=rt.spec.workflow.id, principal="ben", started_at=now, cited=[]))
    assert _samples(metrics_for(rt).exposition())[("charter_requests_total", (("status", "answered"),))] == 10
    rt.close()
    # a separate, short-lived CLI process reports the same numbers from the database
    r = cli("metrics", "--charter", str(project))
    assert r.exit_code == 0, r.stderr
    assert _samples(r.stdout)[("charter_requests_total", (("status", "answered"),))] == 10
    assert (
        _samples(r.stdout)[("charter_errors_total", (("category", "ProviderError"), ("stage", "generate")))]
        == 3
    )


def test_every_metric_and_command_is_documented(project: Path) -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "monitoring.md").read_text()
    rt = Runtime.open(project)
    try:
        names = {f.name for f in text_string_to_metric_families(metrics_for(rt).exposition())}
    finally:
        rt.close()
    missing = [n for n in names if n not in docs and f"{n}_total" not in docs]
    assert missing == [], f"metrics missing from docs/monitoring.md: {missing}"
    for command in (
        "charter traces list",
        "charter feedback",
        "charter metrics",
        "charter report",
        "charter retention apply",
        "charter traces show",
    ):
        assert command in docs, command
