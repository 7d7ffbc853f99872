"""Trends over time on seeded histories with known answers, computed independently here (injectable clock).

The headline case: a prompt activation that lowers review acceptance must show up as a change point on the
trend, with the before/after rates of the days around it (the change day excluded), a 95% interval and a
significance verdict — and a comparison on too few requests must say so instead.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.access._world import LEO, add_user

from charter.runtime import Runtime
from charter.store import utcnow
from charter.telemetry import Trace, TraceStore, render_report
from charter.telemetry._trends import build_trends, compare_rates, wilson_interval
from charter.telemetry.masking import PatternMasker

PER_DAY = 6  # reviewed requests per day on each side of the change


def fast_store(rt: Runtime) -> TraceStore:
    """The real trace store with the pattern masker (Presidio is not what these tests are about)."""
    return TraceStore(rt.store, field_policies=dict(rt.spec.monitoring.fields), masker=PatternMasker(b"t"))


def make_trace(
    rt: Runtime,
    at: datetime,
    *,
    prompt_version: str = "v2",
    model: str = "extractive",
    index_version: str = "idx-1",
    status: str = "answered",
    escalation: str | None = None,
    latency_ms: float = 100.0,
    cost: float = 0.001,
    question: str = "How long does a refund take?",
    groundedness: float | None = 0.8,
    refused_tools: int = 0,
) -> Trace:
    t = Trace(workflow=rt.spec.workflow.id, principal_id="ana", question=question, started_at=at)
    t.status = status  # type: ignore[assignment]
    t.model, t.provider, t.prompt_version, t.index_version = model, "local", prompt_version, index_version
    t.cost_usd, t.cost_source, t.latency_ms, t.groundedness = cost, "estimated", latency_ms, groundedness
    t.answer = "an answer"
    if escalation:
        t.escalation = {"reason": escalation, "to": "lead"}
    t.tool_calls = [{"name": "issue_refund", "decision": "refused", "reason": "denied"}] * refused_tools
    return t


def review(rt: Runtime, request_id: str, decision: str, reason: str | None = None) -> None:
    from charter.review import decide_draft, submit_draft

    item = submit_draft(
        rt,
        request_id=request_id,
        principal="ana",
        question="q",
        draft="a draft",
        citations=[],
        escalation_reason=None,
        groundedness=0.8,
    )
    decide_draft(
        rt,
        item.id,
        "lena",
        decision,  # type: ignore[arg-type]
        text="Edited." if decision == "edit" else None,
        reason=reason,
    )
    if decision == "edit":  # four-eyes: a second lead approves the edited text, which decides the draft
        decide_draft(rt, item.id, "leo", "approve")


def activate(rt: Runtime, version: str) -> datetime:
    from charter.models import PromptRegistry

    reg = PromptRegistry(rt.charter, rt.store, audit=lambda **event: rt.audit.append(**event))
    lena = rt.charter.principal("lena")
    reg.approve("draft_reply", version, principal=lena)
    before = utcnow()
    reg.activate("draft_reply", version, principal=lena)
    return before


@pytest.fixture(scope="module")
def change_history(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """v2 before the activation of v1 (8 of 10 decided drafts accepted), v1 after it (4 of 10)."""
    import shutil

    from tests.conftest import EXAMPLE

    dest = tmp_path_factory.mktemp("trends") / "project"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".charter", "__pycache__"))
    add_user(dest / "charter.yaml", LEO)  # the second lead who approves edits (four-eyes)
    rt = Runtime.open(dest / "charter.yaml")
    store = fast_store(rt)
    t0 = activate(rt, "v1")  # the real clock: the activation is recorded now ...
    rng = random.Random(3)
    truth: dict[str, Any] = {"t0": t0, "decisions": [], "latency": []}
    # ... and the history around it is seeded at known times; the report's clock is injected
    for side, days, pv, accept_share in (
        ("before", range(-7, 0), "v2", 0.8),
        ("after", range(1, 8), "v1", 0.4),
    ):
        for d in days:
            day_start = (t0 + timedelta(days=d)).replace(hour=0, minute=0, second=0, microsecond=0)
            for i in range(PER_DAY):
                at = day_start + timedelta(hours=2 + i * 3, minutes=rng.randint(0, 59))
                lat = rng.choice([40.0, 120.0, 450.0, 900.0, 2600.0])
                t = make_trace(rt, at, prompt_version=pv, latency_ms=lat)
                store.write(t)
                truth["latency"].append(lat)
                r = rng.random()
                decision = (
                    "approve" if r < accept_share * 0.75 else ("edit" if r < accept_share else "reject")
                )
                reason = "inaccurate" if decision == "reject" else None
                review(rt, t.request_id, decision, reason)
                truth["decisions"].append((side, pv, at.date().isoformat(), decision, reason))
    # requests on the change day itself belong to neither side
    for h in (1, 23):
        at = t0.replace(hour=h, minute=0, second=0, microsecond=0)
        t = make_trace(rt, at, prompt_version="v1" if at > t0 else "v2")
        store.write(t)
        review(rt, t.request_id, "reject", "incomplete")
        truth["decisions"].append(
            ("change_day", t.prompt_version, at.date().isoformat(), "reject", "incomplete")
        )
    truth["now"] = t0 + timedelta(days=9)
    truth["trends"] = build_trends(rt, since=timedelta(days=21), now=truth["now"], change_window_days=7)
    truth["rt"] = rt
    yield truth
    rt.close()


def _accept(decisions: list[tuple[str, ...]]) -> tuple[int, int]:
    return sum(1 for d in decisions if d[3] in ("approve", "edit")), len(decisions)


def test_prompt_activation_is_a_change_point_with_before_after_rates(change_history: dict[str, Any]) -> None:
    ts, truth = change_history["trends"], change_history
    points = [c for c in ts["change_points"] if c["kind"] == "prompt_activated"]
    assert len(points) == 1
    cp = points[0]
    assert cp["label"] == "prompt draft_reply → v1" and cp["day"] == truth["t0"].date().isoformat()
    before = [d for d in truth["decisions"] if d[0] == "before"]
    after = [d for d in truth["decisions"] if d[0] == "after"]
    kb, nb = _accept(before)
    ka, na = _accept(after)
    acc = cp["rates"]["acceptance_rate"]
    assert (acc["before"]["k"], acc["before"]["n"], acc["after"]["k"], acc["after"]["n"]) == (kb, nb, ka, na)
    assert acc["before"]["rate"] == pytest.approx(kb / nb) and acc["after"]["rate"] == pytest.approx(ka / na)
    assert kb / nb > ka / na  # the seeded drop
    assert acc["change"] == pytest.approx(ka / na - kb / nb)
    assert acc["low"] <= acc["change"] <= acc["high"]
    # significance follows the interval, and both sides reach the minimum sample here
    assert nb >= 30 and na >= 30
    assert acc["significant"] == (acc["high"] < 0)
    rej = cp["rates"]["rejection_rate"]
    assert rej["after"]["k"] == sum(1 for d in after if d[3] == "reject")
    # the change day's two rejected requests are on neither side
    assert nb + na == len(truth["decisions"]) - 2


def test_trend_series_per_day_week_and_prompt_version(change_history: dict[str, Any]) -> None:
    ts, truth = change_history["trends"], change_history
    by_day = {p["period"]: p for p in ts["by_day"]}
    per_day: dict[str, list[tuple[str, ...]]] = {}
    for d in truth["decisions"]:
        per_day.setdefault(d[2], []).append(d)
    for day, ds in per_day.items():
        k, n = _accept(ds)
        assert by_day[day]["review"]["decided"] == n
        assert by_day[day]["acceptance_rate"] == pytest.approx(k / n)
        rejects = Counter(d[4] for d in ds if d[3] == "reject")
        assert by_day[day]["review"]["reject_reasons"] == dict(rejects)
    weeks = {p["period"]: p for p in ts["by_week"]}
    assert sum(p["requests"] for p in weeks.values()) == len(truth["decisions"])
    assert all(datetime.fromisoformat(w).weekday() == 0 for w in weeks)
    by_pv = {p["prompt_version"]: p for p in ts["by"]["prompt_version"]}
    for pv in ("v1", "v2"):
        k, n = _accept([d for d in truth["decisions"] if d[1] == pv])
        assert by_pv[pv]["acceptance_rate"] == pytest.approx(k / n)
    assert [p["index_version"] for p in ts["by"]["index_version"]] == ["idx-1"]


def test_latency_percentiles_within_the_documented_resolution(change_history: dict[str, Any]) -> None:
    lat = sorted(change_history["latency"] + [100.0, 100.0])  # + the two change-day requests
    for q, key in ((0.5, "latency_p50_ms"), (0.95, "latency_p95_ms")):
        exact = lat[math.ceil(q * len(lat)) - 1]  # nearest rank
        step = 1 if exact < 100 else 10 if exact < 1000 else 100 if exact < 10_000 else 1000
        got = change_history["trends"]["totals"][key]
        assert exact <= got <= exact + step, (key, exact, got)


def test_report_and_console_charts_mark_the_change_point(change_history: dict[str, Any]) -> None:
    from charter.telemetry import build_report
    from charter.telemetry._report_render import trend_charts

    rt = change_history["rt"]
    report = build_report(
        rt, since=timedelta(days=7), now=change_history["now"], trend_window=timedelta(days=21)
    )
    assert report["time_series"]["change_points"] == change_history["trends"]["change_points"]
    md = render_report(report, "md")
    assert "## Trends over time" in md and "prompt draft_reply → v1" in md
    assert "acceptance rate:" in md and "95% CI" in md
    charts = trend_charts(report["time_series"])
    day = change_history["t0"].date().isoformat()
    svg = charts["acceptance_rate"]
    assert 'class="change-point" data-kind="prompt_activated"' in svg and day in svg
    assert "<script" not in svg


def test_comparisons_below_the_minimum_sample_say_so() -> None:
    c = compare_rates((4, 5), (1, 5))
    assert c["significant"] is False and "too few" in c["note"] and "n=5" in c["note"]
    big = compare_rates((400, 500), (200, 500))
    assert big["significant"] is True and big["high"] < 0
    same = compare_rates((250, 500), (251, 500))
    assert same["significant"] is False and "no significant" in same["note"]


def _newcombe(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float]:  # written out independently
    z = 1.959963984540054

    def w(k: int, n: int) -> tuple[float, float]:
        p = k / n
        c = (p + z * z / (2 * n)) / (1 + z * z / n)
        h = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        return c - h, c + h

    (l1, u1), (l2, u2) = w(k1, n1), w(k2, n2)
    p1, p2 = k1 / n1, k2 / n2
    return p2 - p1 - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2), p2 - p1 + math.sqrt(
        (u2 - p2) ** 2 + (p1 - l1) ** 2
    )


@pytest.mark.parametrize("k1,n1,k2,n2", [(8, 10, 4, 10), (56, 70, 28, 70), (0, 40, 3, 40), (40, 40, 39, 41)])
def test_newcombe_interval_matches_an_independent_computation(k1: int, n1: int, k2: int, n2: int) -> None:
    c = compare_rates((k1, n1), (k2, n2))
    lo, hi = _newcombe(k1, n1, k2, n2)
    assert c["low"] == pytest.approx(lo, abs=1e-4) and c["high"] == pytest.approx(hi, abs=1e-4)
    assert wilson_interval(k1, n1)[0] <= k1 / n1 <= wilson_interval(k1, n1)[1]


def test_empty_history_has_no_rates_and_no_change_points(project: Path) -> None:
    rt = Runtime.open(project)
    try:
        ts = build_trends(rt, since=timedelta(days=7), now=datetime(2026, 11, 20, tzinfo=UTC))
        assert ts["totals"]["requests"] == 0 and ts["totals"]["acceptance_rate"] is None
        assert len(ts["by_day"]) == 8 and ts["change_points"] == []
    finally:
        rt.close()
