"""The operator report: usage, quality, cost, repeating failures and source blame, with trends.

:func:`build_report` answers the five monitoring questions for a period (default: the last 7 days) and
compares each headline number with the previous period of the same length. Everything is computed from
the masked monitoring tables (``traces``, ``trace_sources``, ``feedback``) and the review decisions; the
report never reads raw content, so it cannot leak what masking removed.

**Source blame.** A request is *negative* when its draft was rejected in review or it received a
thumbs-down (and no thumbs-up outweighs it); *rated* when it has either a review decision or feedback.
For each document (and each source) we count ``n`` = rated requests whose answer cited it and ``k`` = the
negative ones among them, and compute the Wilson score interval for ``k/n`` at 95%. A document is
*blamed* only when ``n >= min_support`` and the interval's **lower bound** exceeds the base rate (the
negative share of all rated requests that cited anything): with two citations and two rejections the
lower bound is 0.34, far from certain, whereas 20 of 25 gives 0.61. Ranking is by that lower bound.
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from charter.access import DocRef, Reader, document_redaction, scrub_documents
from charter.store import utcnow
from charter.telemetry._feedback import review_decisions
from charter.telemetry._monitoring_tables import feedback
from charter.telemetry._trace_tables import trace_sources, traces
from charter.telemetry._trends import Agg, wilson_interval

if TYPE_CHECKING:
    from charter.runtime import Runtime
    from charter.spec import Principal

GROUNDEDNESS_BINS = 10


def _rate(num: float, den: float) -> float | None:
    return None if not den else num / den


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    idx = min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))
    return s[idx]


_PLACEHOLDER = re.compile(r"<([A-Z_]+)_[0-9a-f]{8}>")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_IDS = re.compile(r"\b(?:req|rv|fb|act|appr)_[0-9a-z]+\b")


def error_signature(etype: str | None, stage: str | None, message: str | None) -> str:
    """A stable grouping key for an error: type, stage and the message with values blanked out."""
    msg = _PLACEHOLDER.sub(r"<\1>", message or "")
    msg = _IDS.sub("<id>", msg)
    msg = _QUOTED.sub("'…'", msg)
    msg = _NUMBER.sub("#", msg)
    msg = " ".join(msg.split())[:120]
    return f"{etype or 'Error'} @ {stage or '-'}: {msg}"


def _load(rt: Runtime, start: datetime, end: datetime) -> dict[str, Any]:
    cols = [
        traces.c.request_id,
        traces.c.started_at,
        traces.c.principal_id,
        traces.c.status,
        traces.c.workflow,
        traces.c.model,
        traces.c.prompt_version,
        traces.c.cost_usd,
        traces.c.latency_ms,
        traces.c.input_tokens,
        traces.c.output_tokens,
        traces.c.escalation,
        traces.c.groundedness,
        traces.c.error_type,
        traces.c.error_stage,
    ]
    window = (traces.c.started_at >= start) & (traces.c.started_at < end)
    with rt.store.connect() as conn:
        result = conn.execute(select(*cols).where(window))
        names = list(result.keys())
        rows = [dict(zip(names, r, strict=True)) for r in result.fetchall()]
        errors = {
            r.request_id: (r.body or {}).get("errors") or []
            for r in conn.execute(
                select(traces.c.request_id, traces.c.body).where(window & traces.c.error_type.is_not(None))
            )
        }
        cited = [
            dict(r._mapping)
            for r in conn.execute(
                select(trace_sources.c.request_id, trace_sources.c.source_id, trace_sources.c.doc_id).where(
                    trace_sources.c.cited.is_(True)
                    & (trace_sources.c.started_at >= start)
                    & (trace_sources.c.started_at < end)
                )
            )
        ]
        ids = select(traces.c.request_id).where(window)
        fb = [
            dict(r._mapping)
            for r in conn.execute(
                select(feedback.c.request_id, feedback.c.rating, feedback.c.reasons).where(
                    feedback.c.request_id.in_(ids)
                )
            )
        ]
    reviews = review_decisions(rt.store, started=(start, end)) if rows else []
    return {"rows": rows, "errors": errors, "cited": cited, "feedback": fb, "reviews": reviews}


def _summary(data: dict[str, Any]) -> dict[str, float | None]:
    rows = data["rows"]
    n = len(rows)
    up = sum(1 for f in data["feedback"] if f["rating"] > 0)
    down = sum(1 for f in data["feedback"] if f["rating"] < 0)
    outcomes = Counter(d["outcome"] for d in data["reviews"])
    decided = sum(outcomes.values())
    g = [r["groundedness"] for r in rows if r["groundedness"] is not None]
    cost = sum(r["cost_usd"] or 0.0 for r in rows)
    return {
        "requests": n,
        "active_users": len({r["principal_id"] for r in rows}),
        "escalation_rate": _rate(sum(1 for r in rows if r["escalation"]), n),
        "error_rate": _rate(sum(1 for r in rows if r["status"] == "error"), n),
        "feedback_score": _rate(up - down, up + down),
        "acceptance_rate": _rate(outcomes["unchanged"] + outcomes["edited"], decided),
        "groundedness_mean": (sum(g) / len(g)) if g else None,
        "cost_usd": cost,
        "cost_per_request_usd": _rate(cost, n),
    }


def _agg_summary(rt: Runtime, agg: Agg, start: datetime, end: datetime) -> dict[str, float | None]:
    """:func:`_summary`'s numbers from the period's cells (the monitoring rollup) and one count of
    distinct principals, for the previous period (ratings are ±1, so thumbs-down = rating < 0)."""
    from sqlalchemy import distinct, func

    with rt.store.connect() as conn:
        users = conn.execute(
            select(func.count(distinct(traces.c.principal_id))).where(
                (traces.c.started_at >= start) & (traces.c.started_at < end)
            )
        ).scalar()
    n, up, down = agg.requests, agg.fb_up, agg.fb_down
    decided = agg.decided
    return {
        "requests": n,
        "active_users": int(users or 0),
        "escalation_rate": _rate(agg.escalated, n),
        "error_rate": _rate(agg.errors, n),
        "feedback_score": _rate(up - down, up + down),
        "acceptance_rate": _rate(agg.reviews["unchanged"] + agg.reviews["edited"], decided),
        "groundedness_mean": (agg.g_sum / agg.g_n) if agg.g_n else None,
        "cost_usd": agg.cost_usd,
        "cost_per_request_usd": _rate(agg.cost_usd, n),
    }


def _outcomes(data: dict[str, Any]) -> dict[str, str]:
    """request id → ``negative`` / ``positive`` for rated requests (reviews and feedback)."""
    score: dict[str, int] = defaultdict(int)
    rejected: set[str] = set()
    for f in data["feedback"]:
        score[f["request_id"]] += 1 if f["rating"] > 0 else -1
    for d in data["reviews"]:
        if d["outcome"] == "rejected":
            rejected.add(d["request_id"])
        else:
            score.setdefault(d["request_id"], 0)
    out = {rid: ("negative" if s < 0 else "positive") for rid, s in score.items()}
    for rid in rejected:
        out[rid] = "negative"
    return out


def _blame(data: dict[str, Any], min_support: int, reader: Reader | None = None) -> dict[str, Any]:
    outcome = _outcomes(data)
    by_doc: dict[tuple[str, str], set[str]] = defaultdict(set)
    by_source: dict[str, set[str]] = defaultdict(set)
    for c in data["cited"]:
        if c["request_id"] in outcome:
            by_doc[(c["source_id"], c["doc_id"])].add(c["request_id"])
            by_source[c["source_id"]].add(c["request_id"])
    rated = set().union(*by_doc.values()) if by_doc else set()
    base = _rate(sum(1 for r in rated if outcome[r] == "negative"), len(rated)) or 0.0

    def row(reqs: set[str]) -> dict[str, Any]:
        n = len(reqs)
        k = sum(1 for r in reqs if outcome[r] == "negative")
        lo, hi = wilson_interval(k, n)
        return {
            "cited_in_rated": n,
            "negative": k,
            "negative_rate": k / n if n else 0.0,
            "wilson_lower": round(lo, 4),
            "wilson_upper": round(hi, 4),
            "lift": round((k / n) / base, 3) if base and n else None,
            "blamed": n >= min_support and lo > base,
            "examples": sorted(r for r in reqs if outcome[r] == "negative")[:3],
        }

    def rank(groups: dict[Any, set[str]], key_names: tuple[str, ...]) -> list[dict[str, Any]]:
        out = []
        for key, reqs in groups.items():
            keys = key if isinstance(key, tuple) else (key,)
            out.append({**dict(zip(key_names, keys, strict=True)), **row(reqs)})
        out.sort(key=lambda d: (-d["wilson_lower"], -d["negative"], str(d.get("doc_id", d.get("source_id")))))
        return out

    # who reads: a document row only for a reader who may read the document now (charter.access); every
    # other row goes into one redacted row per table, whose counts are those of the requests behind it
    hidden: set[tuple[str, str]] = set()
    if reader is not None:
        refs = [DocRef(s, d) for s, d in by_doc]
        hidden = {(r.source_id, r.doc_id) for r in reader.unreadable(refs)}
    hidden_sources = {s for s, _ in hidden}
    documents = rank({k: v for k, v in by_doc.items() if k not in hidden}, ("source_id", "doc_id"))
    sources = rank({k: v for k, v in by_source.items() if k not in hidden_sources}, ("source_id",))
    if hidden:
        reqs = set().union(*(by_doc[k] for k in hidden))
        blamed = sum(1 for k in hidden if row(by_doc[k])["blamed"])
        marker = document_redaction(len(hidden))
        documents.append(
            {
                "source_id": marker,
                "doc_id": "",
                **row(reqs),
                "blamed": blamed > 0,
                "examples": [],
                "redacted": True,
                "documents": len(hidden),
                "blamed_documents": blamed,
            }
        )
        reqs = set().union(*(by_source[s] for s in hidden_sources))
        blamed = sum(1 for s in hidden_sources if row(by_source[s])["blamed"])
        sources.append(
            {
                "source_id": document_redaction(len(hidden_sources), "source"),
                **row(reqs),
                "blamed": blamed > 0,
                "examples": [],
                "redacted": True,
                "sources": len(hidden_sources),
                "blamed_sources": blamed,
            }
        )
    return {
        "base_negative_rate": round(base, 4),
        "rated_requests_with_citations": len(rated),
        "min_support": min_support,
        "method": "Wilson 95% lower bound > base rate and n >= min_support",
        "documents": documents,
        "sources": sources,
        "redacted_documents": len(hidden),
    }


def _failures(data: dict[str, Any], top: int = 10) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for rid, errs in data["errors"].items():
        for e in errs or []:
            sig = error_signature(e.get("type"), e.get("stage"), e.get("message"))
            g = groups.setdefault(
                sig,
                {
                    "signature": sig,
                    "category": e.get("type") or "Error",
                    "stage": e.get("stage") or "-",
                    "requests": set(),
                },
            )
            g["requests"].add(rid)
    out = [
        {
            "signature": g["signature"],
            "category": g["category"],
            "stage": g["stage"],
            "count": len(g["requests"]),
            "examples": sorted(g["requests"])[:3],
        }
        for g in groups.values()
    ]
    out.sort(key=lambda g: (-g["count"], g["signature"]))
    return out[:top]


def _by_prompt_version(data: dict[str, Any]) -> list[dict[str, Any]]:
    versions: dict[str, dict[str, Any]] = {}
    for pv in sorted({r["prompt_version"] or "-" for r in data["rows"]}):
        rows = [r for r in data["rows"] if (r["prompt_version"] or "-") == pv]
        ids = {r["request_id"] for r in rows}
        sub = {
            "rows": rows,
            "feedback": [f for f in data["feedback"] if f["request_id"] in ids],
            "reviews": [d for d in data["reviews"] if d["request_id"] in ids],
        }
        s = _summary(sub)
        versions[pv] = {
            "prompt_version": pv,
            "requests": s["requests"],
            "escalation_rate": s["escalation_rate"],
            "feedback_score": s["feedback_score"],
            "acceptance_rate": s["acceptance_rate"],
            "groundedness_mean": s["groundedness_mean"],
            "cost_per_request_usd": s["cost_per_request_usd"],
        }
    return list(versions.values())


def _month_spend(rt: Runtime, now: datetime) -> float:
    from charter.telemetry._trends import sum_cost

    return sum_cost(rt, now.replace(day=1, hour=0, minute=0, second=0, microsecond=0), now)


def _diff(cur: float | None, prev: float | None) -> float | None:
    return None if cur is None or prev is None else cur - prev


def _days_in_month(now: datetime) -> int:
    nxt = (now.replace(day=28) + timedelta(days=4)).replace(day=1)
    return (nxt - timedelta(days=1)).day


def build_report(
    rt: Runtime,
    *,
    since: timedelta = timedelta(days=7),
    now: datetime | None = None,
    min_support: int = 5,
    trend_window: timedelta = timedelta(days=28),
    embed: Any = None,
    principal: Principal | None = None,
) -> dict[str, Any]:
    """The report as one JSON-ready document (rendered by :func:`render_report`; the console's Monitor
    page shows the same document). ``time_series`` (:func:`charter.telemetry._trends.build_trends`) and
    ``production_failures`` (:func:`charter.telemetry._clusters.build_failures`) cover ``trend_window``
    (at least ``since``); ``embed`` clusters failing questions by embeddings instead of words.

    ``principal`` is the reader (every front end passes it): a document's row in the source blame shows
    its id only if they may read it now (:mod:`charter.access`); the others collapse into one redacted row
    per table (``[redacted: N documents from sources you cannot read]``) with the counts of the requests
    behind them, so totals and the base rate stay those of all requests; any other string naming such a
    document is replaced by the marker. ``None`` is the unfiltered view, for code that shows the report
    to no one (tests, the alert evaluator)."""
    from charter.telemetry._clusters import build_failures
    from charter.telemetry._trends import build_trends, compare_periods, period_aggregates

    end = now or utcnow()
    window = max(since, trend_window)
    start = end - since
    prev_start = start - since
    cur = _load(rt, start, end)
    agg_cur, agg_prev = period_aggregates(rt, start, end), period_aggregates(rt, prev_start, start)
    s_cur, s_prev = _summary(cur), _agg_summary(rt, agg_prev, prev_start, start)
    rows = cur["rows"]
    n = len(rows)

    by_day = Counter(r["started_at"].date().isoformat() for r in rows)
    day_list = [
        (start.date() + timedelta(days=i)).isoformat() for i in range((end.date() - start.date()).days + 1)
    ]
    usage = {
        "requests": n,
        "active_users": s_cur["active_users"],
        "by_status": dict(sorted(Counter(r["status"] for r in rows).items())),
        "by_workflow": dict(sorted(Counter(r["workflow"] for r in rows).items())),
        "by_day": [{"day": d, "requests": by_day.get(d, 0)} for d in day_list],
    }

    outcomes = Counter(d["outcome"] for d in cur["reviews"])
    up = sum(1 for f in cur["feedback"] if f["rating"] > 0)
    down = sum(1 for f in cur["feedback"] if f["rating"] < 0)
    reasons = Counter(r for f in cur["feedback"] if f["rating"] < 0 for r in (f["reasons"] or []))
    g = [r["groundedness"] for r in rows if r["groundedness"] is not None]
    hist = [0] * GROUNDEDNESS_BINS
    for v in g:
        hist[min(GROUNDEDNESS_BINS - 1, max(0, int(v * GROUNDEDNESS_BINS)))] += 1
    quality = {
        "review": {
            "unchanged": outcomes["unchanged"],
            "edited": outcomes["edited"],
            "rejected": outcomes["rejected"],
            "decided": sum(outcomes.values()),
            "acceptance_rate": s_cur["acceptance_rate"],
            "unchanged_rate": _rate(outcomes["unchanged"], sum(outcomes.values())),
        },
        "feedback": {
            "up": up,
            "down": down,
            "score": s_cur["feedback_score"],
            "down_reasons": dict(reasons.most_common()),
        },
        "escalation_rate": s_cur["escalation_rate"],
        "escalations_by_reason": dict(
            Counter(r["escalation"] for r in rows if r["escalation"]).most_common()
        ),
        "groundedness": {
            "count": len(g),
            "mean": s_cur["groundedness_mean"],
            "p10": _pct(g, 0.1),
            "p50": _pct(g, 0.5),
            "p90": _pct(g, 0.9),
            "histogram": [
                {"bin": f"{i / GROUNDEDNESS_BINS:.1f}-{(i + 1) / GROUNDEDNESS_BINS:.1f}", "count": c}
                for i, c in enumerate(hist)
            ],
        },
        "by_prompt_version": _by_prompt_version(cur),
    }

    budgets = rt.spec.budgets
    costs = [r["cost_usd"] or 0.0 for r in rows]
    month_spend = _month_spend(rt, end)
    month_days = _days_in_month(end)
    elapsed_days = max(
        (end - end.replace(day=1, hour=0, minute=0, second=0, microsecond=0)).total_seconds() / 86400, 1 / 24
    )
    projection = month_spend / elapsed_days * month_days
    period_projection = (
        (sum(costs) / since.total_seconds()) * month_days * 86400 if since.total_seconds() else 0.0
    )
    drivers: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        drivers[(r["model"] or "-", r["prompt_version"] or "-")].append(r["cost_usd"] or 0.0)
    total_cost = sum(costs)
    cost = {
        "total_usd": round(total_cost, 6),
        "per_request_usd": s_cur["cost_per_request_usd"],
        "per_request_p95_usd": _pct(costs, 0.95),
        "per_request_max_usd": max(costs) if costs else None,
        "per_task_budget_usd": budgets.per_task_usd,
        "over_task_budget": sum(1 for c in costs if c > budgets.per_task_usd),
        "month_to_date_usd": round(month_spend, 6),
        "monthly_budget_usd": budgets.monthly_usd,
        "monthly_projection_usd": round(projection, 6),
        "monthly_projection_from_period_usd": round(period_projection, 6),
        "projection_vs_budget": _rate(max(projection, period_projection), budgets.monthly_usd),
        "expected_monthly_requests": budgets.expected_monthly_requests,
        "top_drivers": sorted(
            (
                {
                    "model": m,
                    "prompt_version": pv,
                    "requests": len(v),
                    "cost_usd": round(sum(v), 6),
                    "share": _rate(sum(v), total_cost),
                }
                for (m, pv), v in drivers.items()
            ),
            key=lambda d: -float(d["cost_usd"] or 0.0),
        )[:5],
    }

    trends = {
        k: {"current": s_cur[k], "previous": s_prev[k], "change": _diff(s_cur[k], s_prev[k])} for k in s_cur
    }
    compared = compare_periods(agg_cur, agg_prev)
    for k, v in compared.items():
        if k in trends:
            trends[k]["comparison"] = v
    reader = Reader(rt, principal) if principal is not None else None
    blame = _blame(cur, min_support, reader)
    doc = {
        "workflow": rt.spec.workflow.id,
        "generated_at": end.isoformat(),
        "period": {"start": start.isoformat(), "end": end.isoformat(), "days": since.total_seconds() / 86400},
        "previous_period": {"start": prev_start.isoformat(), "end": start.isoformat()},
        "usage": usage,
        "quality": quality,
        "cost": cost,
        "failures": _failures(cur),
        "source_blame": blame,
        "trends": trends,
        "rate_comparisons": compared,
        "time_series": build_trends(rt, since=window, now=end),
        "production_failures": build_failures(rt, since=window, now=end, embed=embed),
        "screened_documents": _screened(rt),
    }
    if reader is None:
        return doc
    hidden = reader.unreadable(DocRef(c["source_id"], c["doc_id"]) for c in cur["cited"])
    doc["reader"] = principal.id if principal is not None else None
    # flagged documents the reader may not read are counted, never named
    screened = doc["screened_documents"]
    unseen = set(reader.unreadable(DocRef(d["source"], d["doc_id"]) for d in screened))
    shown = [d for d in screened if DocRef(d["source"], d["doc_id"]) not in unseen]
    if len(shown) < len(screened):
        n = len(screened) - len(shown)
        shown.append(
            {"source": "-", "doc_id": document_redaction(n), "state": "-", "owner": "-", "reasons": []}
        )
    doc["screened_documents"] = shown
    return {k: (v if k == "source_blame" else scrub_documents(v, hidden)) for k, v in doc.items()}


def _screened(rt: Runtime) -> list[dict[str, Any]]:
    """Documents instruction screening flagged at sync (``charter.screening``): source, id, state, owner and
    reasons — never the sentences (those are for the source owner, ``charter sources show``)."""
    from charter.sources import screened_documents

    owners = {s.id: s.owner for s in rt.spec.sources}
    return [
        {
            "source": d["source"],
            "doc_id": d["doc_id"],
            "state": d["state"],
            "owner": owners.get(d["source"], "-"),
            "reasons": d["reasons"],
        }
        for d in screened_documents(rt)
    ]
