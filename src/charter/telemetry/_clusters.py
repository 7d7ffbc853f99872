"""Repeating failures from production: categories, near-duplicate question clusters, and who must act.

A *failure* is a request that escalated (by reason), whose draft was rejected in review (by reason
category), that got a thumbs-down (by reason), whose model-proposed tool call was refused, or that ended
in an error. :func:`build_failures` returns

* **categories** — one per kind and reason (``escalation:no_sources``, ``review_rejected:inaccurate``,
  ``negative_feedback:outdated``, ``tool_refused``, ``error:ProviderError``) with the count, the count per
  day (counted by the database over the whole window), the trend (second half of the window vs. the first),
  a masked example question and the **owner** who must act (from the charter's ``owners``; see
  :data:`OWNER_OF`);
* **clusters** — near-duplicate failing questions (the newest ``sample`` failing requests): questions are
  compared as word sets after normalising placeholders, numbers and case (Jaccard ≥ ``threshold``), or,
  when an ``embed`` function is given (the index's embedding model), by cosine similarity ≥
  ``semantic_threshold``. Each cluster has a stable id (``cl_`` + hash of its first question's normal form),
  its request ids, categories, counts per week, trend, a masked example and the owner of its main category.

Examples are the stored question, which the trace store already wrote through the masking choke point; if
``monitoring.fields.question`` is ``raw`` it is masked again here (:func:`charter.telemetry.mask_text`), and
if it is ``hashed`` or ``dropped`` there is no example text (clusters then group identical hashes only).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, literal, literal_column, select, union_all

from charter.errors import NotFound, UsageError
from charter.store import utcnow
from charter.store.tables import feedback, traces
from charter.telemetry._trends import _has_reviews, day_expr

if TYPE_CHECKING:
    from charter.telemetry._runtime import TelemetryRuntime

Embed = Callable[[list[str]], Sequence[Sequence[float]]]

#: Which owner duty (charter ``owners.<duty>``) must act on a failure category (by kind, then reason).
OWNER_OF: dict[str, str] = {
    "escalation:no_sources": "sources",
    "escalation:low_groundedness": "failures",
    "escalation:out_of_scope": "scope",
    "escalation:sensitive_topic": "scope",
    "escalation:canary_in_output": "incidents",
    "escalation:pii_in_output": "incidents",
    "escalation:approval_sla": "failures",
    "review_rejected:unsupported_by_sources": "sources",
    "review_rejected:incomplete": "sources",
    "review_rejected:out_of_scope": "scope",
    "review_rejected:wrong_tone": "prompt_changes",
    "negative_feedback:wrong_source": "sources",
    "negative_feedback:outdated": "sources",
    "negative_feedback:incomplete": "sources",
    "negative_feedback:wrong_tone": "prompt_changes",
    "negative_feedback:unsafe": "incidents",
    "tool_refused": "incidents",
    "error": "incidents",
}
KINDS = ("escalation", "review_rejected", "negative_feedback", "tool_refused", "error")


def owner_duty(category: str) -> str:
    """The ``owners`` duty for a category: exact match, then the kind, then ``failures``."""
    return OWNER_OF.get(category) or OWNER_OF.get(category.split(":", 1)[0]) or "failures"


_PLACEHOLDER = re.compile(r"<([A-Z_]+?)(?:_[0-9a-f]{6,})?>")
_WORD = re.compile(r"<[a-z_]+>|#|[a-z0-9']+")
_NUM = re.compile(r"\d+(?:[.,]\d+)*")
_STOP = frozenset(
    [
        "a",
        "an",
        "the",
        "to",
        "of",
        "for",
        "and",
        "or",
        "is",
        "it",
        "my",
        "i",
        "me",
        "we",
        "our",
        "you",
        "your",
        "on",
        "in",
        "at",
        "be",
        "do",
        "does",
        "can",
        "with",
    ]
)


def normalise(text: str) -> str:
    """The normal form used to compare questions: placeholders without their hash, numbers as ``#``."""
    t = _PLACEHOLDER.sub(lambda m: f" <{m.group(1).lower()}> ", text or "")
    t = _NUM.sub(" # ", t.lower())
    return " ".join(_WORD.findall(t))


