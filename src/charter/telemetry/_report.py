"""The operator report: usage, quality, cost, repeating failures and source blame, with trends.

:func:`build_report` answers the five monitoring questions for a period (default: the last 7 days) and
compares each headline number with the previous period of the same length. Everything is computed from
the masked monitoring tables (``traces``, ``trace_sources``, ``feedback``) and the review decisions; the
report never reads raw content, so it cannot leak what masking removed.

**Aggregated by the database.** The period's additive numbers come from its cells
(:func:`charter.telemetry._trends.load_cells`: the daily rollup plus the edge days); the rest is grouped,
ranked and counted in SQL (:func:`_period`, :func:`_blame_rows`) — percentiles are exact nearest-rank values
(``ORDER BY … LIMIT 1 OFFSET k``, ``ROW_NUMBER()`` within a histogram bin), distinct requests are counted
by the database. Only the failing requests' error lists (for their signatures) and, for a reader, the
distinct cited documents are read row by row. ``tests/telemetry/test_report_sql.py`` is the oracle.

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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, case, cast, distinct, func, or_, select, true

from charter.access import DocRef, Reader, document_redaction, scrub_documents
from charter.store import utcnow
from charter.store.tables import feedback, trace_sources, traces
from charter.telemetry._trends import Agg, EdgeMemo, rollup, wilson_interval

if TYPE_CHECKING:
    from charter.spec import Principal
    from charter.telemetry._runtime import TelemetryRuntime

GROUNDEDNESS_BINS = 10


def _rate(num: float, den: float) -> float | None:
    return None if not den else num / den


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


def _agg_summary_of(agg: Agg, users: int) -> dict[str, float | None]:
    """The headline numbers of a period from its cells (ratings are ±1, so thumbs-down = rating < 0)."""
    n, up, down = agg.requests, agg.fb_up, agg.fb_down
    return {
        "requests": n,
        "active_users": users,
        "escalation_rate": _rate(agg.escalated, n),
        "error_rate": _rate(agg.errors, n),
        "feedback_score": _rate(up - down, up + down),
        "acceptance_rate": _rate(agg.reviews["unchanged"] + agg.reviews["edited"], agg.decided),
        "groundedness_mean": (agg.g_sum / agg.g_n) if agg.g_n else None,
        "cost_usd": agg.cost_usd,
        "cost_per_request_usd": _rate(agg.cost_usd, n),
    }


def _agg_summary(rt: TelemetryRuntime, agg: Agg, start: datetime, end: datetime) -> dict[str, float | None]:
    """:func:`_agg_summary_of` with the period's number of distinct principals (one count)."""
    with rt.store.connect() as conn:
        users = conn.execute(
            select(func.count(distinct(traces.c.principal_id))).where(
                (traces.c.started_at >= start) & (traces.c.started_at < end)
            )
        ).scalar()
    return _agg_summary_of(agg, int(users or 0))


# ------------------------------------------------------------------------------------------- the period, in SQL
def _nearest_rank(n: int, q: float) -> int:
    """The 1-based nearest rank of quantile ``q`` among ``n >= 1`` sorted values: ``ceil(q * n)``, within
    ``[1, n]``."""
    return min(n, max(1, math.ceil(q * n)))


def _value_at_rank(conn: Any, column: Any, where: Any, rank: int, n: int) -> float | None:
    """The value at 1-based ``rank`` of ``column`` sorted ascending among the ``n`` rows ``where`` selects,
    exactly: ``ORDER BY … LIMIT 1 OFFSET k`` from the nearer end, so the database's sorter keeps at most
    ``min(rank, n - rank + 1)`` rows (ties make no difference: equal values are interchangeable)."""
    if rank <= n - rank + 1:
        q = select(column).where(where).order_by(column).limit(1).offset(rank - 1)
    else:
        q = select(column).where(where).order_by(column.desc()).limit(1).offset(n - rank)
    v = conn.execute(q).scalar()
    return None if v is None else float(v)


def _sorted_ids(rt: TelemetryRuntime, column: Any) -> Any:
    """``column`` ordered by code point on every backend (PostgreSQL's database collation may not be)."""
    return column.collate("C") if rt.store.dialect == "postgresql" else column


