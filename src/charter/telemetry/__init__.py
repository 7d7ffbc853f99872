"""Telemetry: traces, masking, feedback, metrics, OpenTelemetry export, the operator report, retention
(and the audit log, in :mod:`charter.telemetry.audit`).

Public API:

* :class:`Trace`, :class:`SpanRecord`, :class:`TraceStore` — one masked document per request;
  :func:`trace_store_for` builds the runtime's store (charter field policies, masker, metrics, OTLP sink).
  Each trace records its channel (:data:`CHANNELS`; :func:`recording_channel` sets it for a block,
  :func:`current_channel` reads it): only ``server`` traces are production traffic for the gate.
* Masking at one choke point: :func:`masker_for`, :func:`mask_text`, :func:`mask_value` (use these on every
  write path), :class:`Masker`, :class:`PresidioMasker` (default), :class:`PatternMasker`,
  :func:`protect`, :data:`REDACTED`.
* Who may open which trace: :func:`visible_trace`, :func:`trace_list_filter` (:mod:`charter.access`'s
  rules on the trace store).
* Feedback: :func:`record_feedback`, :data:`FEEDBACK_REASONS`, :func:`review_decisions`.
* Metrics: :func:`metrics_for` (a per-runtime ``CollectorRegistry``; ``.exposition()``).
* OpenTelemetry: :class:`TraceExporter`, :data:`SEMCONV_VERSION`.
* Report: :func:`build_report`, :func:`render_report`, :func:`wilson_interval`, :func:`error_signature`.
* Alerts: :func:`alerts_once`, :func:`firing_alerts`; :func:`notify` sends to the charter's
  ``drift.notify`` (alerts and the gate's drift regressions).
* Retention: :func:`apply_retention`, :class:`RetentionScheduler`.
* Server start-up: :func:`start_server_telemetry` (background trace writes + periodic retention).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from charter.telemetry._alerts import alerts_once, firing_alerts, notify
from charter.telemetry._clusters import cases_from_cluster, find_cluster
from charter.telemetry._feedback import FEEDBACK_REASONS, record_feedback, review_decisions
from charter.telemetry._metrics import RuntimeMetrics, metrics_for
from charter.telemetry._report import build_report, error_signature
from charter.telemetry._report_render import TREND_CHARTS, comparison_text, render_report, trend_charts
from charter.telemetry._retention import (
    RetentionResult,
    RetentionScheduler,
    apply_retention,
    start_server_telemetry,
)
from charter.telemetry._trends import wilson_interval
from charter.telemetry._visibility import trace_list_filter, visible_trace
from charter.telemetry._wiring import mask_text, mask_value, masker_for, masking_salt, trace_store_for
from charter.telemetry.masking import REDACTED, Masker, NullMasker, PatternMasker, protect
from charter.telemetry.traces import (
    CHANNELS,
    SpanRecord,
    Trace,
    TraceStore,
    current_channel,
    recording_channel,
)

if TYPE_CHECKING:
    from charter.telemetry._otel import SEMCONV_VERSION, TraceExporter
    from charter.telemetry._presidio import PresidioMasker

_LAZY = {
    "PresidioMasker": "charter.telemetry._presidio",
    "TraceExporter": "charter.telemetry._otel",
    "SEMCONV_VERSION": "charter.telemetry._otel",
}


def __getattr__(name: str) -> Any:  # heavy imports (presidio, the OTel SDK) only when used
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


__all__ = [
    "CHANNELS",
    "FEEDBACK_REASONS",
    "REDACTED",
    "SEMCONV_VERSION",
    "TREND_CHARTS",
    "Masker",
    "NullMasker",
    "PatternMasker",
    "PresidioMasker",
    "RetentionResult",
    "RetentionScheduler",
    "RuntimeMetrics",
    "SpanRecord",
    "Trace",
    "TraceExporter",
    "TraceStore",
    "alerts_once",
    "apply_retention",
    "build_report",
    "cases_from_cluster",
    "comparison_text",
    "current_channel",
    "error_signature",
    "find_cluster",
    "firing_alerts",
    "mask_text",
    "mask_value",
    "masker_for",
    "masking_salt",
    "metrics_for",
    "notify",
    "protect",
    "record_feedback",
    "recording_channel",
    "render_report",
    "review_decisions",
    "start_server_telemetry",
    "trace_list_filter",
    "trace_store_for",
    "trend_charts",
    "visible_trace",
    "wilson_interval",
]
