"""The console's Monitor page shows the trends (with change points) and the repeating-failure clusters to a
user with ``reports.read`` — in a real browser, screenshotted to ``test-artifacts/console/`` — and none of
it to a monitoring user without it. Also: every metric the Grafana dashboard and the alert rules query is
exported by ``/metrics``."""

from __future__ import annotations

import json
import random
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.server.conftest import Served
from tests.server.test_console_browser import Session, browser  # noqa: F401  (the Chromium fixture)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _seed(rt: Any) -> None:
    """Three weeks of traffic: model m-old, then m-new for the last 6 days (a change point), with a
    repeating failing question and review decisions."""
    from charter.review import decide_draft, submit_draft
    from charter.store import utcnow
    from charter.telemetry import Trace, TraceStore
    from charter.telemetry.masking import PatternMasker

    store = TraceStore(rt.store, field_policies=dict(rt.spec.monitoring.fields), masker=PatternMasker(b"c"))
    rng, now = random.Random(2), utcnow()
    for i in range(120):
        at = now - timedelta(days=rng.uniform(0.05, 20.5))
        new = at > now - timedelta(days=6)
        t = Trace(
            workflow=rt.spec.workflow.id,
            principal_id="ana",
            started_at=at,
            question=f"Why was I charged twice for invoice {1000 + i}? mail me at user{i}@example.com"
            if i % 4 == 0
            else f"question {i}",
        )
        t.status = "needs_human" if i % 4 == 0 else "answered"  # type: ignore[assignment]
        t.escalation = {"reason": "no_sources", "to": "lead"} if i % 4 == 0 else None
        t.model, t.prompt_version, t.index_version = ("m-new" if new else "m-old"), "v2", "idx-1"
        t.latency_ms, t.cost_usd, t.groundedness = rng.uniform(200, 2500), 0.002, rng.uniform(0.5, 1.0)
        store.write(t)
        if i % 3 == 0:
            item = submit_draft(
                rt,
                request_id=t.request_id,
                principal="ana",
                question="q",
                draft="d",
                citations=[],
                escalation_reason=None,
                groundedness=0.8,
            )
            reject = rng.random() < (0.6 if new else 0.2)
            decide_draft(
                rt,
                item.id,
                "lena",
                "reject" if reject else "approve",
                reason="inaccurate" if reject else None,
            )


def test_monitor_page_trends_and_clusters_in_the_browser(browser: Any, live: Served) -> None:  # noqa: F811
    _seed(live.rt)
    omar = Session(browser, live, "omar")
    p = omar.goto("/monitor")
    omar.ok("monitor-trends")
    assert p.locator("#trends figure[data-metric] svg").count() == 9
    assert p.locator("#trends svg line.change-point[data-kind='model_changed']").count() >= 1
    changes = p.locator("#change-points tbody tr")
    assert changes.count() >= 1 and "model m-new first used" in changes.first.inner_text()
    assert "→" in changes.first.inner_text() and (
        "pp" in changes.first.inner_text() or "too few" in changes.first.inner_text()
    )
    clusters = p.locator("#failure-clusters tbody tr")
    assert clusters.count() >= 1
    first = clusters.first.inner_text()
    assert "escalation:no_sources" in first and "omar" in first and "charged twice" in first
    assert "@example.com" not in p.content()  # examples are masked
    assert "add-from-production" in first
    assert p.locator("#failure-categories tbody tr", has_text="review_rejected:inaccurate").count() == 1
    assert p.locator("#alerts").count() == 1
    p.locator("#trends a", has_text="show per week").click()
    p.wait_for_load_state()
    omar.ok("monitor-trends-weekly")
    assert "Per week" in p.locator("#trends p").first.inner_text()
    omar.close()

    # Lena may monitor (traces.read_all) but has no reports.read: none of it is on her page
    lena = Session(browser, live, "lena")
    p = lena.goto("/monitor")
    lena.ok("monitor-without-reports")
    for sel in ("#trends", "#repeating", "#alerts", "svg.trend", "#failure-clusters"):
        assert p.locator(sel).count() == 0, f"lena sees {sel}"
    assert "charged twice" not in p.content()
    assert p.locator("table a[href^='/traces/']").count() >= 1  # she still sees the traces
    lena.close()


def _exported(client: Any, token_headers: dict[str, str]) -> set[str]:
    r = client.get("/metrics", headers=token_headers)
    assert r.status_code == 200, r.text
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    for fam in text_string_to_metric_families(r.text):  # declared families, with or without samples yet
        names.update(fam.name + s for s in suffixes.get(fam.type, ("",)))
        names.update(s.name for s in fam.samples)
    return names


def _queried(text: str) -> set[str]:
    return set(re.findall(r"\b(charter_[a-z0-9_]+)\b", text))


def test_grafana_dashboard_and_alert_rules_query_only_exported_metrics(served: Served) -> None:
    from fastapi.testclient import TestClient

    from charter.telemetry._alerts import verify_audit

    verify_audit(served.rt)  # type: ignore[arg-type]
    with TestClient(served.app) as client:  # type: ignore[arg-type]
        exported = _exported(client, served.headers("omar"))
    dash = json.loads((DEPLOY / "grafana" / "charter-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dash["panels"] for t in panel["targets"]]
    exprs.append(dash["templating"]["list"][1]["definition"])
    queried = set().union(*(_queried(e) for e in exprs))
    assert len(queried) >= 15
    assert sorted(queried - exported) == [], "the dashboard queries metrics /metrics does not export"
    rules = (DEPLOY / "prometheus" / "charter-alerts.yaml").read_text()
    assert sorted(_queried(rules) - exported) == [], "the alert rules query metrics /metrics does not export"
    # and the check can fail: a made-up name is caught
    assert _queried("rate(charter_made_up_total[5m])") - exported == {"charter_made_up_total"}