def _fold_period_rows(
    rows: Any,
) -> tuple[dict[tuple[str, str], list[Any]], list[int], Counter[tuple[int, int]]]:
    """Usage per (status, workflow) as [count, max cost, over budget], the groundedness histogram and the
    count of values per (bin, sub-bin), from :func:`_period`'s grouped rows."""
    usage: dict[tuple[str, str], list[Any]] = {}
    hist = [0] * GROUNDEDNESS_BINS
    cells: Counter[tuple[int, int]] = Counter()  # (bin, sub-bin) → values
    for status, wf, b, sub, c, mx, over in rows:
        u = usage.setdefault((status, wf), [0, None, 0])
        u[0] += int(c)
        u[1] = mx if u[1] is None or (mx is not None and mx > u[1]) else u[1]
        u[2] += int(over or 0)
        if b is not None:
            hist[int(b)] += int(c)
            cells[(int(b), int(sub))] += int(c)
    return usage, hist, cells


def _percentile_targets(
    hist: list[int], cells: Counter[tuple[int, int]]
) -> dict[float, tuple[int, int, int]]:
    """The nearest ranks of p10/p50/p90 as (bin, sub-bin, rank within it); the database then returns only
    those cells' values (about 1% of the period's each)."""
    g_n = sum(hist)
    targets: dict[float, tuple[int, int, int]] = {}
    ordered = sorted(cells.items())
    for q in (0.1, 0.5, 0.9) if g_n else ():
        rank, i = _nearest_rank(g_n, q), 0
        while rank > ordered[i][1]:
            rank, i = rank - ordered[i][1], i + 1
        targets[q] = (*ordered[i][0], rank)
    return targets


def _percentile_values_and_errors(
    conn: Any, window: Any, g_bin: Any, g_sub: Any, targets: dict[float, tuple[int, int, int]]
) -> tuple[dict[float, float | None], list[tuple[str, Any]]]:
    """One scan for the values of the target cells (giving the percentiles) and the failing requests'
    error lists."""
    t = traces.c
    cells_wanted = {(b, sub) for b, sub, _ in targets.values()}
    failing = t.error_type.is_not(None)
    wanted = or_(failing, *((g_bin == b) & (g_sub == sub) for b, sub in cells_wanted))
    values: dict[tuple[int, int], list[float]] = defaultdict(list)
    errors: list[tuple[str, Any]] = []
    for b, sub, v, rid, is_error, errs in conn.execute(
        select(
            g_bin,
            g_sub,
            t.groundedness,
            t.request_id,
            case((failing, 1), else_=0),
            case((failing, t.body["errors"]), else_=None),
        ).where(window & wanted)
    ):
        if v is not None and (int(b), int(sub)) in cells_wanted:
            values[(int(b), int(sub))].append(float(v))
        if is_error:
            errors.append((rid, errs))
    for vs in values.values():
        vs.sort()
    g_pct = {
        q: values[(targets[q][0], targets[q][1])][targets[q][2] - 1] if q in targets else None
        for q in (0.1, 0.5, 0.9)
    }
    return g_pct, errors


