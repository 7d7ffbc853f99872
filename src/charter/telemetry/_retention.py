"""Retention: delete traces (with their spans and retrieved passages) and feedback older than the charter's
``monitoring.retention``.

The audit log is untouched: audit entries reference request ids and never embed trace content, so the
hash chain stays intact and ``charter audit verify`` still passes after a purge. The purge itself is
recorded as an audit event with the counts and the cut-off.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select

from charter.store import utcnow
from charter.store.tables import feedback, trace_sources, trace_spans, traces

if TYPE_CHECKING:
    from charter.telemetry._runtime import TelemetryRuntime


@dataclass
class RetentionResult:
    cutoff: datetime
    traces: int
    spans: int
    sources: int
    feedback: int
    dry_run: bool

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["cutoff"] = self.cutoff.isoformat()
        return d


def apply_retention(
    rt: TelemetryRuntime,
    *,
    now: datetime | None = None,
    retention: timedelta | None = None,
    dry_run: bool = False,
    audit: bool = True,
) -> RetentionResult:
    """Delete monitoring data older than ``retention`` (default: the charter's). Safe to run any time."""
    keep = retention if retention is not None else rt.spec.monitoring.retention
    cutoff = (now or utcnow()) - keep
    old = select(traces.c.request_id).where(traces.c.started_at < cutoff)
    with rt.store.begin(immediate=True) as conn:
        if dry_run:
            from sqlalchemy import func

            n_tr = conn.execute(select(func.count()).select_from(old.subquery())).scalar() or 0
            n_sp = conn.execute(select(func.count()).where(trace_spans.c.request_id.in_(old))).scalar() or 0
            n_so = conn.execute(select(func.count()).where(trace_sources.c.request_id.in_(old))).scalar() or 0
            n_fb = (
                conn.execute(
                    select(func.count()).where(
                        (feedback.c.created_at < cutoff) | feedback.c.request_id.in_(old)
                    )
                ).scalar()
                or 0
            )
        else:
            n_sp = conn.execute(delete(trace_spans).where(trace_spans.c.request_id.in_(old))).rowcount
            n_so = conn.execute(delete(trace_sources).where(trace_sources.c.request_id.in_(old))).rowcount
            n_fb = conn.execute(
                delete(feedback).where((feedback.c.created_at < cutoff) | feedback.c.request_id.in_(old))
            ).rowcount
            n_tr = conn.execute(delete(traces).where(traces.c.started_at < cutoff)).rowcount
    result = RetentionResult(
        cutoff=cutoff,
        traces=int(n_tr),
        spans=int(n_sp),
        sources=int(n_so),
        feedback=int(n_fb),
        dry_run=dry_run,
    )
    if not dry_run:
        from charter.telemetry._wiring import trace_store_for

        trace_store_for(rt).notify_changed()
        if audit:
            rt.audit.append(
                actor="system",
                action="retention.applied",
                resource=f"workflow:{rt.spec.workflow.id}",
                outcome="recorded",
                details={k: v for k, v in result.as_dict().items() if k != "dry_run"},
            )
    return result


class RetentionScheduler:
    """Applies retention every ``every`` on a daemon thread (the server starts one; ``stop()`` ends it)."""

    def __init__(self, rt: TelemetryRuntime, *, every: timedelta = timedelta(hours=6)) -> None:
        import threading

        self.rt = rt
        self.every = every
        self.last: RetentionResult | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="charter-retention", daemon=True)

    def start(self) -> RetentionScheduler:
        self._thread.start()
        return self

    def _run(self) -> None:
        import logging

        while not self._stop.is_set():
            try:
                self.last = apply_retention(self.rt)
            except Exception:  # keep serving; the next run retries
                logging.getLogger("charter.telemetry").exception("retention run failed")
            self._stop.wait(self.every.total_seconds())

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)


def start_server_telemetry(
    rt: TelemetryRuntime, *, retention_every: timedelta = timedelta(hours=6)
) -> RetentionScheduler:
    """What a long-running server calls once at start-up: group-committed trace writes and periodic retention.

    (After warming up, a server should also call ``gc.freeze()``: with torch and spaCy loaded, full
    garbage collections otherwise add ~10 ms to one request in twenty; see docs/benchmarks.md.)
    """
    from charter.telemetry._wiring import trace_store_for

    trace_store_for(rt).enable_group_commit()
    return RetentionScheduler(rt, every=retention_every).start()
