"""The report's period sections, aggregated by the database, equal a plain Python computation over the raw
rows (the oracle below), on SQLite and PostgreSQL, for generated histories written through the production
paths (trace store, review queue, feedback).

The oracle reads the window's rows with plain selects and computes, in Python: usage by status, workflow and
day; review outcomes, feedback with thumbs-down reasons, escalations by reason; groundedness count, mean,
nearest-rank p10/p50/p90 and the 10-bin histogram; per prompt version; cost total, nearest-rank p95, max,
requests over the per-task budget and the top drivers; error signatures; the source blame (rated requests per
cited document and source, negatives, Wilson bounds, examples). For a reader, the documents they may not read
are asked of :class:`charter.access.Reader` (the one rule) and collapse into the redacted rows, whose counts
are the distinct requests behind them. Ties, duplicate citations of one document, documents with the same id
in two sources, empty windows and values on the histogram's bin edges are all generated.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from _monitoring_helpers import write_history
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select
from tests.access._world import LEO, add_user, index_documents
from tests.telemetry.test_trends import fast_store, make_trace

from charter.access import DocRef, Reader, document_redaction, scrub_documents
from charter.runtime import Runtime
from charter.store.tables import feedback, monitor_rollup, trace_sources, traces
from charter.telemetry import build_report, error_signature
from charter.telemetry._report import _blame

NOW = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)
SINCE = timedelta(days=7)
#: (source, document): readable by some readers and not others (ACLS), and one id in two sources
DOCS = [
    ("help-center", "refunds.md"),
    ("help-center", "invoices.md"),
    ("help-center", "shared.md"),
    ("playbook", "shared.md"),
    ("playbook", "escalations.md"),
    ("finance-policies", "limits.md"),
]
GROUNDEDNESS = [0.0, 0.1, 0.3, 0.7, 0.9999, 1.0]  # on the bin edges (0.3 * 10 = 3.0000000000000004)
COSTS = [0.0, 0.001, 0.002, 0.05, 0.5]  # ties, and more than the example's per-task budget

trace_op = st.fixed_dictionaries(
    {
        "minutes": st.integers(0, 60 * 24 * 16),
        "prompt_version": st.sampled_from([None, "v1", "v2 (canary)"]),
        "model": st.sampled_from([None, "extractive", "local-smollm2"]),
        "status": st.sampled_from(["answered", "needs_human", "refused", "error"]),
        "escalation": st.sampled_from([None, "no_sources", "out_of_scope", "sensitive topic; (x)"]),
        "cost": st.one_of(st.sampled_from(COSTS), st.floats(0, 1, allow_nan=False)),
        "groundedness": st.one_of(st.none(), st.sampled_from(GROUNDEDNESS), st.floats(0, 1, allow_nan=False)),
        "cited": st.lists(st.sampled_from(DOCS), max_size=3),  # duplicates: one document cited twice
        "uncited": st.lists(st.sampled_from(DOCS), max_size=2),  # retrieved, not cited
        "error": st.one_of(
            st.none(),
            st.tuples(
                st.sampled_from(["ProviderError", "Timeout"]),
                st.sampled_from(["generate", "retrieve"]),
                st.one_of(
                    st.text(
                        alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                        max_size=30,
                    ),
                    # naming a document: hidden from a reader who may not read it, if the period cited it
                    st.sampled_from([f"could not read {s}/{d}" for s, d in DOCS]),
                ),
            ),
        ),
        "review": st.sampled_from([None, "approve", "edit", "reject"]),
        "ratings": st.lists(st.sampled_from(["up", "down"]), max_size=3),
        "reasons": st.lists(st.sampled_from(["outdated", "inaccurate", "wrong_source"]), max_size=2),
    }
)
history = st.fixed_dictionaries(
    {
        "traces": st.lists(trace_op, max_size=14),
        "end": st.sampled_from([NOW, NOW.replace(hour=0, minute=0)]),
        "reader": st.sampled_from([None, "ben", "farid"]),
        "min_support": st.integers(1, 3),
    }
)


#: What the index says who may read (as a sync stores it): each reader may read some documents and not
#: others, within one source too (``help-center``: ben and farid read ``refunds.md``, only farid
#: ``shared.md``); ``finance-policies/limits.md`` is not indexed (nobody may read it).
ACLS = {
    ("help-center", "refunds.md"): frozenset({"public"}),
    ("help-center", "invoices.md"): frozenset({"group:support"}),
    ("help-center", "shared.md"): frozenset({"group:finance"}),
    ("playbook", "shared.md"): frozenset({"group:support"}),
    ("playbook", "escalations.md"): frozenset({"user:lena"}),
}


@pytest.fixture
def rt(db_url: str, project: Path) -> Iterator[Runtime]:
    add_user(project, LEO)  # the second lead who approves edits (four-eyes)
    runtime = Runtime.open(project, database_url=db_url)
    index_documents(runtime, ACLS)
    for who, readable in (("ben", 3), ("farid", 2)):  # the readers see some documents, not all
        hidden = Reader(runtime, runtime.charter.principal(who)).unreadable(DocRef(s, d) for s, d in DOCS)
        assert len(DOCS) - len(list(hidden)) == readable, who
    yield runtime
    runtime.close()


def _wipe(rt: Runtime) -> None:
    from charter.store.tables import review_items

    with rt.store.begin() as conn:
        for table in (feedback, review_items, trace_sources, traces, monitor_rollup):
            conn.execute(delete(table))


# ------------------------------------------------------------------------------------------- the oracle
def _nearest(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s), max(1, math.ceil(q * len(s)))) - 1]


def _wilson(k: int, n: int) -> tuple[float, float]:
    if n == 0:
        return 0.0, 1.0
    z = 1.959963984540054
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, mid - half), min(1.0, mid + half)


def _oracle(rt: Runtime, start: datetime, end: datetime, min_support: int, who: str | None) -> dict[str, Any]:
    from charter.store.tables import review_items as ri

    t = traces.c
    with rt.store.connect() as conn:
        rows = [
            dict(r._mapping)
            for r in conn.execute(
                select(
                    t.request_id,
                    t.started_at,
                    t.principal_id,
                    t.status,
                    t.workflow,
                    t.model,
                    t.prompt_version,
                    t.cost_usd,
                    t.escalation,
                    t.groundedness,
                    t.error_type,
                    t.body,
                ).where((t.started_at >= start) & (t.started_at < end))
            )
        ]
        ids = {r["request_id"] for r in rows}
        fbs = [r for r in conn.execute(select(feedback.c.request_id, feedback.c.rating, feedback.c.reasons))]
        fbs = [r for r in fbs if r.request_id in ids]
        revs = [
            r
            for r in conn.execute(select(ri.c.request_id, ri.c.decision))
            if r.request_id in ids and r.decision in ("approved", "edited", "rejected")
        ]
        cited = [
            r
            for r in conn.execute(
                select(trace_sources.c.request_id, trace_sources.c.source_id, trace_sources.c.doc_id).where(
                    trace_sources.c.cited.is_(True)
                )
            )
        ]
        cited = [r for r in cited if r.request_id in ids]
    n = len(rows)
    g = [r["groundedness"] for r in rows if r["groundedness"] is not None]
    hist = [0] * 10
    for v in g:
        hist[min(9, max(0, int(v * 10)))] += 1
    outcomes = Counter(
        {"approved": "unchanged", "edited": "edited", "rejected": "rejected"}[r.decision] for r in revs
    )
    up = sum(1 for f in fbs if f.rating > 0)
    down = len(fbs) - up

    def acceptance(rs: list[Any]) -> float | None:
        c = Counter(r.decision for r in rs)
        return (c["approved"] + c["edited"]) / len(rs) if rs else None

    by_pv = []
    for pv in sorted({r["prompt_version"] or "-" for r in rows}):
        sub = [r for r in rows if (r["prompt_version"] or "-") == pv]
        sids = {r["request_id"] for r in sub}
        sfb = [f for f in fbs if f.request_id in sids]
        sg = [r["groundedness"] for r in sub if r["groundedness"] is not None]
        su = sum(1 for f in sfb if f.rating > 0)
        by_pv.append(
            {
                "prompt_version": pv,
                "requests": len(sub),
                "escalation_rate": sum(1 for r in sub if r["escalation"]) / len(sub),
                "feedback_score": (su - (len(sfb) - su)) / len(sfb) if sfb else None,
                "acceptance_rate": acceptance([d for d in revs if d.request_id in sids]),
                "groundedness_mean": sum(sg) / len(sg) if sg else None,
                "cost_per_request_usd": sum(r["cost_usd"] for r in sub) / len(sub),
            }
        )
    costs = [r["cost_usd"] or 0.0 for r in rows]
    total = sum(costs)
    drivers: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in rows:
        drivers[(r["model"] or "-", r["prompt_version"] or "-")].append(r["cost_usd"])
    top = sorted(
        (
            {
                "model": m,
                "prompt_version": pv,
                "requests": len(v),
                "cost_usd": round(sum(v), 6),
                "share": sum(v) / total if total else None,
            }
            for (m, pv), v in sorted(drivers.items())
        ),
        key=lambda d: -d["cost_usd"],
    )[:5]
    day_count = Counter(r["started_at"].date().isoformat() for r in rows)
    days = [
        (start.date() + timedelta(days=i)).isoformat() for i in range((end.date() - start.date()).days + 1)
    ]
    # failures: the first error list of every failing request, grouped by signature
    sigs: dict[str, set[str]] = defaultdict(set)
    meta: dict[str, tuple[str, str]] = {}
    for r in rows:
        if r["error_type"] is None:
            continue
        for e in (r["body"] or {}).get("errors") or []:
            sig = error_signature(e.get("type"), e.get("stage"), e.get("message"))
            sigs[sig].add(r["request_id"])
            meta[sig] = (e.get("type") or "Error", e.get("stage") or "-")
    failures = sorted(
        (
            {
                "signature": s,
                "category": meta[s][0],
                "stage": meta[s][1],
                "count": len(v),
                "examples": sorted(v)[:3],
            }
            for s, v in sigs.items()
        ),
        key=lambda f: (-f["count"], f["signature"]),
    )[:10]
    return {
        "usage": {
            "requests": n,
            "active_users": len({r["principal_id"] for r in rows}),
            "by_status": dict(sorted(Counter(r["status"] for r in rows).items())),
            "by_workflow": dict(sorted(Counter(r["workflow"] for r in rows).items())),
            "by_day": [{"day": d, "requests": day_count.get(d, 0)} for d in days],
        },
        "quality": {
            "review": {
                "unchanged": outcomes["unchanged"],
                "edited": outcomes["edited"],
                "rejected": outcomes["rejected"],
                "decided": len(revs),
                "acceptance_rate": acceptance(revs),
            },
            "feedback": {
                "up": up,
                "down": down,
                "down_reasons": dict(Counter(x for f in fbs if f.rating < 0 for x in f.reasons)),
            },
            "escalations_by_reason": dict(Counter(r["escalation"] for r in rows if r["escalation"])),
            "groundedness": {
                "count": len(g),
                "mean": sum(g) / len(g) if g else None,
                "p10": _nearest(g, 0.1),
                "p50": _nearest(g, 0.5),
                "p90": _nearest(g, 0.9),
                "histogram": [c for c in hist],
            },
            "by_prompt_version": by_pv,
        },
        "cost": {
            "total_usd": round(total, 6),
            "per_request_usd": total / n if n else None,
            "per_request_p95_usd": _nearest(costs, 0.95),
            "per_request_max_usd": max(costs) if costs else None,
            "over_task_budget": sum(1 for c in costs if c > rt.spec.budgets.per_task_usd),
            "top_drivers": top,
        },
        "failures": failures,
        "source_blame": _oracle_blame(rt, fbs, revs, cited, min_support, who),
        "cited": {DocRef(c.source_id, c.doc_id) for c in cited},
    }


def _oracle_blame(
    rt: Runtime, fbs: list[Any], revs: list[Any], cited: list[Any], min_support: int, who: str | None
) -> dict[str, Any]:
    score: dict[str, int] = defaultdict(int)
    for f in fbs:
        score[f.request_id] += 1 if f.rating > 0 else -1
    neg = {rid: s < 0 for rid, s in score.items()}
    for d in revs:
        neg[d.request_id] = neg.get(d.request_id, False) or d.decision == "rejected"
    docs: dict[tuple[str, str], set[str]] = defaultdict(set)
    srcs: dict[str, set[str]] = defaultdict(set)
    for c in cited:
        if c.request_id in neg:
            docs[(c.source_id, c.doc_id)].add(c.request_id)
            srcs[c.source_id].add(c.request_id)
    rated = set().union(*docs.values()) if docs else set()
    base = sum(1 for r in rated if neg[r]) / len(rated) if rated else 0.0

    def row(reqs: set[str], examples: bool = True) -> dict[str, Any]:
        k = sum(1 for r in reqs if neg[r])
        lo, hi = _wilson(k, len(reqs))
        return {
            "cited_in_rated": len(reqs),
            "negative": k,
            "negative_rate": k / len(reqs) if reqs else 0.0,
            "wilson_lower": round(lo, 4),
            "wilson_upper": round(hi, 4),
            "lift": round((k / len(reqs)) / base, 3) if base and reqs else None,
            "blamed": len(reqs) >= min_support and lo > base,
            "examples": sorted(r for r in reqs if neg[r])[:3] if examples else [],
        }

    hidden: set[tuple[str, str]] = set()
    if who is not None:
        reader = Reader(rt, rt.charter.principal(who))
        hidden = {(r.source_id, r.doc_id) for r in reader.unreadable(DocRef(s, d) for s, d in docs)}
    hidden_sources = {s for s, _ in hidden}

    def ranked(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return sorted(
            rows,
            key=lambda d: (
                -d["wilson_lower"],
                -d["negative"],
                str(d.get("doc_id", d["source_id"])),
                d["source_id"],
            ),
        )

    documents = ranked(
        [{"source_id": s, "doc_id": d, **row(v)} for (s, d), v in docs.items() if (s, d) not in hidden]
    )
    sources = ranked([{"source_id": s, **row(v)} for s, v in srcs.items() if s not in hidden_sources])
    if hidden:
        blamed = sum(1 for k in hidden if row(docs[k])["blamed"])
        documents.append(
            {
                "source_id": document_redaction(len(hidden)),
                "doc_id": "",
                **row(set().union(*(docs[k] for k in hidden)), examples=False),
                "blamed": blamed > 0,
                "redacted": True,
                "documents": len(hidden),
                "blamed_documents": blamed,
            }
        )
        blamed = sum(1 for s in hidden_sources if row(srcs[s])["blamed"])
        sources.append(
            {
                "source_id": document_redaction(len(hidden_sources), "source"),
                **row(set().union(*(srcs[s] for s in hidden_sources)), examples=False),
                "blamed": blamed > 0,
                "redacted": True,
                "sources": len(hidden_sources),
                "blamed_sources": blamed,
            }
        )
    return {
        "base_negative_rate": round(base, 4),
        "rated_requests_with_citations": len(rated),
        "documents": documents,
        "sources": sources,
        "redacted_documents": len(hidden),
    }


# ------------------------------------------------------------------------------------------- comparing
def _close(a: Any, b: Any, path: str = "") -> None:
    """``b`` (the oracle) within ``a`` (the report): keys of ``b`` only; floats to 1e-9."""
    if isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None, (path, a, b)
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), (path, a, b)
    elif isinstance(b, dict):
        assert isinstance(a, dict), (path, a, b)
        for k in b:
            assert k in a, (path, k)
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(b, list):
        assert isinstance(a, list) and len(a) == len(b), (path, a, b)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{path}[{i}]")
    else:
        assert a == b, (path, a, b)


def _check(rt: Runtime, h: dict[str, Any]) -> None:
    end = h["end"]
    who = h["reader"]
    principal = rt.charter.principal(who) if who is not None else None
    report = build_report(rt, since=SINCE, now=end, min_support=h["min_support"], principal=principal)
    want = _oracle(rt, end - SINCE, end, h["min_support"], who)
    cited = want.pop("cited")
    hist = want["quality"]["groundedness"].pop("histogram")
    assert [b["count"] for b in report["quality"]["groundedness"]["histogram"]] == hist
    blame = want.pop("source_blame")
    _close(report["source_blame"], blame, "source_blame")
    if principal is not None:  # the other sections name no hidden document (the core's scrubbing)
        hidden = set(Reader(rt, principal).unreadable(cited))
        # the redacted rows counted from the returned citations (above INLINE_HIDDEN documents) are the same
        rows_path = _blame(
            rt, end - SINCE, end, h["min_support"], Reader(rt, principal), hidden, inline_hidden=0
        )
        _close(rows_path, blame, "source_blame (row by row)")
        want = {k: scrub_documents(v, hidden) for k, v in want.items()}
    for section, expected in want.items():
        _close(report[section], expected, section)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=history)
def test_report_sections_equal_raw_python_computation(rt: Runtime, h: dict[str, Any]) -> None:
    _wipe(rt)
    write_history(rt, h["traces"], NOW)
    _check(rt, h)


def test_report_sections_on_a_fixed_history(rt: Runtime) -> None:
    """A history that exercises every branch at once: a document cited twice by one request, the same
    document id in two sources, a rejected request with thumbs-up, ties in cost and groundedness."""
    ops = []
    for i in range(12):
        ops.append(
            {
                "minutes": 60 * i + 5,
                "prompt_version": ["v1", None, "v2 (canary)"][i % 3],
                "model": ["extractive", None][i % 2],
                "status": ["answered", "needs_human", "error", "refused"][i % 4],
                "escalation": [None, "no_sources"][i % 2],
                "cost": COSTS[i % len(COSTS)],
                "groundedness": GROUNDEDNESS[i % len(GROUNDEDNESS)] if i % 5 else None,
                "cited": [DOCS[i % len(DOCS)], DOCS[i % len(DOCS)], DOCS[(i + 3) % len(DOCS)]],
                "uncited": [DOCS[(i + 1) % len(DOCS)]],
                "error": ("ProviderError", "generate", f"timed out after {i}s on 'x{i}'")
                if i % 4 == 2
                else None,
                "review": [None, "approve", "reject", "edit"][i % 4],
                "ratings": [["up"], ["down"], ["up", "down", "down"], []][i % 4],
                "reasons": ["outdated"] if i % 2 else [],
            }
        )
    write_history(rt, ops, NOW)
    for who in (None, "ben", "farid"):
        _check(rt, {"end": NOW, "reader": who, "min_support": 1})


# ------------------------------------------------------------------------------------------- cited documents
edge_op = st.fixed_dictionaries(
    {
        # on, just inside and just outside both edges of the period, and anywhere
        "at": st.one_of(
            st.sampled_from(
                [
                    timedelta(0),
                    timedelta(microseconds=1),
                    -timedelta(microseconds=1),
                    SINCE,
                    SINCE - timedelta(microseconds=1),
                    SINCE + timedelta(microseconds=1),
                ]
            ),
            st.integers(-60 * 24, 60 * 24 * 9).map(lambda m: timedelta(minutes=m)),
        ),
        "cited": st.lists(st.sampled_from(DOCS), max_size=3),
        "uncited": st.lists(st.sampled_from(DOCS), max_size=2),
    }
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(edge_op, max_size=12), who=st.sampled_from(["ben", "farid"]))
def test_cited_documents_equal_the_join_through_the_periods_traces(
    rt: Runtime, ops: list[dict[str, Any]], who: str
) -> None:
    """The documents a period's answers cited, read from ``trace_sources`` alone (0021_report's index),
    are those found through the period's traces (the oracle: the join the report used before), for
    citations on and beside both edges; and what the reader may not read among them is what the report
    hides."""
    from charter.telemetry._report import cited_documents

    _wipe(rt)
    end = NOW
    ts = fast_store(rt)
    for i, op in enumerate(ops):
        t = make_trace(rt, end - op["at"], prompt_version="v1")
        retrieved = [(s, d, True) for s, d in op["cited"]] + [(s, d, False) for s, d in op["uncited"]]
        t.retrieved = [
            {"chunk_id": f"{s}:{d}#{k}", "source": s, "doc_id": d, "rank": k, "score": 0.5}
            for k, (s, d, _) in enumerate(retrieved, 1)
        ]
        t.citations = [
            {"id": f"S{k}", "chunk_id": f"{s}:{d}#{k}", "source_id": s, "doc_id": d}
            for k, (s, d, cited) in enumerate(retrieved, 1)
            if cited
        ]
        t.request_id = f"req_{i:04d}"
        ts.write(t)
    start = end - SINCE
    tr, so = traces.c, trace_sources.c
    with rt.store.connect() as conn:
        got = cited_documents(conn, start, end)
        oracle = {
            DocRef(s, d)
            for s, d in conn.execute(
                select(so.source_id, so.doc_id)
                .select_from(traces.join(trace_sources, so.request_id == tr.request_id))
                .where((tr.started_at >= start) & (tr.started_at < end) & so.cited.is_(True))
            )
        }
    assert len(got) == len(set(got)) and set(got) == oracle
    want_hidden = set(Reader(rt, rt.charter.principal(who)).unreadable(oracle))
    report = build_report(rt, since=SINCE, now=end, principal=rt.charter.principal(who))
    hidden_keys = {r.key for r in want_hidden}
    assert report["source_blame"]["redacted_documents"] <= len(want_hidden)
    text = repr({k: v for k, v in report.items() if k != "source_blame"})
    assert not any(k in text for k in hidden_keys)


def test_cited_documents_is_a_covering_range_scan(tmp_path: Path) -> None:
    """On SQLite the period's cited documents are read from ``ix_trace_sources_cited`` alone (0021_report),
    and the source blame still finds its citations by primary-key probes from the rated requests (the
    period's cited rows outnumber them)."""
    from sqlalchemy import text

    from charter.store import open_store
    from charter.telemetry._report import _rated_cited, cited_documents

    store = open_store(f"sqlite:///{tmp_path / 'plan.db'}")
    start, end = NOW - SINCE, NOW
    captured: list[str] = []

    class _Capture:
        def __init__(self, conn: Any) -> None:
            self.conn = conn

        def execute(self, q: Any) -> Any:
            captured.append(str(q.compile(store.engine, compile_kwargs={"literal_binds": True})))
            return self.conn.execute(q)

    with store.connect() as conn:
        assert cited_documents(_Capture(conn), start, end) == []
        plan = " ".join(r[3] for r in conn.execute(text("EXPLAIN QUERY PLAN " + captured[0])))
    assert "COVERING INDEX ix_trace_sources_cited" in plan, plan
    assert "traces" not in plan.replace("trace_sources", ""), plan

    class _Rt:  # what _rated_cited reads of a runtime
        def __init__(self) -> None:
            self.store = store

    rc = _rated_cited(_Rt(), start, end)  # type: ignore[arg-type]
    sql = str(select(rc).compile(store.engine, compile_kwargs={"literal_binds": True}))
    with store.connect() as conn:
        plan = " | ".join(r[3] for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
    assert "ix_trace_sources_cited" not in plan, plan
    store.dispose()