def _words(text: str) -> frozenset[str]:
    return frozenset(w for w in normalise(text).split() if w not in _STOP)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    return len(a & b) / len(a | b) if (a or b) else 1.0


# ------------------------------------------------------------------------------------------- the SQL
def _failure_rows(rt: TelemetryRuntime, start: datetime, end: datetime) -> Any:
    """One select of ``(request_id, started_at, category)`` for every failure in the window except
    thumbs-down (their reasons are a JSON list: :func:`_feedback_failures`)."""
    t = traces.c
    window = and_(t.started_at >= start, t.started_at < end)
    parts = [
        select(t.request_id, t.started_at, (literal("escalation:") + t.escalation).label("category")).where(
            window & t.escalation.is_not(None)
        ),
        select(t.request_id, t.started_at, literal("tool_refused").label("category")).where(
            window & (t.tool_refusals > 0)
        ),
        select(
            t.request_id,
            t.started_at,
            (literal("error:") + func.coalesce(t.error_type, "Error")).label("category"),
        ).where(window & (t.status == "error")),
    ]
    selects = list(parts)
    if _has_reviews(rt.store):
        from charter.store.tables import review_items as ri

        selects.append(
            select(
                t.request_id,
                t.started_at,
                (literal("review_rejected:") + func.coalesce(ri.c.reject_reason, "unspecified")).label(
                    "category"
                ),
            )
            .select_from(traces.join(ri, ri.c.request_id == t.request_id))
            .where(window & (ri.c.decision == "rejected"))
        )
    return union_all(*selects).subquery("failures")


def _feedback_failures(
    rt: TelemetryRuntime, start: datetime, end: datetime
) -> list[tuple[str, datetime, str]]:
    """Thumbs-down per reason (reasons are a JSON list, so they are split here; there are few rows)."""
    t = traces.c
    # on SQLite, `+started_at` keeps the planner from walking the window's traces (hundreds of thousands)
    # to probe feedback: the thumbs-down rows drive, each looks its trace up by key (~6x faster at 1M)
    at: Any = t.started_at
    if rt.store.dialect == "sqlite":
        at = literal_column("+traces.started_at", type_=t.started_at.type)
    q = (
        select(t.request_id, t.started_at, feedback.c.reasons)
        .select_from(traces.join(feedback, feedback.c.request_id == t.request_id))
        .where((at >= start) & (at < end) & (feedback.c.rating < 0))
    )
    out = []
    with rt.store.connect() as conn:
        for rid, at, reasons in conn.execute(q):
            rs = reasons if isinstance(reasons, list) else json.loads(reasons or "[]")
            for r in rs or ["unspecified"]:
                out.append((rid, at, f"negative_feedback:{r}"))
    return out


def failure_counts(
    rt: TelemetryRuntime,
    start: datetime,
    end: datetime,
    feedback_rows: list[tuple[str, datetime, str]] | None = None,
) -> dict[str, Counter[str]]:
    """Failures per category and UTC day in ``[start, end)``: whole days from the monitoring rollup
    (``esc``/``rej``/``fail`` rows, migration ``0018_rollup``), the edge days from the raw rows.
    ``feedback_rows``: :func:`_feedback_failures` of ``[start, end)`` when the caller has them already (the
    edges' thumbs-down are then taken from them instead of being queried again)."""
    from charter.telemetry._trends import day_split, rollup_labels

    raw, days = day_split(start, end)
    per_day: dict[str, Counter[str]] = defaultdict(Counter)
    with rt.store.connect() as conn:
        for a, b in raw:
            sub = _failure_rows(rt, a, b)
            day = day_expr(rt.store, sub.c.started_at)
            for cat, d, n in conn.execute(
                select(sub.c.category, day, func.count()).group_by(sub.c.category, day)
            ):
                per_day[cat][str(d)] += int(n)
            edge_fb = (
                _feedback_failures(rt, a, b)
                if feedback_rows is None
                else [r for r in feedback_rows if a <= r[1] < b]
            )
            for _rid, at, cat in edge_fb:
                per_day[cat][at.date().isoformat()] += 1
    if days is not None:
        prefix = {"esc": "escalation:", "rej": "review_rejected:", "fail": ""}
        for d, _pv, _m, _iv, kind, label, n in rollup_labels(rt.store, *days, tuple(prefix)):
            per_day[prefix[kind] + label][d] += int(n)
    return dict(per_day)


