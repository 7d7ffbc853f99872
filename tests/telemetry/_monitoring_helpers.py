"""Shared by the monitoring tests: planted secrets, trace builders, a byte-level leak scanner and the writer of
generated monitoring histories (the oracle tests' Hypothesis operations)."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charter.store import utcnow
from charter.telemetry import Trace

if TYPE_CHECKING:
    from charter.runtime import Runtime

# Every value here must never be found raw anywhere Charter writes (database, WAL, spans, reports).
PLANTED: dict[str, str] = {
    "email": "zoe.kowalski@example-mail.com",
    "email2": "billing+acct42@quillo-customer.co.uk",
    "phone_us": "(415) 555-2671",
    "phone_intl": "+44 20 7946 0958",
    "card": "4111 1111 1111 1111",
    "card_dashes": "5555-5555-5555-4444",
    "card_compact": "378282246310005",
    "iban": "GB82 WEST 1234 5698 7654 32",
    "iban_compact": "DE89370400440532013000",
    "openai_key": "sk-proj-Zq8vT3kLmN4pR7sW2xY5aB9cD1eF6gH0",
    "aws_key": "AKIAIOSFODNN7EXAMPLE",
    "github_token": "ghp_aB3dE5gH7jK9mN1pQ3rS5tU7vW9xY1zA2bC4",
    "bearer": "Bearer tok_live_7Hq2Xv9LmP4sR8tW3yZ6",
    "password_assignment": "password=Hunter2-Secret!",
}
# Fragments that must not survive either (e.g. the token without the word "Bearer").
FRAGMENTS = [
    "tok_live_7Hq2Xv9LmP4sR8tW3yZ6",
    "Zq8vT3kLmN4pR7sW2xY5aB9cD1eF6gH0",
    "Hunter2-Secret!",
    "zoe.kowalski",
    "7946 0958",
    "555-2671",
    "1111 1111 1111",
    "5555-5555-5555",
    "378282246310005",
    "WEST 1234 5698",
    "370400440532013000",
    "IOSFODNN7EXAMPLE",
]


def needles() -> list[str]:
    return [*PLANTED.values(), *FRAGMENTS]


def scan_files(paths: list[Path]) -> list[tuple[str, str]]:
    """(file, needle) for every planted value found in the raw bytes of ``paths`` (missing files skipped)."""
    found = []
    for p in paths:
        if not p.exists():
            continue
        data = p.read_bytes()
        for n in needles():
            if n.encode() in data or n.encode("utf-16-le") in data:
                found.append((p.name, n))
    return found


def scan_text(name: str, text: str) -> list[tuple[str, str]]:
    return [(name, n) for n in needles() if n in text]


def db_files(db: Path) -> list[Path]:
    return [db, Path(str(db) + "-wal"), Path(str(db) + "-shm"), Path(str(db) + "-journal")]


def pii_trace(workflow: str, principal: str, *, started_at: datetime | None = None) -> Trace:
    """A trace with every planted value in the question, answer, tool args, errors and span attributes."""
    p = PLANTED
    t = Trace(
        workflow=workflow,
        principal_id=principal,
        question=(
            f"Customer {p['email']} (phone {p['phone_us']}) paid with {p['card']} and wants the refund to "
            f"IBAN {p['iban']}; our key {p['openai_key']} failed."
        ),
        started_at=started_at or utcnow(),
    )
    with t.span("admit") as s:
        s["note"] = f"header Authorization: {p['bearer']}"
    with t.span("retrieve") as s:
        s["k"] = 5
    t.retrieved = [
        {
            "chunk_id": "help-center:refunds.md#0",
            "source": "help-center",
            "doc_id": "refunds.md",
            "rank": 1,
            "score": 0.9,
        }
    ]
    t.citations = [
        {
            "id": "S1",
            "chunk_id": "help-center:refunds.md#0",
            "source_id": "help-center",
            "doc_id": "refunds.md",
        }
    ]
    t.tool_calls = [
        {
            "tool": "lookup_invoice",
            "decision": "allowed",
            "args": {"email": p["email2"], "card": p["card_dashes"], "note": p["password_assignment"]},
            "error": f"upstream said: bad token {p['github_token']} for {p['phone_intl']}",
        }
    ]
    t.errors = [
        {
            "type": "ProviderError",
            "message": f"auth failed with {p['aws_key']} for {p['iban_compact']}",
            "stage": "generate",
        }
    ]
    t.answer = f"We refunded card {p['card_compact']}; write to {p['email']}."
    t.agent_notes = f"Customer phone {p['phone_intl']}"
    t.status = "answered"
    t.model, t.provider, t.prompt_version = "extractive", "extractive", "v1"
    t.input_tokens, t.output_tokens, t.cost_usd, t.cost_source = 120, 40, 0.0012, "estimated"
    t.latency_ms = 12.5
    return t


def scripted_trace(
    rng: random.Random,
    *,
    workflow: str,
    principal: str,
    started_at: datetime,
    cited: list[tuple[str, str]],
    status: str = "answered",
    prompt_version: str = "v1",
    cost: float = 0.001,
    groundedness: float | None = 0.8,
    escalation: str | None = None,
    error: tuple[str, str, str] | None = None,
) -> Trace:
    t = Trace(
        workflow=workflow,
        principal_id=principal,
        question=f"question {rng.random():.6f}",
        started_at=started_at,
    )
    t.retrieved = [
        {"chunk_id": f"{s}:{d}#0", "source": s, "doc_id": d, "rank": i, "score": 0.5}
        for i, (s, d) in enumerate(cited, 1)
    ]
    t.citations = [
        {"id": f"S{i}", "chunk_id": f"{s}:{d}#0", "source_id": s, "doc_id": d}
        for i, (s, d) in enumerate(cited, 1)
    ]
    t.status = status  # type: ignore[assignment]
    t.answer = "an answer"
    t.model, t.provider, t.prompt_version = "extractive", "extractive", prompt_version
    t.cost_usd, t.cost_source = cost, "estimated"
    t.input_tokens, t.output_tokens = 100, 20
    t.groundedness = groundedness
    t.latency_ms = 10.0
    if escalation:
        t.escalation = {"reason": escalation, "to": "lead"}
    if error:
        t.errors = [{"type": error[0], "message": error[1], "stage": error[2]}]
    return t


def days_ago(now: datetime, days: float) -> datetime:
    return now - timedelta(days=days)


def write_history(rt: Runtime, ops: list[dict[str, Any]], now: datetime) -> None:
    """Write a generated history through the production paths: the trace store, the review queue and
    :func:`charter.telemetry.record_feedback` (plus feedback rows inserted directly, for reason lists no
    front end would send). One operation is one request, ``minutes`` before ``now``; every key but
    ``minutes``, ``prompt_version``, ``model``, ``status``, ``escalation``, ``cost`` and ``groundedness``
    is optional:

    * ``index_version``, ``latency`` (ms), ``refused_tools``: the trace's labels and numbers;
    * ``cited`` / ``uncited``: ``(source, document)`` pairs retrieved and cited / retrieved only
      (``trace_sources``); the request's principal is ``u<minutes % 3>``;
    * ``error``: ``(type, stage, message)`` of the request's error;
    * ``review`` (approve | edit | reject, with ``reject_reason``), decided before the trace is written when
      ``review_first``;
    * ``ratings`` (``up`` / ``down``, each one feedback row by lena with ``reasons``) and ``raw_feedback``
      (``(rating, reasons)`` inserted as a row).
    """
    from tests.telemetry.test_trends import fast_store, make_trace, review

    from charter.store.tables import feedback
    from charter.telemetry import record_feedback

    ts = fast_store(rt)
    lena = rt.charter.principal("lena")  # may rate any trace (traces.read_all)
    for op in ops:
        t = make_trace(
            rt,
            now - timedelta(minutes=op["minutes"]),
            prompt_version=op["prompt_version"],
            model=op["model"],
            index_version=op.get("index_version", "idx-1"),
            status=op["status"],
            escalation=op["escalation"],
            latency_ms=op.get("latency", 100.0),
            cost=op["cost"],
            groundedness=op["groundedness"],
            refused_tools=op.get("refused_tools", 0),
        )
        t.principal_id = f"u{op['minutes'] % 3}"
        retrieved = [(s, d, True) for s, d in op.get("cited", [])]
        retrieved += [(s, d, False) for s, d in op.get("uncited", [])]
        t.retrieved = [
            {"chunk_id": f"{s}:{d}#{i}", "source": s, "doc_id": d, "rank": i, "score": 0.5}
            for i, (s, d, _) in enumerate(retrieved, 1)
        ]
        t.citations = [
            {"id": f"S{i}", "chunk_id": f"{s}:{d}#{i}", "source_id": s, "doc_id": d}
            for i, (s, d, cited) in enumerate(retrieved, 1)
            if cited
        ]
        if op.get("error"):
            etype, stage, message = op["error"]
            t.errors = [{"type": etype, "stage": stage, "message": message}]
        decision = op.get("review")
        reason = op.get("reject_reason", "inaccurate") if decision == "reject" else None
        if decision and op.get("review_first"):
            review(rt, t.request_id, decision, reason)
        ts.write(t)
        if decision and not op.get("review_first"):
            review(rt, t.request_id, decision, reason)
        for rating in op.get("ratings", []):
            record_feedback(rt, t.request_id, lena, rating=rating, reasons=op.get("reasons", []))
        if op.get("raw_feedback") is not None:  # any reason list, duplicates and punctuation included
            rating, reasons = op["raw_feedback"]
            with rt.store.begin() as conn:
                conn.execute(
                    feedback.insert().values(
                        id="fb_" + uuid.uuid4().hex[:20],
                        request_id=t.request_id,
                        created_at=now,
                        principal_id="x",
                        rating=rating,
                        reasons=reasons,
                    )
                )