def _period(rt: TelemetryRuntime, start: datetime, end: datetime, *, cited_docs: bool) -> dict[str, Any]:
    """The period's non-additive numbers, each aggregated by the database: requests by status and workflow
    with the cost maximum, the requests over the per-task budget and the groundedness histogram (one
    ``GROUP BY`` status, workflow, bin and sub-bin), exact nearest-rank percentiles (groundedness
    p10/p50/p90: the few values of the sub-bins holding those ranks, sorted here; cost p95:
    ``ORDER BY … LIMIT 1 OFFSET k``), the failing requests' error lists (for their signatures — the only
    per-request rows read) and, for a reader, the documents the period's answers cited. Everything additive
    comes from the period's cells (:func:`charter.telemetry._trends.load_cells`)."""
    t = traces.c
    window = (t.started_at >= start) & (t.started_at < end)
    cost = func.coalesce(t.cost_usd, 0.0)
    per_task = rt.spec.budgets.per_task_usd

    def trunc(v: Any) -> Any:  # SQLite's CAST truncates; PostgreSQL's rounds, so floor there
        return cast(v, Integer) if rt.store.dialect == "sqlite" else func.floor(v)

    # the histogram bin as Python's int() truncates; below 0 both clamp to bin 0, above 1 to the last bin.
    # The sub-bin (hundredths, unclamped) only narrows where a percentile's rank lies. Both are monotone in
    # the value, so the k-th value overall is a known rank within one (bin, sub-bin) cell.
    raw_bin = trunc(t.groundedness * GROUNDEDNESS_BINS)
    g_bin = case((raw_bin < 0, 0), (raw_bin > GROUNDEDNESS_BINS - 1, GROUNDEDNESS_BINS - 1), else_=raw_bin)
    g_sub = trunc(t.groundedness * (GROUNDEDNESS_BINS * 10))
    with rt.store.connect() as conn:
        rows = conn.execute(
            select(
                t.status,
                t.workflow,
                g_bin,
                g_sub,
                func.count(),
                func.max(cost),
                func.sum(case((cost > per_task, 1), else_=0)),
            )
            .where(window)
            .group_by(t.status, t.workflow, g_bin, g_sub)
        ).fetchall()
        usage, hist, cells = _fold_period_rows(rows)
        targets = _percentile_targets(hist, cells)
        g_pct, errors = _percentile_values_and_errors(conn, window, g_bin, g_sub, targets)
        n = sum(u[0] for u in usage.values())
        p95 = _value_at_rank(conn, cost, window, _nearest_rank(n, 0.95), n) if n else None
        docs = cited_documents(conn, start, end) if cited_docs else []
    maxes = [float(u[1]) for u in usage.values() if u[1] is not None]
    return {
        "by_status": _counter((status, u[0]) for (status, _), u in usage.items()),
        "by_workflow": _counter((wf, u[0]) for (_, wf), u in usage.items()),
        "g_hist": hist,
        "g_pct": g_pct,
        "cost": {"max": max(maxes) if maxes else None, "over": sum(u[2] for u in usage.values()), "p95": p95},
        "errors": errors,
        "cited_docs": docs,
    }


def cited_documents(conn: Any, start: datetime, end: datetime) -> list[DocRef]:
    """The distinct documents cited by the answers of the requests started in ``[start, end)``: a covering
    range scan of ``ix_trace_sources_cited`` (migration ``0021_report``). ``trace_sources`` rows are written
    with their trace in one transaction, with its ``started_at``, and deleted with it by retention, so no
    join with ``traces`` is needed to know which requests are in the period."""
    ts = trace_sources.c
    q = (
        select(ts.source_id, ts.doc_id)
        .where((ts.cited == true()) & (ts.started_at >= start) & (ts.started_at < end))
        .distinct()
    )
    return [DocRef(s, d) for s, d in conn.execute(q)]


def _counter(pairs: Any) -> Counter[str]:
    out: Counter[str] = Counter()
    for k, v in pairs:
        out[k] += v
    return out


