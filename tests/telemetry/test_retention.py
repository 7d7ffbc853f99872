"""Retention deletes old traces and feedback, keeps recent ones, and leaves the audit chain verifiable."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

from _monitoring_helpers import scripted_trace
from sqlalchemy import func, select

from charter.runtime import Runtime
from charter.store import utcnow
from charter.store.tables import feedback, trace_sources, trace_spans, traces
from charter.telemetry import SpanRecord, apply_retention, record_feedback, trace_store_for


def _count(rt: Runtime, table) -> int:  # type: ignore[no-untyped-def]
    with rt.store.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar() or 0)


def test_retention_apply(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(3)
    rt = Runtime.open(project)
    store = trace_store_for(rt)
    now = utcnow()
    keep = rt.spec.monitoring.retention
    old_ids, new_ids = [], []
    for age_days in (keep.days + 1, keep.days + 30, 1, 0.1):
        t = scripted_trace(
            rng,
            workflow=rt.spec.workflow.id,
            principal="ana",
            started_at=now - timedelta(days=age_days),
            cited=[("help-center", "a.md")],
        )
        t.spans = [SpanRecord(stage="retrieve", started_at=t.started_at, duration_ms=1.0)]
        store.write(t)
        (old_ids if age_days > keep.days else new_ids).append(t.request_id)
        rt.audit.append(
            actor="ana",
            action="ask.answered",
            resource=f"request:{t.request_id}",
            outcome="answered",
            details={"request_id": t.request_id},
        )
        record_feedback(rt, t.request_id, rt.charter.principal("ana"), rating="up")
    dry = apply_retention(rt, dry_run=True)
    assert (dry.traces, dry.spans, dry.sources, dry.feedback) == (2, 2, 2, 2)
    assert _count(rt, traces) == 4
    rt.close()

    r = cli("retention", "apply", "--charter", str(project), "--json")
    assert r.exit_code == 0, r.stderr
    assert {k: r.json()[k] for k in ("traces", "spans", "sources", "feedback")} == {
        "traces": 2,
        "spans": 2,
        "sources": 2,
        "feedback": 2,
    }
    rt = Runtime.open(project)
    with rt.store.connect() as conn:
        left = {row[0] for row in conn.execute(select(traces.c.request_id))}
        fb_left = {row[0] for row in conn.execute(select(feedback.c.request_id))}
    assert left == set(new_ids) == fb_left
    assert _count(rt, trace_spans) == 2 and _count(rt, trace_sources) == 2
    assert apply_retention(rt).traces == 0  # idempotent
    rt.close()
    verified = cli("audit", "verify", "--charter", str(project), "--json")
    assert verified.exit_code == 0, verified.stdout + verified.stderr