def _questions(rt: TelemetryRuntime, request_ids: list[str]) -> dict[str, str | None]:
    """The stored (masked) question of each request, masked again if the policy stores it raw."""
    policy = rt.spec.monitoring.fields.get("question", "masked")
    out: dict[str, str | None] = {}
    with rt.store.connect() as conn:
        for i in range(0, len(request_ids), 500):
            chunk = request_ids[i : i + 500]
            for rid, body in conn.execute(
                select(traces.c.request_id, traces.c.body).where(traces.c.request_id.in_(chunk))
            ):
                q = (body or {}).get("question")
                out[rid] = q if isinstance(q, str) and q else None
    if policy == "raw":
        from charter.telemetry._wiring import mask_text

        out = {k: (mask_text(rt, v) if v else v) for k, v in out.items()}
    return out


# ------------------------------------------------------------------------------------------- building
def _trend(first: int, second: int) -> str:
    if first == second:
        return "steady"
    if first == 0:
        return "new"
    ratio = second / first
    return "rising" if ratio >= 1.25 else ("falling" if ratio <= 0.8 else "steady")


def _owner(rt: TelemetryRuntime, category: str) -> dict[str, str]:
    duty = owner_duty(category)
    return {"duty": duty, "principal": str(getattr(rt.spec.owners, duty))}


def _recent_start(per_day: dict[str, Counter[str]], start: datetime, rows: int) -> datetime:
    """The start of the last days holding ``rows`` non-feedback failure rows (the newest ``rows`` such rows
    lie in them), or ``start``."""
    by_day: Counter[str] = Counter()
    for cat, days in per_day.items():
        if not cat.startswith("negative_feedback:"):
            by_day.update(days)
    seen = 0
    for d in sorted(by_day, reverse=True):
        seen += by_day[d]
        if seen >= rows:
            return max(start, datetime.fromisoformat(d).replace(tzinfo=UTC))
    return start


def _examples(ids: list[str], cats_of: dict[str, set[str]], questions: dict[str, Any]) -> dict[str, str]:
    """Each category's example question: the newest failing request's of that category that has one."""
    example: dict[str, str] = {}
    for rid in ids:
        for cat in cats_of[rid]:
            if cat not in example and questions.get(rid):
                example[cat] = str(questions[rid])
    return example


def _categories(
    rt: TelemetryRuntime, per_day: dict[str, Counter[str]], mid: datetime, example: dict[str, str]
) -> list[dict[str, Any]]:
    halves: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    mid_day = mid.date().isoformat()
    for cat, days in per_day.items():
        for d, n in days.items():
            halves[cat][0 if d < mid_day else 1] += n
    return [
        {
            "category": cat,
            "kind": cat.split(":", 1)[0],
            "reason": cat.split(":", 1)[1] if ":" in cat else None,
            "count": sum(days.values()),
            "by_day": dict(sorted(days.items())),
            "first_half": halves[cat][0],
            "second_half": halves[cat][1],
            "trend": _trend(*halves[cat]),
            "example": example.get(cat),
            "owner": _owner(rt, cat),
        }
        for cat, days in per_day.items()
    ]