def _rated_cited(rt: TelemetryRuntime, start: datetime, end: datetime) -> Any:
    """One row per (source, document, rated request whose answer cited it, ``neg``), as a CTE: what the
    source blame groups. A request is rated when it has a review decision or feedback; ``neg`` = 1 when a
    review rejected it or its thumbs-down outnumber its thumbs-up (see the module docstring)."""
    from sqlalchemy import union_all

    from charter.telemetry._feedback import REVIEW_OUTCOMES, _has_table

    t, ts, fb = traces.c, trace_sources.c, feedback.c
    window = (t.started_at >= start) & (t.started_at < end)
    parts = [
        select(
            fb.request_id.label("rid"),
            case((func.sum(case((fb.rating > 0, 1), else_=-1)) < 0, 1), else_=0).label("neg"),
        )
        .select_from(traces.join(feedback, t.request_id == fb.request_id))
        .where(window)
        .group_by(fb.request_id)
    ]
    if _has_table(rt.store, "review_items"):
        from charter.store.tables import review_items as ri

        rejected = [d for d, o in REVIEW_OUTCOMES.items() if o == "rejected"]
        parts.append(
            select(
                ri.c.request_id.label("rid"),
                func.max(case((ri.c.decision.in_(rejected), 1), else_=0)).label("neg"),
            )
            .select_from(traces.join(ri, t.request_id == ri.c.request_id))
            .where(window & ri.c.decision.in_(list(REVIEW_OUTCOMES)))
            .group_by(ri.c.request_id)
        )
    u = union_all(*parts).subquery("u")
    outcome = select(u.c.rid, func.max(u.c.neg).label("neg")).group_by(u.c.rid).subquery("outcome")
    return (
        select(ts.source_id, ts.doc_id, outcome.c.rid, outcome.c.neg)
        .select_from(outcome.join(trace_sources, ts.request_id == outcome.c.rid))
        # `IS NOT false`, not `= true` (the same for this NOT NULL column): the period's cited rows
        # (ix_trace_sources_cited) outnumber the rated requests' ~10 to 1, so the citations are found by
        # primary-key probes from the rated requests; an equality on `cited` would let SQLite's planner
        # (no statistics) scan that index instead — twice as slow at 1M traces
        .where(ts.cited.is_not(False) & (ts.started_at >= start) & (ts.started_at < end))
        .distinct()
        .cte("rc")
    )


#: Up to this many unreadable documents, the redacted rows' distinct requests are counted by the database
#: (the documents in an ``IN`` list); above, the hidden sources' rated citations are returned row by row.
INLINE_HIDDEN = 1000


def _blame_rows(
    rt: TelemetryRuntime,
    start: datetime,
    end: datetime,
    hidden_sources: set[str],
    hidden_docs: set[DocRef] | None = None,
) -> dict[str, list[tuple[str, str, int, int, str | None]]]:
    """One query (the rated citations as a CTE, evaluated once) returning, by ``kind``: ``doc`` and ``src``
    (rated requests ``n`` and negative ones ``k`` per document / source, distinct requests), ``all`` (the
    same over everything cited), ``xdoc`` / ``xsrc`` (the first three negative request ids per document /
    source, code-point order) and ``hid`` (every rated citation of a document in ``hidden_sources``, so the
    redacted rows count distinct requests)."""
    from sqlalchemy import String, literal, null, tuple_, union_all

    rc = _rated_cited(rt, start, end)
    rc_pair = tuple_(rc.c.source_id, rc.c.doc_id)
    none = null().cast(String)

    def firsts(kind: str, keys: tuple[str, ...]) -> Any:
        neg = select(*(rc.c[k] for k in keys), rc.c.rid).where(rc.c.neg == 1).distinct().subquery()
        rn = func.row_number().over(
            partition_by=[neg.c[k] for k in keys], order_by=_sorted_ids(rt, neg.c.rid)
        )
        ranked = select(*(neg.c[k] for k in keys), neg.c.rid, rn.label("rn")).subquery()
        return select(
            literal(kind),
            ranked.c.source_id,
            ranked.c.doc_id if "doc_id" in keys else literal(""),
            literal(0),
            literal(0),
            ranked.c.rid,
        ).where(ranked.c.rn <= 3)

    distinct_k = func.count(distinct(case((rc.c.neg == 1, rc.c.rid))))
    parts = [
        select(literal("doc"), rc.c.source_id, rc.c.doc_id, func.count(), func.sum(rc.c.neg), none).group_by(
            rc.c.source_id, rc.c.doc_id
        ),
        select(
            literal("src"), rc.c.source_id, literal(""), func.count(distinct(rc.c.rid)), distinct_k, none
        ).group_by(rc.c.source_id),
        select(literal("all"), literal(""), literal(""), func.count(distinct(rc.c.rid)), distinct_k, none),
        firsts("xdoc", ("source_id", "doc_id")),
        firsts("xsrc", ("source_id",)),
    ]
    if hidden_docs:
        pairs = rc_pair.in_(sorted((r.source_id, r.doc_id) for r in hidden_docs))
        cited_hidden = select(rc.c.source_id).where(pairs)
        parts += [
            select(
                literal("hdoc"), literal(""), literal(""), func.count(distinct(rc.c.rid)), distinct_k, none
            ).where(pairs),
            select(
                literal("hsrc"), literal(""), literal(""), func.count(distinct(rc.c.rid)), distinct_k, none
            ).where(rc.c.source_id.in_(cited_hidden)),
        ]
    elif hidden_sources:
        parts.append(
            select(literal("hid"), rc.c.source_id, rc.c.doc_id, literal(0), rc.c.neg, rc.c.rid).where(
                rc.c.source_id.in_(sorted(hidden_sources))
            )
        )
    out: dict[str, list[tuple[str, str, int, int, str | None]]] = defaultdict(list)
    with rt.store.connect() as conn:
        for kind, src, doc, n, k, rid in conn.execute(union_all(*parts)):
            out[kind].append((src, doc, int(n or 0), int(k or 0), rid))
    return out


