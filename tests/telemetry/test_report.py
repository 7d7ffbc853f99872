"""The operator report on a scripted history with known answers (computed independently here)."""

from __future__ import annotations

import math
import random
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from _monitoring_helpers import scripted_trace

from charter.runtime import Runtime
from charter.store import utcnow
from charter.telemetry import (
    build_report,
    error_signature,
    record_feedback,
    render_report,
    trace_store_for,
    wilson_interval,
)

GOOD_DOCS = [("help-center", f"article-{i}.md") for i in range(8)] + [("playbook", "escalations.md")]
BAD_DOC = ("help-center", "legacy-refund-policy.md")
TINY_DOC = ("playbook", "rarely-cited.md")
USERS = ["ana", "ben", "lena", "farid"]


def _wilson_lower(k: int, n: int) -> float:  # written out again, independently of the implementation
    z = 1.959963984540054
    p = k / n
    return (p + z**2 / (2 * n) - z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))) / (1 + z**2 / n)


@pytest.fixture(scope="module")
def scripted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import shutil

    from tests.conftest import EXAMPLE

    dest = tmp_path_factory.mktemp("report") / "project"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".charter", "__pycache__"))
    rt = Runtime.open(dest / "charter.yaml")
    store = trace_store_for(rt)
    rng = random.Random(7)
    now = utcnow()
    truth: dict[str, Any] = {
        "now": now,
        "cur": [],
        "prev": [],
        "neg": {},
        "fb": Counter(),
        "cited": {},
        "errors": Counter(),
    }
    wf = rt.spec.workflow.id

    def one(period: str, i: int) -> None:
        offset = rng.uniform(0.01, 6.99) + (7 if period == "prev" else 0)
        user = USERS[i % len(USERS)] if period == "cur" else USERS[i % 2]
        docs = rng.sample(GOOD_DOCS, 1)
        if period == "cur" and i % 5 == 0:
            docs.append(BAD_DOC)  # the planted bad source, cited in 20% of current requests
        if period == "cur" and i in (11, 12):
            docs = [TINY_DOC]  # cited twice, both rated down: a tiny sample that must not be blamed
        pv = "v2" if i % 4 == 0 else "v1"
        cost = 0.004 if pv == "v2" else 0.002
        status, escalation, error = "answered", None, None
        if i % 10 == 3:
            status, escalation = "needs_human", "low_groundedness"
        if i % 25 == 7:
            status, error = (
                "error",
                ("ProviderError", f"model timed out after {30 + i % 3}s on attempt {i % 4}", "generate"),
            )
        elif i % 40 == 9:
            status, error = "refused", ("BudgetExceeded", f"monthly budget reached ({i} requests)", "admit")
        t = scripted_trace(
            rng,
            workflow=wf,
            principal=user,
            started_at=now - timedelta(days=offset),
            cited=docs,
            status=status,
            prompt_version=pv,
            cost=cost,
            groundedness=round(rng.uniform(0.3, 1.0), 3),
            escalation=escalation,
            error=error,
        )
        store.write(t)
        truth[period].append(
            {
                "id": t.request_id,
                "user": user,
                "docs": docs,
                "status": status,
                "pv": pv,
                "cost": cost,
                "escalation": escalation,
                "error": error,
                "g": t.groundedness,
            }
        )
        if period != "cur" or status != "answered":
            return
        bad = (BAD_DOC in docs and rng.random() < 0.7) or TINY_DOC in docs or rng.random() < 0.1
        if rng.random() < 0.6 or TINY_DOC in docs:
            rating = "down" if bad else "up"
            record_feedback(
                rt,
                t.request_id,
                rt.charter.principal(user),
                rating=rating,
                reasons=["wrong_source"] if bad else [],
            )
            truth["fb"][rating] += 1
            truth["neg"][t.request_id] = bad
            truth["cited"][t.request_id] = docs

    for i in range(400):
        one("cur", i)
    for i in range(100):
        one("prev", i)
    rt.close()
    truth["charter"] = dest / "charter.yaml"
    return truth


