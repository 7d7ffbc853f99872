"""Acceptance, end to end: requests through ``charter.pipeline.ask`` (extractive model, synced example) with
PII and secrets planted in questions, a document, feedback and errors; nothing planted is stored, exported or
reported, and canary tokens never show up in a trace view or report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _monitoring_helpers import PLANTED, db_files, scan_files, scan_text
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select

from charter.errors import CharterException
from charter.pipeline import ask
from charter.runtime import Runtime
from charter.store.tables import feedback, trace_sources, trace_spans, traces
from charter.telemetry import (
    TraceExporter,
    build_report,
    metrics_for,
    record_feedback,
    render_report,
    trace_store_for,
)

DOC_PLANTED = {
    "email": "disputes-desk@quillo-payments.example",
    "phone": "+44 20 7946 0321",
    "iban": "GB29 NWBK 6016 1331 9268 19",
    "key": "sk-live-4eC39HqLyjWDarjtT1zdp7dc",
}
CANARIES = ("CANARY-FIN-7d3a91", "CANARY-PRICE-4be2c8")


@pytest.mark.slow
def test_end_to_end_requests_leave_no_planted_values(synced_project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    from charter.sources import sync_sources

    doc = synced_project.parent / "sources" / "help-center" / "refund-disputes-contacts.md"
    doc.write_text(
        "# Refund disputes: who to contact\n\nFor refund disputes write to the disputes desk at "
        f"{DOC_PLANTED['email']} or call {DOC_PLANTED['phone']}. Refunds for disputed charges are "
        f"paid to the account {DOC_PLANTED['iban']}. The integration key is {DOC_PLANTED['key']}.\n"
    )
    rt = Runtime.open(synced_project)
    sync_sources(rt, "help-center")
    store = trace_store_for(rt)
    spans = InMemorySpanExporter()
    exporter = TraceExporter(spans, include_content=True, batch=False)
    store.sinks.append(exporter)
    ana = rt.charter.principal("ana")
    p = PLANTED
    questions = [
        f"How long does a refund take to show up on my card {p['card']}? Reply to {p['email']}.",
        f"Customer {p['email2']} ({p['phone_us']}) was charged twice, card {p['card_dashes']}; what now?",
        f"Can they pay by bank transfer from IBAN {p['iban']} instead, phone {p['phone_intl']}?",
        f"Integration failed with {p['openai_key']}, header Authorization: {p['bearer']}; how do I cancel?",
        "Who do I contact about refund disputes?",
    ]
    ids = []
    for q in questions:
        result = ask(rt, ana, q, trace_store=store)  # drafts go to the (sealed) review queue too
        ids.append(result.request_id)
        record_feedback(
            rt,
            result.request_id,
            ana,
            rating="down",
            reasons=["inaccurate"],
            comment=f"customer {p['email']} on {p['phone_us']} says wrong; token {p['github_token']}",
        )
    # a refused request: the error message carries the question's values into the trace's errors
    with pytest.raises(CharterException):
        ask(
            rt,
            ana,
            f"{p['aws_key']} {p['iban_compact']} " + "x" * (rt.spec.limits.max_question_chars + 1),
            trace_store=store,
            submit_for_review=False,
        )
    # the restricted canary documents: a question that would retrieve them, asked by someone without access
    ask(
        rt,
        ana,
        "What is the price of Project Lantern and the finance canary reference?",
        trace_store=store,
        submit_for_review=False,
    )
    exporter.flush()
    answers = [store.get(i)["answer"] or "" for i in ids]
    assert any("<EMAIL_" in a or "<PHONE_" in a or "<IBAN_" in a for a in answers)  # the document was quoted

    outputs = {
        "spans": json.dumps([dict(s.attributes or {}) for s in spans.get_finished_spans()]),
        "report.md": render_report(build_report(rt), "md"),
        "report.html": render_report(build_report(rt), "html"),
        "report.json": render_report(build_report(rt), "json"),
        "metrics": metrics_for(rt).exposition(),
    }
    with rt.store.connect() as conn:  # the monitoring tables hold no document values either
        for table in (traces, trace_spans, trace_sources, feedback):
            outputs[f"table {table.name}"] = json.dumps(
                [list(r) for r in conn.execute(select(table))], default=str
            )
    rt.close()
    for name, args in {
        "ana trace list": ("traces", "list", "--as", "ana", "--json"),
        "omar report": ("report", "--as", "omar", "--format", "json"),
    }.items():
        r = cli(*args, "--charter", str(synced_project))
        assert r.exit_code == 0, r.stderr
        outputs[name] = r.stdout
    leaks = [hit for name, text in outputs.items() for hit in scan_text(name, text)]
    leaks += [
        (name, v) for name, text in outputs.items() for v in (*DOC_PLANTED.values(), *CANARIES) if v in text
    ]
    # question, feedback and error values are nowhere in the database file or its WAL (documents are: they
    # are the knowledge base, so the byte scan uses the values planted outside documents)
    leaks += scan_files(db_files(synced_project.parent / ".charter" / "charter.db"))
    assert leaks == []
