"""OpenTelemetry export of recorded traces, following the GenAI semantic conventions.

Implemented version: **OpenTelemetry semantic conventions v1.41.0, GenAI (status: Development)** —
:data:`SEMCONV_VERSION`, also set as the tracer's schema URL. Cost has no standard attribute yet, so it is
exported both as ``gen_ai.usage.cost`` (USD) and as OpenInference's ``llm.cost.total``; OpenInference span
kinds (``openinference.span.kind``) are added so that Phoenix and similar tools render the tree.

One request becomes one OTel trace: a root ``invoke_workflow {workflow}`` span, a ``retrieval`` span, a
``chat {model}`` span, an ``execute_tool {name}`` span per tool call and a ``charter.{stage}`` span for
every other stage. The exporter receives the document *after* masking (it is a :class:`TraceStore` sink),
so nothing leaves the process unmasked; message content (question, answer, tool arguments) is exported only
when the charter sets ``monitoring.exporters.include_content``.
"""

from __future__ import annotations

import atexit
import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanKind, Status, StatusCode, Tracer, set_span_in_context

if TYPE_CHECKING:
    from charter.telemetry._runtime import TelemetryRuntime

SEMCONV_VERSION = "1.41.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
_SCALARS = (str, bool, int, float)


def _ns(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1e9)