@pytest.fixture(scope="module")
def report(scripted: dict[str, Any]) -> dict[str, Any]:
    rt = Runtime.open(scripted["charter"])
    try:
        return build_report(rt, since=timedelta(days=7), now=scripted["now"])
    finally:
        rt.close()


def test_usage(report: dict[str, Any], scripted: dict[str, Any]) -> None:
    cur = scripted["cur"]
    assert report["usage"]["requests"] == len(cur) == 400
    assert report["usage"]["active_users"] == len({r["user"] for r in cur}) == 4
    assert report["usage"]["by_status"] == dict(sorted(Counter(r["status"] for r in cur).items()))
    assert sum(d["requests"] for d in report["usage"]["by_day"]) == 400
    assert report["trends"]["requests"] == {"current": 400, "previous": 100, "change": 300}
    assert report["trends"]["active_users"]["previous"] == 2


def test_quality(report: dict[str, Any], scripted: dict[str, Any]) -> None:
    cur = scripted["cur"]
    q = report["quality"]
    up, down = scripted["fb"]["up"], scripted["fb"]["down"]
    assert (q["feedback"]["up"], q["feedback"]["down"]) == (up, down)
    assert q["feedback"]["score"] == pytest.approx((up - down) / (up + down))
    assert q["feedback"]["down_reasons"] == {"wrong_source": down}
    assert q["escalation_rate"] == pytest.approx(sum(1 for r in cur if r["escalation"]) / len(cur))
    g = [r["g"] for r in cur]
    assert q["groundedness"]["mean"] == pytest.approx(sum(g) / len(g))
    assert sum(h["count"] for h in q["groundedness"]["histogram"]) == len(g)
    by_pv = {p["prompt_version"]: p for p in q["by_prompt_version"]}
    assert by_pv["v2"]["requests"] == sum(1 for r in cur if r["pv"] == "v2") == 100


def test_cost(report: dict[str, Any], scripted: dict[str, Any]) -> None:
    cur = scripted["cur"]
    c = report["cost"]
    assert c["total_usd"] == pytest.approx(sum(r["cost"] for r in cur))
    assert c["per_request_usd"] == pytest.approx(sum(r["cost"] for r in cur) / len(cur))
    assert c["per_task_budget_usd"] == 0.02 or c["per_task_budget_usd"] > 0
    top = c["top_drivers"][0]
    assert (top["prompt_version"], top["requests"]) == ("v1", 300)  # 300 × 0.002 > 100 × 0.004
    assert top["cost_usd"] == pytest.approx(0.6)
    period_rate = sum(r["cost"] for r in cur) / (7 * 86400)
    now = scripted["now"]
    month_days = ((now.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)).day
    assert c["monthly_projection_from_period_usd"] == pytest.approx(
        period_rate * month_days * 86400, rel=1e-6
    )


def test_failures_grouped_by_signature(report: dict[str, Any], scripted: dict[str, Any]) -> None:
    expected = Counter(
        error_signature(*r["error"][:1], r["error"][2], r["error"][1]) for r in scripted["cur"] if r["error"]
    )
    got = {f["signature"]: f["count"] for f in report["failures"]}
    assert got == dict(expected)
    timeouts = next(f for f in report["failures"] if f["category"] == "ProviderError")
    assert timeouts["count"] == sum(
        1 for r in scripted["cur"] if r["error"] and r["error"][0] == "ProviderError"
    )
    assert timeouts["signature"] == "ProviderError @ generate: model timed out after #s on attempt #"
    assert len(timeouts["examples"]) == 3 and all(e.startswith("req_") for e in timeouts["examples"])