def build_failures(
    rt: TelemetryRuntime,
    *,
    since: timedelta = timedelta(days=28),
    now: datetime | None = None,
    sample: int = 1000,
    threshold: float = 0.6,
    embed: Embed | None = None,
    semantic_threshold: float = 0.85,
    min_cluster: int = 2,
    top: int = 20,
) -> dict[str, Any]:
    """Failure categories and near-duplicate question clusters in ``[now - since, now)``."""
    end = now or utcnow()
    start = end - since
    mid = start + (end - start) / 2
    # the window's thumbs-down once: the edge days' counts and the newest failing requests both use them
    fb_rows = _feedback_failures(rt, start, end)
    per_day = failure_counts(rt, start, end, fb_rows)
    since_day = _recent_start(per_day, start, sample * 3)
    sub = _failure_rows(rt, since_day, end)
    with rt.store.connect() as conn:
        recent = list(
            conn.execute(
                select(sub.c.request_id, sub.c.started_at, sub.c.category)
                .order_by(sub.c.started_at.desc())
                .limit(sample * 3)
            )
        )
    # failing requests (newest first), each with its categories
    cats_of: dict[str, set[str]] = defaultdict(set)
    at_of: dict[str, datetime] = {}
    for rid, at, cat in [*recent, *sorted(fb_rows, key=lambda r: r[1], reverse=True)]:
        cats_of[rid].add(cat)
        at_of[rid] = at
    ids = sorted(at_of, key=lambda r: at_of[r], reverse=True)[:sample]
    questions = _questions(rt, ids)
    categories = _categories(rt, per_day, mid, _examples(ids, cats_of, questions))
    categories.sort(key=lambda c: (-c["count"], c["category"]))
    clusters = cluster_questions(
        [(rid, at_of[rid], questions.get(rid), sorted(cats_of[rid])) for rid in reversed(ids)],
        threshold=threshold,
        embed=embed,
        semantic_threshold=semantic_threshold,
        mid=mid,
    )
    for c in clusters:
        c["owner"] = _owner(rt, c["main_category"])
    clusters = [c for c in clusters if c["count"] >= min_cluster]
    clusters.sort(key=lambda c: (-c["count"], c["id"]))
    return {
        "window": {"start": start.isoformat(), "end": end.isoformat()},
        "method": (
            f"cosine ≥ {semantic_threshold} on the index's embeddings"
            if embed
            else f"word-set Jaccard ≥ {threshold} after normalising placeholders and numbers"
        ),
        "sampled_requests": len(ids),
        "failing_requests": len(ids),
        "categories": categories,
        "clusters": clusters[:top],
    }


def cluster_questions(
    items: list[tuple[str, datetime, str | None, list[str]]],
    *,
    threshold: float = 0.6,
    embed: Embed | None = None,
    semantic_threshold: float = 0.85,
    mid: datetime | None = None,
) -> list[dict[str, Any]]:
    """Greedy leader clustering of ``(request_id, at, masked question, categories)``, oldest first.

    A question joins the most similar existing cluster whose first question (the leader) is at least
    ``threshold`` similar (Jaccard of word sets, or cosine of embeddings when ``embed`` is given); otherwise
    it starts a new cluster. Questions without text (hashed/dropped policy) cluster by exact value only.
    """
    texts = [q or "" for _, _, q, _ in items]
    vectors: list[Sequence[float]] | None = None
    if embed is not None and texts:
        vectors = list(embed([normalise(t) for t in texts]))
    leaders: list[int] = []
    members: dict[int, list[int]] = {}
    words = [_words(t) for t in texts]
    for i, (_rid, _at, q, _cats) in enumerate(items):
        best, best_sim = -1, -1.0
        for lead in leaders:
            if not q or not texts[lead]:
                sim = 1.0 if q == items[lead][2] else 0.0
            elif vectors is not None:
                sim = sum(a * b for a, b in zip(vectors[i], vectors[lead], strict=False))
            else:
                sim = jaccard(words[i], words[lead])
            if sim > best_sim:
                best, best_sim = lead, sim
        limit = semantic_threshold if vectors is not None else threshold
        if best >= 0 and best_sim >= limit:
            members[best].append(i)
        else:
            leaders.append(i)
            members[i] = [i]
    out = []
    for lead in leaders:
        idx = members[lead]
        cats: Counter[str] = Counter(c for i in idx for c in items[i][3])
        weeks: Counter[str] = Counter()
        halves = [0, 0]
        for i in idx:
            at = items[i][1]
            monday = (at - timedelta(days=at.weekday())).date().isoformat()
            weeks[monday] += 1
            if mid is not None:
                halves[0 if at < mid else 1] += 1
        norm = normalise(texts[lead]) if texts[lead] else f"hash:{items[lead][2]}"
        out.append(
            {
                "id": "cl_" + hashlib.sha256(norm.encode()).hexdigest()[:10],
                "count": len(idx),
                "example": texts[lead] or None,
                "normal_form": norm,
                "categories": dict(cats.most_common()),
                "main_category": cats.most_common(1)[0][0] if cats else "error",
                "requests": [items[i][0] for i in idx],
                "first_seen": min(items[i][1] for i in idx).isoformat(),
                "last_seen": max(items[i][1] for i in idx).isoformat(),
                "by_week": dict(sorted(weeks.items())),
                "trend": _trend(*halves) if mid is not None else None,
            }
        )
    return out