@dataclass(frozen=True)
class _BlameScale:
    """How :func:`_blame` scores a document or source: Wilson's interval against the base negative rate."""

    base: float
    min_support: int

    def row(self, n: int, k: int, examples: list[str]) -> dict[str, Any]:
        lo, hi = wilson_interval(k, n)
        return {
            "cited_in_rated": n,
            "negative": k,
            "negative_rate": k / n if n else 0.0,
            "wilson_lower": round(lo, 4),
            "wilson_upper": round(hi, 4),
            "lift": round((k / n) / self.base, 3) if self.base and n else None,
            "blamed": n >= self.min_support and lo > self.base,
            "examples": sorted(examples),
        }

    def rank(
        self, groups: dict[Any, tuple[int, int]], examples: dict[Any, list[str]], key_names: tuple[str, ...]
    ) -> list[dict[str, Any]]:
        out = []
        for key, (n, k) in groups.items():
            keys = key if isinstance(key, tuple) else (key,)
            out.append({**dict(zip(key_names, keys, strict=True)), **self.row(n, k, examples.get(key, []))})
        out.sort(
            key=lambda d: (
                -d["wilson_lower"],
                -d["negative"],
                str(d.get("doc_id", d.get("source_id"))),
                str(d["source_id"]),  # one document id in two sources
            )
        )
        return out


