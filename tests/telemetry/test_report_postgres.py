"""Traces, feedback, metrics, the report and retention on a real PostgreSQL server (the session's, ``tests/_pg.py``)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from _monitoring_helpers import PLANTED, pii_trace, scripted_trace
from prometheus_client.parser import text_string_to_metric_families

from charter.runtime import Runtime
from charter.store import utcnow
from charter.telemetry import apply_retention, build_report, metrics_for, record_feedback, trace_store_for

pytestmark = pytest.mark.postgres


@pytest.fixture
def rt(pg_url: str, project: Path) -> Iterator[Runtime]:
    runtime = Runtime.open(project, database_url=pg_url)
    yield runtime
    runtime.close()


def test_monitoring_on_postgres(rt: Runtime) -> None:
    store = trace_store_for(rt)
    rng = random.Random(11)
    now = utcnow()
    bad = ("help-center", "legacy.md")
    expected_down = 0
    for i in range(60):
        cited = [("help-center", f"a{i % 4}.md")] + ([bad] if i % 3 == 0 else [])
        t = scripted_trace(
            rng,
            workflow=rt.spec.workflow.id,
            principal="ana",
            started_at=now - timedelta(hours=i),
            cited=cited,
            error=("ProviderError", f"timeout after {i}s", "generate") if i % 10 == 0 else None,
            status="error" if i % 10 == 0 else "answered",
        )
        store.write(t)
        down = bad in cited
        expected_down += down
        record_feedback(
            rt,
            t.request_id,
            rt.charter.principal("ana"),
            rating="down" if down else "up",
            comment=f"reach me at {PLANTED['email']}",
        )
    old = pii_trace(rt.spec.workflow.id, "ben", started_at=now - timedelta(days=400))
    store.write(old)
    doc = store.get(old.request_id)
    assert PLANTED["email"] not in repr(doc)

    report = build_report(rt, since=timedelta(days=7), now=now + timedelta(seconds=1))
    assert report["usage"]["requests"] == 60
    assert report["quality"]["feedback"]["down"] == expected_down == 20
    assert report["failures"][0]["count"] == 6 and report["failures"][0]["signature"].endswith(
        "timeout after #s"
    )
    first = report["source_blame"]["documents"][0]
    assert (first["doc_id"], first["negative"], first["blamed"]) == ("legacy.md", 20, True)

    samples = {
        (s.name, s.labels.get("status")): s.value
        for f in text_string_to_metric_families(metrics_for(rt).exposition())
        for s in f.samples
    }
    assert samples[("charter_requests_total", "answered")] == 54 + 1
    assert samples[("charter_requests_total", "error")] == 6

    result = apply_retention(rt)
    assert (result.traces, result.spans, result.sources) == (1, 2, 1)
    assert [
        r["request_id"]
        for r in store.list(since=now - timedelta(days=500), limit=1000)
        if r["request_id"] == old.request_id
    ] == []
