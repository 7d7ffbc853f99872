"""The alert conditions the drift loop evaluates (the same as the shipped Prometheus rules), on seeded
histories with an injected clock: exactly the right alert fires, and only then."""

from __future__ import annotations

import logging
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_trends import fast_store, make_trace

from charter.runtime import Runtime
from charter.telemetry._alerts import alerts_once, budget_projection, evaluate_alerts, firing_alerts

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)


def _ids(rt: Runtime, now: datetime, only: tuple[str, ...]) -> list[str]:
    return sorted(a.id for a in evaluate_alerts(rt, now, only=only))


def _seed_escalations(rt: Runtime, now: datetime, *, spike: bool) -> None:
    """7 days of baseline (10% no_sources, 5% out_of_scope), then the last hour with or without a spike
    of out_of_scope (30%), no_sources unchanged."""
    store, rng = fast_store(rt), random.Random(11)
    for i in range(700):
        at = now - timedelta(hours=1) - timedelta(minutes=rng.uniform(1, 7 * 24 * 60 - 1))
        reason = "no_sources" if i % 10 == 0 else ("out_of_scope" if i % 20 == 1 else None)
        store.write(make_trace(rt, at, status="needs_human" if reason else "answered", escalation=reason))
    for i in range(40):
        at = now - timedelta(minutes=rng.uniform(0.5, 59))
        reason = (
            "no_sources" if i % 10 == 0 else ("out_of_scope" if (spike and i % 10 in (1, 2, 3)) else None)
        )
        store.write(make_trace(rt, at, status="needs_human" if reason else "answered", escalation=reason))


def test_a_spike_of_one_escalation_reason_raises_exactly_that_alert(project: Path) -> None:
    rt = Runtime.open(project)
    try:
        _seed_escalations(rt, NOW, spike=True)
        fired = evaluate_alerts(rt, NOW, only=("escalation_spike",))
        assert [a.id for a in fired] == ["escalation_spike:out_of_scope"]
        a = fired[0]
        assert a.labels == {"reason": "out_of_scope"} and a.owner == {"duty": "scope", "principal": "lena"}
        assert a.value == pytest.approx(12 / 40) and a.threshold == pytest.approx(2 * 35 / 700)
        # an hour later the spike has left the window: nothing fires
        assert _ids(rt, NOW + timedelta(hours=1, minutes=1), ("escalation_spike",)) == []
    finally:
        rt.close()


def test_no_spike_no_alert(project: Path) -> None:
    rt = Runtime.open(project)
    try:
        _seed_escalations(rt, NOW, spike=False)
        assert _ids(rt, NOW, ("escalation_spike",)) == []
    finally:
        rt.close()


def _seed_month(rt: Runtime, month_start: datetime, pace: float) -> float:
    """Traffic costing ``pace`` × the monthly budget's daily share, every day of the month."""
    store = fast_store(rt)
    days = 30
    daily = pace * rt.spec.budgets.monthly_usd / days
    for d in range(days):
        for h in range(4):
            store.write(make_trace(rt, month_start + timedelta(days=d, hours=3 + 5 * h), cost=daily / 4))
    return daily


@pytest.mark.parametrize("pace", [2.0, 0.9])
def test_budget_burn_at_twice_the_pace_alerts_by_day_ten_not_day_thirty(project: Path, pace: float) -> None:
    rt = Runtime.open(project)
    try:
        start = datetime(2026, 11, 1, tzinfo=UTC)  # November: 30 days
        daily = _seed_month(rt, start, pace)
        first = None
        for day in range(1, 31):
            now = start + timedelta(days=day)  # the end of day `day`
            if _ids(rt, now, ("budget_burn",)) == ["budget_burn"]:
                first = first or day
        if pace == 2.0:
            assert first is not None and first <= 10
            day10 = start + timedelta(days=10)
            b = budget_projection(rt, day10)
            assert b["spent_usd"] == pytest.approx(10 * daily)
            assert b["spent_usd"] < rt.spec.budgets.monthly_usd  # spend alone would not alert yet ...
            assert b["projected_usd"] == pytest.approx(
                2 * rt.spec.budgets.monthly_usd
            )  # ... the projection does
            alert = evaluate_alerts(rt, day10, only=("budget_burn",))[0]
            assert alert.owner == {"duty": "cost", "principal": "farid"}
        else:
            assert first is None
    finally:
        rt.close()