def _redacted_blame_rows(
    scale: _BlameScale,
    rows: dict[str, list[tuple[str, str, int, int, str | None]]],
    inline: bool,
    hidden: set[tuple[str, str]],
    by_doc: dict[tuple[str, str], tuple[int, int]],
    by_source: dict[str, tuple[int, int]],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The one redacted document row and the one redacted source row, counting the distinct requests (and
    negative ones) behind the hidden documents and behind their sources."""
    hidden_sources = {s for s, _ in hidden}
    if inline:
        hdoc, hsrc = rows["hdoc"][0][2:4], rows["hsrc"][0][2:4]
    else:
        docs_neg = {rid: k for s, d, _, k, rid in rows["hid"] if (s, d) in hidden}
        src_neg = {rid: k for s, _, _, k, rid in rows["hid"] if s in hidden_sources}
        hdoc = (len(docs_neg), sum(1 for v in docs_neg.values() if v == 1))
        hsrc = (len(src_neg), sum(1 for v in src_neg.values() if v == 1))
    blamed_docs = sum(1 for key in hidden if scale.row(*by_doc[key], [])["blamed"])
    doc_row = {
        "source_id": document_redaction(len(hidden)),
        "doc_id": "",
        **scale.row(*hdoc, []),
        "blamed": blamed_docs > 0,
        "examples": [],
        "redacted": True,
        "documents": len(hidden),
        "blamed_documents": blamed_docs,
    }
    blamed_sources = sum(1 for s in hidden_sources if scale.row(*by_source[s], [])["blamed"])
    source_row = {
        "source_id": document_redaction(len(hidden_sources), "source"),
        **scale.row(*hsrc, []),
        "blamed": blamed_sources > 0,
        "examples": [],
        "redacted": True,
        "sources": len(hidden_sources),
        "blamed_sources": blamed_sources,
    }
    return doc_row, source_row


def _blame(
    rt: TelemetryRuntime,
    start: datetime,
    end: datetime,
    min_support: int,
    reader: Reader | None = None,
    unreadable: set[DocRef] | None = None,
    inline_hidden: int = INLINE_HIDDEN,
) -> dict[str, Any]:
    """The source blame for ``[start, end)``. For a ``reader``, ``unreadable`` are the documents cited in the
    period that they may not read (:meth:`charter.access.Reader.unreadable` of every cited document; the
    documents cited by rated requests are among them). The redacted rows' distinct requests are counted by
    the database for up to ``inline_hidden`` such documents, from the returned citations above (the same
    numbers; the oracle test compares both)."""
    hidden_refs = unreadable or set()
    inline = reader is not None and 0 < len(hidden_refs) <= inline_hidden
    rows = _blame_rows(
        rt,
        start,
        end,
        {r.source_id for r in hidden_refs} if reader is not None else set(),
        set(hidden_refs) if inline else None,
    )
    by_doc = {(s, d): (n, k) for s, d, n, k, _ in rows["doc"]}
    by_source = {s: (n, k) for s, _, n, k, _ in rows["src"]}
    rated, negative = (rows["all"][0][2], rows["all"][0][3]) if rows["all"] else (0, 0)
    doc_examples: dict[Any, list[str]] = defaultdict(list)
    for s, d, _, _, rid in rows["xdoc"]:
        doc_examples[(s, d)].append(str(rid))
    source_examples: dict[Any, list[str]] = defaultdict(list)
    for s, _, _, _, rid in rows["xsrc"]:
        source_examples[s].append(str(rid))
    base = _rate(negative, rated) or 0.0
    scale = _BlameScale(base, min_support)

    # who reads: a document row only for a reader who may read the document now (charter.access); every
    # other row goes into one redacted row per table, whose counts are those of the requests behind it
    hidden = {(r.source_id, r.doc_id) for r in hidden_refs} & set(by_doc) if reader is not None else set()
    hidden_sources = {s for s, _ in hidden}
    documents = scale.rank(
        {k: v for k, v in by_doc.items() if k not in hidden}, doc_examples, ("source_id", "doc_id")
    )
    sources = scale.rank(
        {k: v for k, v in by_source.items() if k not in hidden_sources}, source_examples, ("source_id",)
    )
    if hidden:
        doc_row, source_row = _redacted_blame_rows(scale, rows, inline, hidden, by_doc, by_source)
        documents.append(doc_row)
        sources.append(source_row)
    return {
        "base_negative_rate": round(base, 4),
        "rated_requests_with_citations": rated,
        "min_support": min_support,
        "method": "Wilson 95% lower bound > base rate and n >= min_support",
        "documents": documents,
        "sources": sources,
        "redacted_documents": len(hidden),
    }


def _failures(errors: list[tuple[str, Any]], top: int = 10) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for rid, errs in errors:
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


def _by_prompt_version(cells: dict[Any, Agg]) -> list[dict[str, Any]]:
    """Per prompt version (``-`` for none), from the period's cells."""
    out = []
    for pv, a in sorted(rollup(cells, lambda k: k[1]).items()):
        s = _agg_summary_of(a, 0)
        out.append(
            {
                "prompt_version": pv,
                "requests": s["requests"],
                "escalation_rate": s["escalation_rate"],
                "feedback_score": s["feedback_score"],
                "acceptance_rate": s["acceptance_rate"],
                "groundedness_mean": s["groundedness_mean"],
                "cost_per_request_usd": s["cost_per_request_usd"],
            }
        )
    return out


def _by_count(counts: Counter[str]) -> dict[str, int]:
    """Largest count first, ties by name."""
    return {k: v for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if v}


def _month_spend(rt: TelemetryRuntime, now: datetime, memo: EdgeMemo | None = None) -> float:
    from charter.telemetry._trends import sum_cost

    return sum_cost(rt, now.replace(day=1, hour=0, minute=0, second=0, microsecond=0), now, memo)


def _diff(cur: float | None, prev: float | None) -> float | None:
    return None if cur is None or prev is None else cur - prev


def _days_in_month(now: datetime) -> int:
    nxt = (now.replace(day=28) + timedelta(days=4)).replace(day=1)
    return (nxt - timedelta(days=1)).day


def _usage_section(
    cells: dict[Any, Agg],
    n: int,
    s_cur: dict[str, float | None],
    cur: dict[str, Any],
    start: datetime,
    end: datetime,
) -> dict[str, Any]:
    by_day = rollup(cells, lambda k: k[0])
    day_list = [
        (start.date() + timedelta(days=i)).isoformat() for i in range((end.date() - start.date()).days + 1)
    ]
    return {
        "requests": n,
        "active_users": s_cur["active_users"],
        "by_status": dict(sorted(cur["by_status"].items())),
        "by_workflow": dict(sorted(cur["by_workflow"].items())),
        "by_day": [{"day": d, "requests": by_day[d].requests if d in by_day else 0} for d in day_list],
    }


def _quality_section(
    cells: dict[Any, Agg], agg_cur: Agg, s_cur: dict[str, float | None], cur: dict[str, Any]
) -> dict[str, Any]:
    outcomes = agg_cur.reviews
    hist = cur["g_hist"]
    return {
        "review": {
            "unchanged": outcomes["unchanged"],
            "edited": outcomes["edited"],
            "rejected": outcomes["rejected"],
            "decided": agg_cur.decided,
            "acceptance_rate": s_cur["acceptance_rate"],
            "unchanged_rate": _rate(outcomes["unchanged"], agg_cur.decided),
        },
        "feedback": {
            "up": agg_cur.fb_up,
            "down": agg_cur.fb_down,
            "score": s_cur["feedback_score"],
            "down_reasons": _by_count(agg_cur.down_reasons),
        },
        "escalation_rate": s_cur["escalation_rate"],
        "escalations_by_reason": _by_count(agg_cur.escalations),
        "groundedness": {
            "count": sum(hist),
            "mean": s_cur["groundedness_mean"],
            "p10": cur["g_pct"].get(0.1),
            "p50": cur["g_pct"].get(0.5),
            "p90": cur["g_pct"].get(0.9),
            "histogram": [
                {"bin": f"{i / GROUNDEDNESS_BINS:.1f}-{(i + 1) / GROUNDEDNESS_BINS:.1f}", "count": c}
                for i, c in enumerate(hist)
            ],
        },
        "by_prompt_version": _by_prompt_version(cells),
    }


def _cost_drivers(cells: dict[Any, Agg], total_cost: float) -> list[dict[str, Any]]:
    """The five (model, prompt version) pairs that cost most, '-' for none."""
    drivers: dict[tuple[str, str], Agg] = defaultdict(Agg)
    for key, a in cells.items():
        drivers[(key[2], key[1])].add(a)
    return sorted(
        (
            {
                "model": m,
                "prompt_version": pv,
                "requests": a.requests,
                "cost_usd": round(a.cost_usd, 6),
                "share": _rate(a.cost_usd, total_cost),
            }
            for (m, pv), a in sorted(drivers.items())
        ),
        key=lambda d: -float(d["cost_usd"] or 0.0),
    )[:5]


def _cost_section(
    rt: TelemetryRuntime,
    cells: dict[Any, Agg],
    total_cost: float,
    s_cur: dict[str, float | None],
    cur: dict[str, Any],
    end: datetime,
    since: timedelta,
    memo: EdgeMemo,
) -> dict[str, Any]:
    budgets = rt.spec.budgets
    month_spend = _month_spend(rt, end, memo)
    month_days = _days_in_month(end)
    elapsed_days = max(
        (end - end.replace(day=1, hour=0, minute=0, second=0, microsecond=0)).total_seconds() / 86400, 1 / 24
    )
    projection = month_spend / elapsed_days * month_days
    period_projection = (
        (total_cost / since.total_seconds()) * month_days * 86400 if since.total_seconds() else 0.0
    )
    return {
        "total_usd": round(total_cost, 6),
        "per_request_usd": s_cur["cost_per_request_usd"],
        "per_request_p95_usd": cur["cost"]["p95"],
        "per_request_max_usd": cur["cost"]["max"],
        "per_task_budget_usd": budgets.per_task_usd,
        "over_task_budget": cur["cost"]["over"],
        "month_to_date_usd": round(month_spend, 6),
        "monthly_budget_usd": budgets.monthly_usd,
        "monthly_projection_usd": round(projection, 6),
        "monthly_projection_from_period_usd": round(period_projection, 6),
        "projection_vs_budget": _rate(max(projection, period_projection), budgets.monthly_usd),
        "expected_monthly_requests": budgets.expected_monthly_requests,
        "top_drivers": _cost_drivers(cells, total_cost),
    }


def _trends_section(
    s_cur: dict[str, float | None], s_prev: dict[str, float | None], compared: dict[str, Any]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    trends: dict[str, dict[str, Any]] = {
        k: {"current": s_cur[k], "previous": s_prev[k], "change": _diff(s_cur[k], s_prev[k])} for k in s_cur
    }
    for k, v in compared.items():
        if k in trends:
            trends[k]["comparison"] = v
    return trends, compared


def _for_reader(
    doc: dict[str, Any], reader: Reader, principal: Principal | None, unreadable: set[DocRef]
) -> dict[str, Any]:
    """``doc`` as ``reader`` may see it: flagged documents they may not read are counted, never named, and
    every string naming an unreadable document is replaced by the marker (the source blame is already
    redacted)."""
    hidden = sorted(unreadable, key=lambda r: r.key)
    doc["reader"] = principal.id if principal is not None else None
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


def build_report(
    rt: TelemetryRuntime,
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
    from charter.telemetry._trends import _total, build_trends, compare_periods, load_cells, period_aggregates

    end = now or utcnow()
    window = max(since, trend_window)
    start = end - since
    prev_start = start - since
    # the windows all end at `end`: today's partial day is aggregated from the raw rows once for all of them
    memo: EdgeMemo = {}
    cells = load_cells(rt, start, end, memo)
    agg_cur, agg_prev = _total(cells), period_aggregates(rt, prev_start, start, memo)
    s_cur, s_prev = _agg_summary(rt, agg_cur, start, end), _agg_summary(rt, agg_prev, prev_start, start)
    reader = Reader(rt, principal) if principal is not None else None
    cur = _period(rt, start, end, cited_docs=reader is not None)
    # the documents cited in the period that the reader may not read (charter.access decides)
    unreadable = set(reader.unreadable(cur["cited_docs"])) if reader is not None else set()

    usage = _usage_section(cells, agg_cur.requests, s_cur, cur, start, end)
    quality = _quality_section(cells, agg_cur, s_cur, cur)
    cost = _cost_section(rt, cells, agg_cur.cost_usd, s_cur, cur, end, since, memo)
    trends, compared = _trends_section(s_cur, s_prev, compare_periods(agg_cur, agg_prev))
    blame = _blame(rt, start, end, min_support, reader, unreadable)
    doc: dict[str, Any] = {
        "workflow": rt.spec.workflow.id,
        "generated_at": end.isoformat(),
        "period": {"start": start.isoformat(), "end": end.isoformat(), "days": since.total_seconds() / 86400},
        "previous_period": {"start": prev_start.isoformat(), "end": start.isoformat()},
        "usage": usage,
        "quality": quality,
        "cost": cost,
        "failures": _failures(cur["errors"]),
        "source_blame": blame,
        "trends": trends,
        "rate_comparisons": compared,
        "time_series": build_trends(rt, since=window, now=end, memo=memo),
        "production_failures": build_failures(rt, since=window, now=end, embed=embed),
        "screened_documents": _screened(rt),
    }
    if reader is None:
        return doc
    return _for_reader(doc, reader, principal, unreadable)


def _screened(rt: TelemetryRuntime) -> list[dict[str, Any]]:
    """Documents instruction screening flagged at sync (``charter.screening``): source, id, state, owner and
    reasons — never the sentences (those are for the source owner, ``charter sources show``)."""
    from charter.screening import screened_documents

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