def test_source_blame_ranks_the_planted_bad_source_first(
    report: dict[str, Any], scripted: dict[str, Any]
) -> None:
    blame = report["source_blame"]
    neg, cited = scripted["neg"], scripted["cited"]
    base = sum(neg.values()) / len(neg)
    assert blame["base_negative_rate"] == pytest.approx(base, abs=1e-4)
    first = blame["documents"][0]
    assert (first["source_id"], first["doc_id"]) == BAD_DOC
    n = sum(1 for rid in cited if BAD_DOC in cited[rid])
    k = sum(1 for rid in cited if BAD_DOC in cited[rid] and neg[rid])
    assert (first["cited_in_rated"], first["negative"]) == (n, k)
    assert first["wilson_lower"] == pytest.approx(_wilson_lower(k, n), abs=1e-4)
    assert first["blamed"] is True
    assert [d for d in blame["documents"] if d["blamed"]] == [first]
    tiny = next(d for d in blame["documents"] if (d["source_id"], d["doc_id"]) == TINY_DOC)
    assert (tiny["cited_in_rated"], tiny["negative"], tiny["negative_rate"]) == (2, 2, 1.0)
    assert tiny["blamed"] is False  # 2 of 2 is not evidence: below min_support, lower bound 0.34


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson_interval(2, 2)
    assert lo == pytest.approx(0.3424, abs=1e-4) and hi == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(20, 25)[0] == pytest.approx(_wilson_lower(20, 25))


def test_renderings(report: dict[str, Any]) -> None:
    md = render_report(report, "md")
    for heading in (
        "## Usage",
        "## Quality",
        "## Cost",
        "## Repeating failures",
        "## Source blame",
        "## Trends",
    ):
        assert heading in md
    assert "legacy-refund-policy.md" in md.split("## Source blame")[1].split("\n| 2 |")[0]
    page = render_report(report, "html")
    from charter.telemetry._report_render import TREND_CHARTS

    assert page.count("<svg") == 5 + len(TREND_CHARTS) and "<script" not in page
    import json

    assert json.loads(render_report(report, "json"))["usage"]["requests"] == 400


def test_report_cli(scripted: dict[str, Any], cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    charter = str(scripted["charter"])
    r = cli("report", "--as", "omar", "--format", "json", "--charter", charter)
    assert r.exit_code == 0, r.stderr
    assert r.json()["usage"]["requests"] == 400
    out = tmp_path / "r.html"
    assert (
        cli("report", "--as", "omar", "--format", "html", "-o", str(out), "--charter", charter).exit_code == 0
    )
    assert out.read_text().startswith("<!doctype html>")
    assert cli("report", "--as", "ana", "--charter", charter).exit_code != 0  # agents may not read reports
    assert cli("report", "--as", "omar", "--format", "pdf", "--charter", charter).exit_code == 2


def test_review_decisions_count_as_feedback(project: Path) -> None:
    from tests.access._world import LEO, add_user

    from charter.review import decide_draft, submit_draft
    from charter.telemetry import metrics_for

    add_user(project, LEO)  # an edit is approved by a second lead (four-eyes on edits)
    rt = Runtime.open(project)
    try:
        store = trace_store_for(rt)
        rng = random.Random(5)
        outcomes = {"approve": None, "edit": "Edited reply.", "reject": None}
        ids = {}
        for decision in outcomes:
            t = scripted_trace(
                rng,
                workflow=rt.spec.workflow.id,
                principal="ana",
                started_at=utcnow(),
                cited=[("help-center", f"{decision}.md")],
            )
            store.write(t)
            item = submit_draft(
                rt,
                request_id=t.request_id,
                principal="ana",
                question="q",
                draft="a draft",
                citations=[],
                escalation_reason="low_groundedness",
                groundedness=0.5,
            )
            decide_draft(
                rt,
                item.id,
                "lena",
                decision,
                text=outcomes[decision],  # type: ignore[arg-type]
                reason="inaccurate" if decision == "reject" else None,
            )
            if decision == "edit":
                decide_draft(rt, item.id, "leo", "approve")
            ids[decision] = t.request_id
        report = build_report(rt, min_support=1)
        review = report["quality"]["review"]
        assert (review["unchanged"], review["edited"], review["rejected"]) == (1, 1, 1)
        assert review["acceptance_rate"] == pytest.approx(2 / 3)
        blamed = {d["doc_id"]: d for d in report["source_blame"]["documents"]}
        assert blamed["reject.md"]["negative"] == 1 and blamed["approve.md"]["negative"] == 0
        assert [r["outcome"] for r in store.get(ids["edit"])["reviews"]] == ["edited"]
        metrics = metrics_for(rt).exposition()
        assert 'charter_review_outcomes_total{outcome="rejected",workflow="billing-support"} 1.0' in metrics
    finally:
        rt.close()
