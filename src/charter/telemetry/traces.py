"""Traces: one document per request with a span per stage, written through the masking choke point.

The pipeline builds a :class:`Trace` while a request runs (``trace.span("retrieve")`` times a stage and
records its attributes) and hands it to :meth:`TraceStore.write`, the only write path for trace content.
Content fields follow the charter's ``monitoring.fields`` policy (raw / masked / hashed / dropped); every
other string is masked; if masking fails the value becomes a redaction marker, never raw.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from charter.errors import NotFound
from charter.store import Store, utcnow
from charter.telemetry._trace_tables import trace_spans, traces
from charter.telemetry.masking import Masker, PatternMasker, mask_any, protect

Status = Literal["answered", "needs_human", "refused", "error"]

# Fields whose policy comes from the charter's monitoring.fields; all other strings are always masked.
CONTENT_FIELDS = ("question", "answer", "agent_notes", "principal", "tool_args", "feedback_comment")


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex[:20]


class SpanRecord(BaseModel):
    """What one stage did."""

    model_config = ConfigDict(extra="forbid")

    stage: str
    started_at: datetime
    duration_ms: float
    status: Literal["ok", "error", "skipped"] = "ok"
    attributes: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class Trace(BaseModel):
    """Everything that happened in one request."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)

    request_id: str = Field(default_factory=new_request_id)
    workflow: str
    principal_id: str
    started_at: datetime = Field(default_factory=utcnow)
    status: Status = "error"
    question: str = ""
    answer: str | None = None
    agent_notes: str | None = None
    citations: list[dict[str, Any]] = Field(default_factory=list)
    retrieved: list[dict[str, Any]] = Field(default_factory=list)
    tool_calls: list[dict[str, Any]] = Field(default_factory=list)
    errors: list[dict[str, Any]] = Field(default_factory=list)
    model: str | None = None
    provider: str | None = None
    prompt_version: str | None = None
    index_version: str | None = None
    charter_fingerprint: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    usage_source: str | None = None
    cost_usd: float = 0.0
    cost_source: str | None = None
    latency_ms: float = 0.0
    groundedness: float | None = None
    escalation: dict[str, Any] | None = None
    checks: dict[str, Any] = Field(default_factory=dict)
    spans: list[SpanRecord] = Field(default_factory=list)

    @contextmanager
    def span(self, stage: str, **attributes: Any) -> Iterator[dict[str, Any]]:
        """Time a stage; the yielded dict collects the stage's attributes. Errors are recorded and re-raised."""
        started, t0 = utcnow(), time.perf_counter()
        attrs: dict[str, Any] = dict(attributes)
        try:
            yield attrs
        except BaseException as exc:
            self.spans.append(SpanRecord(stage=stage, started_at=started, duration_ms=(time.perf_counter() - t0) * 1000,
                                         status="error", attributes=attrs, error=f"{type(exc).__name__}: {exc}"))
            raise
        self.spans.append(SpanRecord(stage=stage, started_at=started, duration_ms=(time.perf_counter() - t0) * 1000,
                                     attributes=attrs))

    @property
    def stage_latency_ms(self) -> dict[str, float]:
        return {s.stage: round(s.duration_ms, 3) for s in self.spans}


class TraceStore:
    """Writes and reads traces; the only code that writes trace content to the database."""

    def __init__(self, store: Store, *, field_policies: dict[str, str] | None = None,
                 masker: Masker | None = None, salt: bytes = b"charter") -> None:
        self.store = store
        self.policies = dict(field_policies or {})
        self.masker = masker or PatternMasker(salt)
        self.salt = salt

    def _policy(self, name: str) -> str:
        return self.policies.get(name, "masked")

    def protect_document(self, trace: Trace) -> dict[str, Any]:
        """The masked document that is stored (and exported)."""
        doc = trace.model_dump(mode="json")
        out: dict[str, Any] = {}
        for key, value in doc.items():
            if key == "question":
                out[key] = protect(value, self._policy("question"), self.masker, self.salt)
            elif key in ("answer", "agent_notes"):
                out[key] = protect(value, self._policy("answer"), self.masker, self.salt)
            elif key == "principal_id":
                out[key] = protect(value, self._policy("principal"), self.masker, self.salt)
            elif key == "tool_calls":
                out[key] = [
                    {**mask_any({k: v for k, v in call.items() if k != "args"}, self.masker),
                     "args": protect(call.get("args"), self._policy("tool_args"), self.masker, self.salt)}
                    for call in value
                ]
            elif key in ("request_id", "workflow", "started_at", "status", "model", "provider", "prompt_version",
                         "index_version", "charter_fingerprint", "usage_source", "cost_source"):
                out[key] = value
            else:
                out[key] = mask_any(value, self.masker)
        return out

    def principal_key(self, principal_id: str) -> str:
        """How a principal id is stored under the monitoring policy (raw or pseudonymous)."""
        value = protect(principal_id, self._policy("principal"), self.masker, self.salt)
        return str(value) if value is not None else "-"

    def write(self, trace: Trace) -> None:
        doc = self.protect_document(trace)
        with self.store.begin() as conn:
            conn.execute(traces.insert().values(
                request_id=trace.request_id, workflow=trace.workflow, principal_id=doc["principal_id"] or "-",
                started_at=trace.started_at, status=trace.status, model=trace.model,
                prompt_version=trace.prompt_version, cost_usd=trace.cost_usd, latency_ms=trace.latency_ms,
                input_tokens=trace.input_tokens, output_tokens=trace.output_tokens,
                escalation=(trace.escalation or {}).get("reason"), groundedness=trace.groundedness, body=doc,
            ))
            if doc["spans"]:
                conn.execute(trace_spans.insert(), [
                    {"request_id": trace.request_id, "seq": i, "stage": s["stage"],
                     "started_at": datetime.fromisoformat(s["started_at"]), "duration_ms": s["duration_ms"],
                     "status": s["status"], "attributes": s["attributes"], "error": s["error"]}
                    for i, s in enumerate(doc["spans"])
                ])

    def get(self, request_id: str) -> dict[str, Any]:
        with self.store.connect() as conn:
            row = conn.execute(select(traces.c.body).where(traces.c.request_id == request_id)).first()
        if row is None:
            raise NotFound(f"no trace {request_id!r}")
        return dict(row[0])

    def list(self, *, since: datetime | None = None, status: str | None = None, principal_id: str | None = None,
             limit: int = 50) -> list[dict[str, Any]]:
        q = select(traces.c.request_id, traces.c.started_at, traces.c.principal_id, traces.c.status, traces.c.model,
                   traces.c.prompt_version, traces.c.cost_usd, traces.c.latency_ms, traces.c.escalation,
                   traces.c.groundedness).order_by(traces.c.started_at.desc()).limit(limit)
        if since is not None:
            q = q.where(traces.c.started_at >= since)
        if status is not None:
            q = q.where(traces.c.status == status)
        if principal_id is not None:
            q = q.where(traces.c.principal_id == principal_id)
        with self.store.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]
