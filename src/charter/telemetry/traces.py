"""Traces: one document per request with a span per stage, written through the masking choke point.

The pipeline builds a :class:`Trace` while a request runs (``trace.span("retrieve")`` times a stage and
records its attributes) and hands it to :meth:`TraceStore.write`, the only write path for trace content.
Content fields follow the charter's ``monitoring.fields`` policy (raw / masked / hashed / dropped); every
other string is masked; if masking fails the value becomes a redaction marker, never raw.

:meth:`TraceStore.write` returns only after the trace row is **committed** — in the server through a
group-commit writer that stores the traces of concurrent requests in one transaction while each request
waits for its own — so a trace is durable before the answer that it records is returned, and feedback,
review and trace reads find the request as soon as its answer arrives. Then the *masked* document goes to
the sinks (the metrics cache invalidation and the OTLP exporter, wired by
:func:`charter.telemetry.trace_store_for`); a failing sink is logged and never fails the request.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from charter.errors import CharterRuntimeError, NotFound
from charter.store import Store, utcnow
from charter.store.tables import trace_sources, trace_spans, traces
from charter.telemetry.masking import Masker, PatternMasker, mask_any, protect

log = logging.getLogger("charter.telemetry")
Sink = Callable[[dict[str, Any]], None]
Status = Literal["answered", "needs_human", "refused", "error"]

# Fields whose policy comes from the charter's monitoring.fields; all other strings are always masked.
CONTENT_FIELDS = ("question", "answer", "agent_notes", "principal", "tool_args", "feedback_comment")


#: How requests arrive. Only ``server`` is production traffic (the gate's latency and cost read it alone);
#: ``local`` is an in-process call that set no channel (library use, tests).
CHANNELS = ("server", "cli", "eval", "drill", "probe", "local")
_channel: ContextVar[str] = ContextVar("charter_channel", default="local")


def current_channel() -> str:
    """The channel the current request arrives by (see :func:`recording_channel`)."""
    return _channel.get()


@contextmanager
def recording_channel(channel: str) -> Iterator[None]:
    """Traces of requests made inside this block (this thread or task, and what it spawns with a copy of
    its context) record ``channel``."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; one of {', '.join(CHANNELS)}")
    token = _channel.set(channel)
    try:
        yield
    finally:
        _channel.reset(token)


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
    channel: str = Field(default_factory=current_channel)
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
        """Time a stage; the yielded dict collects its attributes. Errors are recorded and re-raised."""
        started, t0 = utcnow(), time.perf_counter()
        attrs: dict[str, Any] = dict(attributes)
        try:
            yield attrs
        except BaseException as exc:
            self.spans.append(
                SpanRecord(
                    stage=stage,
                    started_at=started,
                    duration_ms=(time.perf_counter() - t0) * 1000,
                    status="error",
                    attributes=attrs,
                    error=f"{type(exc).__name__}: {exc}",
                )
            )
            raise
        self.spans.append(
            SpanRecord(
                stage=stage,
                started_at=started,
                duration_ms=(time.perf_counter() - t0) * 1000,
                attributes=attrs,
            )
        )

    @property
    def stage_latency_ms(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in self.spans:  # a stage that ran several times (an agent's steps) counts in full
            out[s.stage] = round(out.get(s.stage, 0.0) + s.duration_ms, 3)
        return out


class TraceStore:
    """Writes and reads traces; the only code that writes trace content to the database."""

    def __init__(
        self,
        store: Store,
        *,
        field_policies: dict[str, str] | None = None,
        masker: Masker | None = None,
        salt: bytes = b"charter",
        sinks: Iterable[Sink] = (),
    ) -> None:
        self.store = store
        self.policies = dict(field_policies or {})
        self.masker = masker or PatternMasker(salt)
        self.salt = salt
        self.sinks: list[Sink] = list(sinks)
        self.on_change: list[Callable[[], None]] = []  # e.g. the metrics collector drops its cache
        self._writer: _GroupCommitWriter | None = None

    def notify_changed(self) -> None:
        """Tell listeners that monitoring data changed (a trace or feedback was written, or deleted)."""
        for listener in self.on_change:
            try:
                listener()
            except Exception:
                log.warning("change listener %r failed", listener, exc_info=True)

    def _policy(self, name: str) -> str:
        return self.policies.get(name, "masked")

    def protect(self, value: Any, field: str) -> Any:
        """Apply the charter's policy for ``field`` (``question``, ``answer``, ``feedback_comment``, …)."""
        return protect(value, self._policy(field), self.masker, self.salt)

    def protect_document(self, trace: Trace) -> dict[str, Any]:
        """The masked document that is stored (and exported)."""
        doc = trace.model_dump(mode="json")
        out: dict[str, Any] = {}
        for key, value in doc.items():
            if key == "question":
                out[key] = self.protect(value, "question")
            elif key in ("answer", "agent_notes"):
                out[key] = self.protect(value, "answer")
            elif key == "principal_id":
                out[key] = self.protect(value, "principal")
            elif key == "tool_calls":
                out[key] = [
                    {
                        **mask_any({k: v for k, v in call.items() if k != "args"}, self.masker),
                        "args": self.protect(call.get("args"), "tool_args"),
                    }
                    for call in value
                ]
            elif key == "spans":
                out[key] = [
                    {
                        **{k: v for k, v in span.items() if k not in ("attributes", "error")},
                        "attributes": mask_any(span["attributes"], self.masker),
                        "error": mask_any(span["error"], self.masker),
                    }
                    for span in value
                ]
            elif key in (
                "request_id",
                "channel",
                "workflow",
                "started_at",
                "status",
                "model",
                "provider",
                "prompt_version",
                "index_version",
                "charter_fingerprint",
                "usage_source",
                "cost_source",
                "input_tokens",
                "output_tokens",
                "cost_usd",
                "latency_ms",
                "groundedness",
            ):
                out[key] = value
            else:
                out[key] = mask_any(value, self.masker)
        return out

    def principal_key(self, principal_id: str) -> str:
        """How a principal id is stored under the monitoring policy (raw or pseudonymous)."""
        value = protect(principal_id, self._policy("principal"), self.masker, self.salt)
        return str(value) if value is not None else "-"

    def _rows(self, trace: Trace, doc: dict[str, Any]) -> _Rows:
        first_error = doc["errors"][0] if doc["errors"] else {}
        cited = {c.get("chunk_id") for c in doc["citations"]}
        row = {
            "request_id": trace.request_id,
            "workflow": trace.workflow,
            "principal_id": doc["principal_id"] or "-",
            "started_at": trace.started_at,
            "status": trace.status,
            "model": _short(doc["model"], 200),
            "provider": _short(doc["provider"], 100),
            "prompt_version": _short(doc["prompt_version"], 100),
            "index_version": _short(doc["index_version"], 100),
            "tool_refusals": sum(1 for c in doc["tool_calls"] if c.get("decision") == "refused"),
            "cost_usd": trace.cost_usd,
            "cost_source": _short(trace.cost_source, 30),
            "latency_ms": trace.latency_ms,
            "input_tokens": trace.input_tokens,
            "output_tokens": trace.output_tokens,
            "escalation": _short((doc["escalation"] or {}).get("reason"), 100),
            "groundedness": trace.groundedness,
            "error_type": _short(first_error.get("type"), 100),
            "error_stage": _short(first_error.get("stage"), 50),
            "body": doc,
            "channel": _short(trace.channel, 20),
        }
        spans = [
            {
                "request_id": trace.request_id,
                "seq": i,
                "stage": s["stage"],
                "started_at": datetime.fromisoformat(s["started_at"]),
                "duration_ms": s["duration_ms"],
                "status": s["status"],
                "attributes": s["attributes"],
                "error": s["error"],
            }
            for i, s in enumerate(doc["spans"])
        ]
        sources = [
            {
                "request_id": trace.request_id,
                "rank": i,
                "started_at": trace.started_at,
                "source_id": _short(str(r.get("source") or r.get("source_id") or "-"), 100),
                "doc_id": _short(str(r.get("doc_id") or "-"), 300),
                "chunk_id": _short(str(r.get("chunk_id") or "-"), 300),
                "score": r.get("score") if isinstance(r.get("score"), int | float) else None,
                "cited": r.get("chunk_id") in cited,
            }
            for i, r in enumerate(doc["retrieved"], 1)
        ]
        return row, spans, sources

    def _insert(self, batch: list[_Rows]) -> None:
        self.store.insert_rows(
            [
                (traces, [row for row, _, _ in batch]),
                (trace_spans, [s for _, ss, _ in batch for s in ss]),
                (trace_sources, [s for _, _, ss in batch for s in ss]),
            ]
        )
        self.notify_changed()

    def enable_group_commit(self, *, linger: float = 0.0) -> None:
        """Commit concurrent requests' traces together (for the server); each :meth:`write` still returns
        only once *its* trace is committed.

        Each request masks its own trace. A request that finds no commit in progress commits in its own
        thread (no hand-off) everything queued so far; requests that arrive meanwhile wait and are committed
        together by the next leader (group commit). So a trace is durable before the answer leaves, and many
        concurrent requests cost one commit instead of contending for the write lock one by one. ``linger``
        (seconds, default 0) makes a leader wait that long to gather more: larger batches, slower answers.
        """
        if self._writer is None:
            self._writer = _GroupCommitWriter(self._insert, self._notify_sinks, linger=linger)

    #: The old name; the writer no longer returns before the commit.
    enable_background_writes = enable_group_commit

    def _prepare(self, trace: Trace) -> tuple[_Rows, dict[str, Any]]:
        doc = self.protect_document(trace)
        return self._rows(trace, doc), doc

    def _notify_sinks(self, doc: dict[str, Any]) -> None:
        for sink in self.sinks:
            try:
                sink(doc)
            except Exception:  # a broken exporter must never fail or slow down the request path
                log.warning("trace sink %r failed for %s", sink, doc.get("request_id"), exc_info=True)

    def flush(self, timeout: float | None = 30.0) -> None:
        """Wait until the group-commit writer is idle (every :meth:`write` already waits for its own)."""
        if self._writer is not None:
            self._writer.flush(timeout)

    def write(self, trace: Trace) -> dict[str, Any]:
        """Mask and store ``trace``; returns the masked document once the row is **committed**.

        With group commit on, the commit may be shared with other requests' traces, but this call waits
        for it. The sinks (metrics, OTLP) get the masked document after the commit; a failing sink is
        logged and never fails the request. If the trace cannot be stored the error is raised: an answer
        must not leave without its record."""
        rows, doc = self._prepare(trace)
        if self._writer is not None:
            self._writer.commit(rows, doc)
            return doc
        self._insert([rows])
        self._notify_sinks(doc)
        return doc

    def get(self, request_id: str) -> dict[str, Any]:
        """The stored (masked) trace with its feedback and review decisions, linked by request id."""
        self.flush()
        with self.store.connect() as conn:
            row = conn.execute(select(traces.c.body).where(traces.c.request_id == request_id)).first()
        if row is None:
            raise NotFound(f"no trace {request_id!r}")
        doc = dict(row[0])
        from charter.telemetry._feedback import feedback_for_request, review_decisions

        doc["feedback"] = feedback_for_request(self.store, request_id)
        doc["reviews"] = review_decisions(self.store, request_ids=[request_id])
        return doc

    def list(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        status: str | None = None,
        principal_id: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Summary rows, newest first. ``principal_id`` is the stored key (see :meth:`principal_key`)."""
        self.flush()
        q = (
            select(
                traces.c.request_id,
                traces.c.started_at,
                traces.c.principal_id,
                traces.c.status,
                traces.c.model,
                traces.c.prompt_version,
                traces.c.cost_usd,
                traces.c.latency_ms,
                traces.c.escalation,
                traces.c.groundedness,
                traces.c.error_type,
            )
            .order_by(traces.c.started_at.desc())
            .limit(limit)
        )
        if since is not None:
            q = q.where(traces.c.started_at >= since)
        if until is not None:
            q = q.where(traces.c.started_at < until)
        if status is not None:
            q = q.where(traces.c.status == status)
        if principal_id is not None:
            q = q.where(traces.c.principal_id == principal_id)
        with self.store.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(q)]


_Rows = tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]


class _Pending:
    __slots__ = ("doc", "done", "error", "rows")

    def __init__(self, rows: _Rows, doc: dict[str, Any]) -> None:
        self.rows, self.doc = rows, doc
        self.done = threading.Event()
        self.error: BaseException | None = None


class _GroupCommitWriter:
    """Leader/follower group commit: no thread hand-off when requests do not overlap.

    A request that finds no commit in progress becomes the leader: it takes every trace queued so far (its
    own included), commits them in one transaction in its own thread, wakes the followers whose traces were
    in the batch, and then hands the sinks the masked documents. A request that finds a commit in progress
    queues its trace and waits; when that commit ends, one of the waiters leads the next batch. Every waiting
    request learns the outcome of the commit that held its trace (success or the database error)."""

    def __init__(
        self,
        insert: Callable[[list[_Rows]], None],
        committed: Callable[[dict[str, Any]], None],
        max_batch: int = 500,
        linger: float = 0.0,
        timeout: float = 60.0,
    ) -> None:
        self._insert = insert
        self._committed = committed
        self._max = max_batch
        self._linger = linger
        self._timeout = timeout
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._leading = False

    def commit(self, rows: _Rows, doc: dict[str, Any]) -> None:
        """Store one trace (in a shared transaction) and return once it is committed; raise if it is not."""
        item = _Pending(rows, doc)
        deadline = time.monotonic() + self._timeout
        batch: list[_Pending] | None = None
        with self._cond:
            self._pending.append(item)
            while not item.done.is_set():
                if not self._leading:
                    self._leading = True
                    batch, self._pending = self._pending[: self._max], self._pending[self._max :]
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CharterRuntimeError(
                        f"trace {doc.get('request_id')} was not committed within {self._timeout:.0f}s; "
                        "check the database (the answer is withheld rather than given without its record)"
                    )
                self._cond.wait(left)
        if batch is not None:
            self._lead(batch)
        if item.error is not None:
            raise CharterRuntimeError(
                f"trace {doc.get('request_id')} could not be stored: {item.error}"
            ) from item.error

    def _lead(self, batch: list[_Pending]) -> None:
        try:
            if self._linger:
                time.sleep(self._linger)
                with self._cond:
                    room = self._max - len(batch)
                    batch, self._pending = batch + self._pending[:room], self._pending[room:]
            self._insert([p.rows for p in batch])
        except BaseException as exc:  # every waiting request learns the outcome
            log.exception("trace writer: could not store %d traces", len(batch))
            for p in batch:
                p.error = exc
        finally:
            with self._cond:
                for p in batch:
                    p.done.set()
                self._leading = False
                self._cond.notify_all()
        for p in batch:
            if p.error is None:
                self._committed(p.doc)

    def flush(self, timeout: float | None = 30.0) -> None:
        """Wait until no trace is queued and no commit is in progress."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._pending or self._leading:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    log.error("trace writer: %d traces still queued after %.0fs", len(self._pending), timeout)
                    return
                self._cond.wait(left)


def _short(value: Any, size: int) -> Any:
    return value[:size] if isinstance(value, str) else value