def find_cluster(
    rt: TelemetryRuntime,
    cluster_id: str,
    *,
    since: timedelta,
    now: datetime | None = None,
    embed: Embed | None = None,
) -> dict[str, Any]:
    """The cluster ``cluster_id`` as :func:`build_failures` reports it (any size), or ``NotFound``."""
    report = build_failures(rt, since=since, now=now, embed=embed, min_cluster=1, top=10_000)
    for c in report["clusters"]:
        if c["id"] == cluster_id:
            return dict(c)
    known = ", ".join(c["id"] for c in report["clusters"][:10]) or "none"
    raise NotFound(
        f"no failure cluster {cluster_id!r} in the last {since}; "
        f"clusters now: {known} (see `charter report --format json`, failures.clusters)"
    )


#: What an eval case made from a failure expects, by the cluster's main category: a correct escalation
#: stays one (a regression guard); everything else should have been answered well (the case fails until
#: the cause is fixed — that is the point of adding it).
EXPECT_FOR: dict[str, str] = {
    "escalation:out_of_scope": "escalate",
    "escalation:sensitive_topic": "escalate",
    "escalation:canary_in_output": "escalate",
    "escalation:pii_in_output": "escalate",
    "tool_refused": "any",
}


def cases_from_cluster(
    rt: TelemetryRuntime, cluster: dict[str, Any], *, ask_as: str, max_cases: int = 5, today: str = ""
) -> list[dict[str, Any]]:
    """Eval cases (eval-set YAML dicts) from a cluster's distinct masked questions: ``prod-<cluster>-<n>``,
    category ``edge``, ``expect`` per :data:`EXPECT_FOR` (default ``answer``), tagged ``production``, with
    the categories and request ids in ``notes`` so the owner can add ``expected_sources``/``must_include``."""
    questions = _questions(rt, list(cluster["requests"]))
    seen: set[str] = set()
    picked: list[tuple[str, str]] = []
    for rid in cluster["requests"]:
        q = questions.get(rid)
        if not q:
            continue
        key = normalise(q)
        if key in seen:
            continue
        seen.add(key)
        picked.append((rid, q))
    if not picked:
        raise UsageError(
            f"cluster {cluster['id']} has no question text (monitoring.fields.question is hashed or dropped), "
            "so no eval case can be made from it"
        )
    main = cluster["main_category"]
    expect = EXPECT_FOR.get(main, "answer")
    cats = ", ".join(f"{k} ×{v}" for k, v in cluster["categories"].items())
    out = []
    for i, (rid, q) in enumerate(picked[:max_cases], 1):
        out.append(
            {
                "id": f"prod-{cluster['id'][3:]}-{i}",
                "category": "edge",
                "as": ask_as,
                "question": q,
                "expect": expect,
                "tags": ["production", cluster["id"], main.replace(":", "-")],
                "notes": (
                    f"From production failure cluster {cluster['id']} ({cluster['count']} requests: {cats}); "
                    f"example request {rid}; added {today}. Owner: {cluster['owner']['principal']} "
                    f"({cluster['owner']['duty']}) — add expected_sources / must_include."
                ),
            }
        )
    return out
