"""Acceptance: planted PII and secrets never reach the database file, WAL, exported spans or reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _monitoring_helpers import PLANTED, db_files, pii_trace, scan_files, scan_text
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from charter.runtime import Runtime
from charter.telemetry import (
    TraceExporter,
    apply_retention,
    build_report,
    mask_text,
    metrics_for,
    record_feedback,
    render_report,
    trace_store_for,
)


def _db(project: Path) -> Path:
    return project.parent / ".charter" / "charter.db"


def test_planted_values_never_stored_exported_or_reported(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    rt = Runtime.open(project)
    store = trace_store_for(rt)
    spans = InMemorySpanExporter()
    exporter = TraceExporter(spans, include_content=True, batch=False)
    store.sinks.append(exporter)
    ana = rt.charter.principal("ana")
    ids = []
    for i in range(5):
        t = pii_trace(rt.spec.workflow.id, "ana")
        if i == 2:
            t.status = "error"
        store.write(t)
        ids.append(t.request_id)
        record_feedback(
            rt,
            t.request_id,
            ana,
            rating="down",
            reasons=["inaccurate"],
            comment=f"Customer {PLANTED['email']} says card {PLANTED['card']} was charged twice; "
            f"{PLANTED['bearer']} / {PLANTED['openai_key']}",
        )
    # an error message and an eval-report style document through the same masker
    assert PLANTED["aws_key"] not in (mask_text(rt, f"boom {PLANTED['aws_key']}") or "")
    exporter.flush()

    outputs = {
        "report.md": render_report(build_report(rt), "md"),
        "report.html": render_report(build_report(rt), "html"),
        "report.json": render_report(build_report(rt), "json"),
        "metrics": metrics_for(rt).exposition(),
        "spans": json.dumps(
            [
                {"name": s.name, "attributes": dict(s.attributes or {}), "status": s.status.description}
                for s in spans.get_finished_spans()
            ]
        ),
        "trace views": json.dumps([store.get(r) for r in ids], default=str),
        "trace list": json.dumps(store.list(), default=str),
    }
    assert len(spans.get_finished_spans()) >= 5 * 4
    assert "input.value" in outputs["spans"]  # content was exported (masked), so the scan is meaningful
    rt.close()
    for name, args in {
        "cli report": ("report", "--as", "omar", "--format", "html"),
        "cli traces": ("traces", "list", "--as", "omar", "--json"),
        "cli metrics": ("metrics",),
    }.items():
        r = cli(*args, "--charter", str(project))
        assert r.exit_code == 0, r.stderr
        outputs[name] = r.stdout
    leaks = [hit for name, text in outputs.items() for hit in scan_text(name, text)]
    leaks += scan_files(db_files(_db(project)))
    assert leaks == []


def test_retention_purge_leaves_no_trace_content_behind(project: Path) -> None:
    rt = Runtime.open(project)
    store = trace_store_for(rt)
    store.write(pii_trace(rt.spec.workflow.id, "ana"))
    apply_retention(rt, retention=__import__("datetime").timedelta(0))
    rt.close()
    assert scan_files(db_files(_db(project))) == []


def test_review_edits_and_audit_details_are_masked(project: Path) -> None:
    """Review text is the work product (it is what gets sent): sealed at rest, masked in audit details."""
    from charter.review import decide_draft, submit_draft

    rt = Runtime.open(project)
    t = pii_trace(rt.spec.workflow.id, "ana")
    trace_store_for(rt).write(t)
    item = submit_draft(
        rt,
        request_id=t.request_id,
        principal="ana",
        question=t.question,
        draft=t.answer or "",
        citations=[],
        escalation_reason="low_groundedness",
        groundedness=0.2,
    )
    from charter.errors import Denied

    with pytest.raises(Denied, match="draft checks"):  # personal data in an edit is refused, never stored
        decide_draft(
            rt,
            item.id,
            "lena",
            "edit",
            text=f"Refund sent to {PLANTED['iban']}; mail {PLANTED['email2']}",
            comment=f"fixed, customer phone {PLANTED['phone_us']}",
        )
    decide_draft(
        rt, item.id, "lena", "reject", reason="other", comment=f"customer phone {PLANTED['phone_us']}"
    )
    rt.close()
    assert scan_files(db_files(_db(project))) == []
