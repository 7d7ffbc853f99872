"""Prometheus metrics computed from the database, so a short-lived CLI and a long-running server agree.

A :class:`DatabaseCollector` is registered in a dedicated ``CollectorRegistry`` per runtime (never the
global one). On each scrape it aggregates the ``traces``, ``trace_spans``, ``feedback`` and review tables
(cached for ``ttl`` seconds; :meth:`RuntimeMetrics.invalidate` is called by the trace store after every
write). Counters are therefore totals over the retained history: when retention deletes old traces they
go down, which Prometheus treats as a counter reset. Several API workers sharing one database report the
same numbers, which in-process counters could not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Select, case, func, select

from charter.store import Store, utcnow
from charter.store.switches import read_kill_switch
from charter.store.tables import feedback, trace_spans, traces

if TYPE_CHECKING:
    from charter.telemetry._runtime import TelemetryRuntime

#: Latency buckets in seconds (per stage and per request).
LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _histogram(
    conn: Any, duration_ms: Any, group: Any, table_filter: Select[Any]
) -> list[tuple[str, list[int], int, float]]:
    cols = [func.sum(case((duration_ms <= b * 1000.0, 1), else_=0)) for b in LATENCY_BUCKETS]
    q = table_filter.with_only_columns(
        group, func.count(), func.coalesce(func.sum(duration_ms), 0.0), *cols
    ).group_by(group)
    out = []
    for row in conn.execute(q):
        out.append((str(row[0]), [int(v or 0) for v in row[3:]], int(row[1]), float(row[2]) / 1000.0))
    return out


def _requests_and_errors(conn: Any, wf: str) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "charter_requests", "Requests recorded, by status.", labels=["workflow", "status"]
    )
    for status, n in conn.execute(select(traces.c.status, func.count()).group_by(traces.c.status)):
        requests.add_metric([wf, status], n)
    yield requests

    errors = CounterMetricFamily(
        "charter_errors",
        "Failed or refused requests by error category and stage.",
        labels=["workflow", "category", "stage"],
    )
    for etype, stage, n in conn.execute(
        select(traces.c.error_type, traces.c.error_stage, func.count())
        .where(traces.c.error_type.is_not(None))
        .group_by(traces.c.error_type, traces.c.error_stage)
    ):
        errors.add_metric([wf, etype, stage or "-"], n)
    yield errors


def _latency_histograms(conn: Any, wf: str) -> Iterator[Metric]:
    stage_h = HistogramMetricFamily(
        "charter_stage_latency_seconds",
        "Latency of each pipeline stage.",
        labels=["workflow", "stage"],
    )
    for stage, cum, count, total in _histogram(
        conn, trace_spans.c.duration_ms, trace_spans.c.stage, select(trace_spans.c.stage)
    ):
        stage_h.add_metric([wf, stage], _buckets(cum, count), total)
    yield stage_h

    req_h = HistogramMetricFamily(
        "charter_request_latency_seconds",
        "End-to-end request latency.",
        labels=["workflow", "status"],
    )
    for status, cum, count, total in _histogram(
        conn, traces.c.latency_ms, traces.c.status, select(traces.c.status)
    ):
        req_h.add_metric([wf, status], _buckets(cum, count), total)
    yield req_h


def _tokens_and_cost(conn: Any, wf: str) -> Iterator[Metric]:
    tokens = CounterMetricFamily("charter_tokens", "Model tokens.", labels=["workflow", "model", "direction"])
    cost = CounterMetricFamily(
        "charter_cost_usd", "Model cost in US dollars.", labels=["workflow", "model", "source"]
    )
    for model, source, tin, tout, usd in conn.execute(
        select(
            traces.c.model,
            traces.c.cost_source,
            func.sum(traces.c.input_tokens),
            func.sum(traces.c.output_tokens),
            func.sum(traces.c.cost_usd),
        )
        .where(traces.c.model.is_not(None))
        .group_by(traces.c.model, traces.c.cost_source)
    ):
        tokens.add_metric([wf, model, "input"], int(tin or 0))
        tokens.add_metric([wf, model, "output"], int(tout or 0))
        cost.add_metric([wf, model, source or "unknown"], float(usd or 0.0))
    yield tokens
    yield cost


def _escalations_and_feedback(conn: Any, wf: str) -> Iterator[Metric]:
    esc = CounterMetricFamily(
        "charter_escalations", "Requests routed to a human, by reason.", labels=["workflow", "reason"]
    )
    for reason, n in conn.execute(
        select(traces.c.escalation, func.count())
        .where(traces.c.escalation.is_not(None))
        .group_by(traces.c.escalation)
    ):
        esc.add_metric([wf, reason], n)
    yield esc

    fb = CounterMetricFamily("charter_feedback", "User feedback ratings.", labels=["workflow", "rating"])
    for rating, n in conn.execute(select(feedback.c.rating, func.count()).group_by(feedback.c.rating)):
        fb.add_metric([wf, "up" if rating > 0 else "down"], n)
    yield fb


def _month_spent(conn: Any) -> float:
    """Cost of the traces started this calendar month (UTC)."""
    return float(
        conn.execute(
            select(func.coalesce(func.sum(traces.c.cost_usd), 0.0)).where(
                traces.c.started_at >= _month_start(utcnow())
            )
        ).scalar()
        or 0.0
    )


class DatabaseCollector(Collector):
    """Collects Charter's metrics from the store (see the module docstring)."""

    def __init__(self, rt: TelemetryRuntime, *, ttl: float = 5.0) -> None:
        self.rt = rt
        self.store: Store = rt.store
        self.ttl = ttl
        self._cache: tuple[float, list[Metric]] | None = None
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._cache = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            now = time.monotonic()
            if self._cache is None or now - self._cache[0] > self.ttl:
                self._cache = (now, list(self._compute()))
            metrics = self._cache[1]
        yield from metrics

    def describe(self) -> Iterator[Metric]:
        return iter(())  # unchecked collector: no database access at registration time

    # ------------------------------------------------------------------------------------------ compute
    def _compute(self) -> Iterator[Metric]:
        wf = self.rt.spec.workflow.id
        with self.store.connect() as conn:
            yield from _requests_and_errors(conn, wf)
            yield from _latency_histograms(conn, wf)
            yield from self._latency_slo(conn, wf)
            yield from _tokens_and_cost(conn, wf)
            yield from _escalations_and_feedback(conn, wf)
            spent = _month_spent(conn)
        yield self._review_outcomes(wf)
        yield from self._budget(wf, spent)
        yield from self._operations(wf)
        yield from self._freshness(wf)

    def _latency_slo(self, conn: Any, wf: str) -> Iterator[Metric]:
        target_ms = self.rt.spec.latency.p95_ms
        slow = CounterMetricFamily(
            "charter_request_latency_slo_breaches",
            "Served requests (answered or needs_human) slower than the charter's latency.p95_ms.",
            labels=["workflow"],
        )
        slow.add_metric(
            [wf],
            int(
                conn.execute(
                    select(func.count()).where(
                        traces.c.status.in_(("answered", "needs_human")) & (traces.c.latency_ms > target_ms)
                    )
                ).scalar()
                or 0
            ),
        )
        yield slow
        yield _gauge(
            "charter_latency_slo_threshold_seconds",
            "The latency SLO threshold: the charter's latency.p95_ms, in seconds.",
            wf,
            target_ms / 1000.0,
        )
        yield _gauge(
            "charter_latency_slo_objective",
            "Share of served requests that must be faster than the threshold (drift.alerts.latency_objective).",
            wf,
            self.rt.spec.drift.alerts.latency_objective,
        )

    def _review_outcomes(self, wf: str) -> Metric:
        from charter.telemetry._feedback import review_decisions

        outcomes = CounterMetricFamily(
            "charter_review_outcomes", "Human review decisions on drafts.", labels=["workflow", "outcome"]
        )
        counts: dict[str, int] = {"unchanged": 0, "edited": 0, "rejected": 0}
        for d in review_decisions(self.store):
            counts[d["outcome"]] += 1
        for outcome, n in counts.items():
            outcomes.add_metric([wf, outcome], n)
        return outcomes

    def _budget(self, wf: str, spent: float) -> Iterator[Metric]:
        budgets = self.rt.spec.budgets
        yield _gauge(
            "charter_budget_month_spent_usd", "Cost so far this calendar month (UTC).", wf, float(spent)
        )
        yield _gauge(
            "charter_budget_month_limit_usd", "Monthly budget from the charter.", wf, budgets.monthly_usd
        )
        yield _gauge(
            "charter_budget_month_consumed_ratio",
            "Share of the monthly budget spent.",
            wf,
            float(spent) / budgets.monthly_usd if budgets.monthly_usd else 0.0,
        )
        yield _gauge(
            "charter_budget_task_limit_usd", "Per-request budget from the charter.", wf, budgets.per_task_usd
        )
        from charter.telemetry._alerts import budget_projection

        yield _gauge(
            "charter_budget_month_projected_usd",
            "This month's spend projected to the month's end at the month-to-date pace.",
            wf,
            budget_projection(self.rt)["projected_usd"],
        )

    def _operations(self, wf: str) -> Iterator[Metric]:
        """The kill switch and the drift loop's last audit chain verification."""
        from charter.telemetry._alerts import AUDIT_VERIFY_KEY

        yield _gauge(
            "charter_kill_switch_engaged",
            "1 while the workflow's kill switch is on.",
            wf,
            float(read_kill_switch(self.rt.store)),
        )
        verified = self.rt.get_state(AUDIT_VERIFY_KEY)
        ok = -1.0 if not isinstance(verified, dict) else (1.0 if verified.get("ok") else 0.0)
        yield _gauge(
            "charter_audit_verify_ok",
            "Last audit chain verification by the drift loop: 1 verified, 0 broken, -1 not verified yet.",
            wf,
            ok,
        )
        at = datetime.fromisoformat(verified["at"]).timestamp() if isinstance(verified, dict) else 0.0
        yield _gauge(
            "charter_audit_verify_timestamp_seconds",
            "Unix time of the last audit chain verification.",
            wf,
            at,
        )

    def _freshness(self, wf: str) -> Iterator[Metric]:
        try:
            from charter.sources import last_successful_syncs

            last: dict[str, datetime] = dict(last_successful_syncs(self.rt))
        except Exception:  # sources package or its tables not there yet: no freshness metrics
            last = {}
        now = utcnow()
        synced = GaugeMetricFamily(
            "charter_source_last_sync_timestamp_seconds",
            "Unix time of the last successful sync.",
            labels=["workflow", "source"],
        )
        age = GaugeMetricFamily(
            "charter_source_age_seconds",
            "Seconds since the last successful sync (-1: never).",
            labels=["workflow", "source"],
        )
        stale = GaugeMetricFamily(
            "charter_source_stale",
            "1 when the source is older than its freshness policy.",
            labels=["workflow", "source"],
        )
        for s in self.rt.spec.sources:
            at = last.get(s.id)
            synced.add_metric([wf, s.id], at.timestamp() if at else 0.0)
            age.add_metric([wf, s.id], (now - at).total_seconds() if at else -1.0)
            stale.add_metric([wf, s.id], 1.0 if at is None or now - at > s.freshness.max_age else 0.0)
        yield synced
        yield age
        yield stale


def _gauge(name: str, doc: str, wf: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=["workflow"])
    g.add_metric([wf], value)
    return g


def _buckets(cum: list[int], count: int) -> list[tuple[str, float]]:
    return [*((repr(b), float(c)) for b, c in zip(LATENCY_BUCKETS, cum, strict=True)), ("+Inf", float(count))]


def _month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


class RuntimeMetrics:
    """A runtime's metrics: its own registry with the database collector."""

    def __init__(self, rt: TelemetryRuntime, *, ttl: float = 5.0) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.collector = DatabaseCollector(rt, ttl=ttl)
        self.registry.register(self.collector)

    def invalidate(self) -> None:
        self.collector.invalidate()

    def exposition(self) -> str:
        """The Prometheus text exposition format (what ``/metrics`` serves)."""
        return generate_latest(self.registry).decode()


def metrics_for(rt: TelemetryRuntime) -> RuntimeMetrics:
    """The runtime's metrics (built once)."""
    cached = rt.services.metrics
    if cached is None:
        cached = rt.services.metrics = RuntimeMetrics(rt)
    return cached