def test_latency_slo_multiwindow_burn(project: Path) -> None:
    rt = Runtime.open(project)
    try:
        store = fast_store(rt)
        slow = rt.spec.latency.p95_ms + 500
        # a healthy day, then the last hour mostly slow (80% > 72% = 14.4 × the 5% budget) incl. the last 5 min
        for i in range(200):
            store.write(make_trace(rt, NOW - timedelta(hours=2, minutes=i * 5), latency_ms=300))
        for i in range(50):
            store.write(
                make_trace(rt, NOW - timedelta(seconds=30 + 70 * i), latency_ms=slow if i % 5 else 300)
            )
        fired = evaluate_alerts(rt, NOW, only=("latency_slo_burn",))
        assert [a.id for a in fired] == ["latency_slo_burn"] and fired[0].severity == "page"
        assert fired[0].labels == {"long_window": "1:00:00", "short_window": "0:05:00"}
        # the short window has recovered (the last 5 minutes are fast): the 1h/5m pair no longer fires,
        # the slower 6h/30m pair still does (both its windows still burn > 6×)
        for i in range(30):
            store.write(make_trace(rt, NOW + timedelta(minutes=1, seconds=i * 5), latency_ms=300))
        later = evaluate_alerts(rt, NOW + timedelta(minutes=4), only=("latency_slo_burn",))
        assert [a.labels for a in later] == [{"long_window": "6:00:00", "short_window": "0:30:00"}]
        # a day later only the 3-day ticket window remembers it
        assert _ids(rt, NOW + timedelta(days=1), ("latency_slo_burn",)) == []
    finally:
        rt.close()


def test_freshness_kill_switch_and_audit_alerts(project: Path) -> None:
    from charter.tools import set_kill_switch

    rt = Runtime.open(project)
    try:
        now = datetime.now(UTC)
        fresh = _ids(rt, now, ("sync_freshness",))
        assert fresh == sorted(f"sync_freshness:{s.id}" for s in rt.spec.sources)  # never synced
        assert _ids(rt, now, ("kill_switch", "audit_verification")) == []
        set_kill_switch(rt, rt.charter.principal("omar"), True, reason="drill")
        assert _ids(rt, now, ("kill_switch",)) == ["kill_switch"]
        # tamper with one audit entry: verification fails, the alert fires
        from sqlalchemy import text

        with rt.store.begin() as conn:
            conn.execute(text("UPDATE audit_log SET outcome = 'tampered' WHERE seq = 1"))
        assert _ids(rt, now, ("audit_verification",)) == ["audit_verification"]
    finally:
        rt.close()


def test_drift_loop_notifies_once_per_change_and_audits(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rt = Runtime.open(project)
    try:
        _seed_escalations(rt, NOW, spike=True)
        caplog.set_level(logging.WARNING, logger="charter.gate")
        only_spike = [a for a in alerts_once(rt, NOW)["started"] if a.startswith("escalation")]
        assert only_spike == ["escalation_spike:out_of_scope"]
        assert any("escalation_spike:out_of_scope" in r.getMessage() for r in caplog.records)
        caplog.clear()
        again = alerts_once(rt, NOW + timedelta(minutes=1))
        assert again["started"] == [] and again["notified"] is None  # still firing: no repeat
        assert "escalation_spike:out_of_scope" in firing_alerts(rt)["firing"]
        later = alerts_once(rt, NOW + timedelta(hours=2))
        assert "escalation_spike:out_of_scope" in later["resolved"]
        outcomes = [
            (e.outcome, e.details.get("id"))
            for e in rt.audit.tail(50, action="monitor.alert")
            if e.details.get("id") == "escalation_spike:out_of_scope"
        ]
        assert outcomes == [
            ("firing", "escalation_spike:out_of_scope"),
            ("resolved", "escalation_spike:out_of_scope"),
        ]
    finally:
        rt.close()


def test_drift_notify_webhook_receives_the_alert(project: Path) -> None:
    """``drift.notify`` as a webhook: a real HTTP server receives the JSON payload."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    got: list[dict[str, object]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    text = project.read_text()
    assert "\n  notify: log\n" in text
    project.write_text(
        text.replace("\n  notify: log\n", f"\n  notify: http://127.0.0.1:{server.server_port}/hook\n")
    )
    rt = Runtime.open(project)
    try:
        from charter.tools import set_kill_switch

        set_kill_switch(rt, rt.charter.principal("omar"), True, reason="drill")
        result = alerts_once(rt, datetime.now(UTC))
        assert result["notified"] == "webhook 204"
        assert got and got[0]["event"] == "charter.alerts"
        assert "kill_switch" in [a["id"] for a in got[0]["firing"]]  # type: ignore[index,union-attr]
    finally:
        rt.close()
        server.shutdown()