def _flat(prefix: str, attrs: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in attrs.items():
        if isinstance(v, _SCALARS):
            out[f"{prefix}.{k}"] = v
        elif v is not None:
            out[f"{prefix}.{k}"] = json.dumps(v, default=str, sort_keys=True)[:2000]
    return out


class TraceExporter:
    """Turns masked trace documents into GenAI spans and hands them to an OTel span exporter."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        include_content: bool = False,
        service_name: str = "charter",
        project: str | None = None,
        batch: bool = True,
    ) -> None:
        self.include_content = include_content
        resource = {"service.name": service_name, "openinference.project.name": project or service_name}
        self.provider = TracerProvider(resource=Resource.create(resource))
        self.processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self.provider.add_span_processor(self.processor)
        self.tracer: Tracer = self.provider.get_tracer("charter", schema_url=SCHEMA_URL)

    @classmethod
    def otlp(
        cls,
        endpoint: str,
        *,
        include_content: bool = False,
        service_name: str = "charter",
        project: str | None = None,
    ) -> TraceExporter:
        """Export over OTLP/HTTP (protobuf) to ``endpoint`` (``/v1/traces`` is appended unless present)."""
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        url = endpoint.rstrip("/")
        if not url.endswith("/v1/traces"):
            url += "/v1/traces"
        exp = cls(
            OTLPSpanExporter(endpoint=url, timeout=5),
            include_content=include_content,
            service_name=service_name,
            project=project,
        )
        atexit.register(exp.shutdown)  # short-lived CLI processes: flush what is queued
        return exp

    @classmethod
    def for_runtime(cls, rt: TelemetryRuntime) -> TraceExporter:
        ex = rt.spec.monitoring.exporters
        if not ex.otlp_endpoint:
            from charter.errors import UsageError

            raise UsageError("monitoring.exporters.otlp_endpoint is not set")
        return cls.otlp(
            ex.otlp_endpoint,
            project=rt.spec.workflow.id,
            include_content=ex.include_content,
            service_name=f"charter:{rt.spec.workflow.id}",
        )

    def flush(self, timeout_ms: int = 10_000) -> bool:
        return bool(self.provider.force_flush(timeout_ms))

    def shutdown(self) -> None:
        self.provider.shutdown()

    def __call__(self, doc: dict[str, Any]) -> None:
        self.export(doc)

    # ------------------------------------------------------------------------------------------ spans
    def export(self, doc: dict[str, Any]) -> None:
        """Emit the spans of one (already masked) trace document."""
        start = _ns(doc["started_at"])
        end = start + int(float(doc.get("latency_ms") or 0) * 1e6)
        for s in doc.get("spans") or []:
            end = max(end, _ns(s["started_at"]) + int(s["duration_ms"] * 1e6))
        root = self.tracer.start_span(
            f"invoke_workflow {doc['workflow']}",
            kind=SpanKind.INTERNAL,
            start_time=start,
            attributes=self._root_attributes(doc),
        )
        ctx = set_span_in_context(NonRecordingSpan(root.get_span_context()))
        for s in doc.get("spans") or []:
            self._stage_span(doc, s, ctx)
        for i, call in enumerate(doc.get("tool_calls") or []):
            self._tool_span(doc, call, i, ctx, start)
        if doc.get("status") == "error" or doc.get("errors"):
            first = (doc.get("errors") or [{}])[0]
            root.set_attribute("error.type", str(first.get("type") or "error"))
            if doc.get("status") == "error":
                root.set_status(Status(StatusCode.ERROR, str(first.get("message") or "")[:500]))
        root.end(end_time=end)

    def _root_attributes(self, doc: dict[str, Any]) -> dict[str, Any]:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_workflow",
            "gen_ai.workflow.name": doc["workflow"],
            "openinference.span.kind": "CHAIN",
            "charter.request_id": doc["request_id"],
            "charter.status": doc["status"],
            "charter.principal": str(doc.get("principal_id") or "-"),
            "gen_ai.usage.input_tokens": int(doc.get("input_tokens") or 0),
            "gen_ai.usage.output_tokens": int(doc.get("output_tokens") or 0),
            "gen_ai.usage.cost": float(doc.get("cost_usd") or 0.0),
            "llm.cost.total": float(doc.get("cost_usd") or 0.0),
            "llm.token_count.prompt": int(doc.get("input_tokens") or 0),
            "llm.token_count.completion": int(doc.get("output_tokens") or 0),
        }
        for key in (
            "model",
            "provider",
            "prompt_version",
            "index_version",
            "charter_fingerprint",
            "cost_source",
            "usage_source",
        ):
            if doc.get(key):
                attrs[f"charter.{key}"] = str(doc[key])
        if doc.get("groundedness") is not None:
            attrs["charter.groundedness"] = float(doc["groundedness"])
        if doc.get("escalation"):
            attrs["charter.escalation.reason"] = str(doc["escalation"].get("reason"))
        if self.include_content:
            if doc.get("question") is not None:
                attrs["input.value"] = str(doc["question"])
                attrs["gen_ai.input.messages"] = json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": str(doc["question"])}]}]
                )
            if doc.get("answer") is not None:
                attrs["output.value"] = str(doc["answer"])
                attrs["gen_ai.output.messages"] = json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text", "content": str(doc["answer"])}]}]
                )
        return attrs

    def _stage_span(self, doc: dict[str, Any], s: dict[str, Any], ctx: Any) -> None:
        stage = s["stage"]
        a = dict(s.get("attributes") or {})
        start = _ns(s["started_at"])
        attrs: dict[str, Any] = {"charter.stage": stage, "charter.request_id": doc["request_id"]}
        kind = SpanKind.INTERNAL
        if stage == "retrieve":
            name = "retrieval"
            docs = [{"id": r.get("chunk_id"), "score": r.get("score")} for r in doc.get("retrieved") or []]
            attrs.update(
                {
                    "gen_ai.operation.name": "retrieval",
                    "openinference.span.kind": "RETRIEVER",
                    "gen_ai.retrieval.documents": json.dumps(docs, default=str),
                    "gen_ai.data_source.id": str(doc.get("index_version") or "index"),
                }
            )
            if isinstance(a.get("k"), int):
                attrs["gen_ai.retrieval.top_k"] = a["k"]
            for i, d in enumerate(docs):
                attrs[f"retrieval.documents.{i}.document.id"] = str(d["id"])
                if isinstance(d["score"], int | float):
                    attrs[f"retrieval.documents.{i}.document.score"] = float(d["score"])
            a.pop("chunks", None)
        elif stage == "generate":
            model = str(a.get("model") or doc.get("model") or "unknown")
            name, kind = f"chat {model}", SpanKind.CLIENT
            tin, tout = int(a.get("input_tokens") or 0), int(a.get("output_tokens") or 0)
            cost = float(a.get("cost_usd") or 0.0)
            attrs.update(
                {
                    "gen_ai.operation.name": "chat",
                    "openinference.span.kind": "LLM",
                    "gen_ai.provider.name": str(a.get("provider") or doc.get("provider") or "unknown"),
                    "gen_ai.request.model": model,
                    "gen_ai.response.model": model,
                    "gen_ai.usage.input_tokens": tin,
                    "gen_ai.usage.output_tokens": tout,
                    "gen_ai.usage.cost": cost,
                    "llm.cost.total": cost,
                    "llm.model_name": model,
                    "llm.provider": str(a.get("provider") or doc.get("provider") or "unknown"),
                    "llm.token_count.prompt": tin,
                    "llm.token_count.completion": tout,
                    "llm.token_count.total": tin + tout,
                }
            )
        else:
            name = f"charter.{stage}"
        attrs.update(
            _flat(f"charter.{stage}", {k: v for k, v in a.items() if k not in ("model", "provider")})
        )
        span = self.tracer.start_span(name, context=ctx, kind=kind, start_time=start, attributes=attrs)
        if s.get("status") == "error":
            span.set_attribute("error.type", str(s.get("error") or "error").split(":")[0][:100])
            span.set_status(Status(StatusCode.ERROR, str(s.get("error") or "")[:500]))
        span.end(end_time=start + int(s["duration_ms"] * 1e6))

    def _tool_span(
        self, doc: dict[str, Any], call: dict[str, Any], i: int, ctx: Any, default_start: int
    ) -> None:
        tool = str(call.get("tool") or call.get("name") or "tool")
        start = _ns(call["started_at"]) if isinstance(call.get("started_at"), str) else default_start
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.type": "function",
            "openinference.span.kind": "TOOL",
            "tool.name": tool,
            "charter.request_id": doc["request_id"],
            "gen_ai.tool.call.id": str(call.get("id") or call.get("action_id") or i),
        }
        for key in ("decision", "status", "outcome"):
            if isinstance(call.get(key), _SCALARS):
                attrs[f"charter.tool.{key}"] = call[key]
        if self.include_content and call.get("args") is not None:
            attrs["gen_ai.tool.call.arguments"] = json.dumps(call["args"], default=str, sort_keys=True)
        span = self.tracer.start_span(f"execute_tool {tool}", context=ctx, start_time=start, attributes=attrs)
        if call.get("error"):
            span.set_attribute("error.type", "tool_error")
            span.set_status(Status(StatusCode.ERROR, str(call["error"])[:500]))
        span.end(end_time=start + int(float(call.get("duration_ms") or 0) * 1e6))
