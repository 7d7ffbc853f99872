"""How long the monitoring aggregates take on a large history: 1M traces over 90 days (SQLite by default).

Seeds a copy of the billing example's database with N traces (bulk inserts, not through the pipeline —
the database's triggers fill the daily rollup ``monitor_rollup`` exactly as on a production write),
10% of them reviewed, 3% rated, with three prompt versions, two models and four index versions over time,
then times, on the injected clock ``now`` (median of ``--repeat`` runs):

* ``build_trends`` over 28 days and over 90 days (what the report and the console chart);
* ``build_failures`` over 28 days (categories + question clusters of the newest 1000 failing requests);
* the alert conditions (``evaluate_alerts`` without the audit verification, which scales with the audit log);
* the whole ``build_report`` (7-day period + 28-day trends), unfiltered and as a reader (``ben``, who may
  not read every cited document: the report is scrubbed for him).

Each timing is reported as the median wall-clock seconds (``…_s``) and the median CPU seconds of the
process (``…_cpu_s``), with the load average before and after (the machine may be shared). Opening a kept
project migrates it first (0020_report builds an index on ``trace_sources``: seconds at 3M rows).

Every request cites two of 60 documents from three sources (``trace_sources``), so the report's source
blame has real work to do. ``--keep DIR`` keeps the seeded project (SQLite file included) in ``DIR`` and
a later run with the same ``--keep DIR`` and ``--traces`` reuses it instead of seeding again.

Usage: ``python bench/report_bench.py [--traces 1000000] [--repeat 3] [--db-url URL] [--keep DIR]``
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))  # this tree, not an installed copy

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "billing-support"
REASONS = ["no_sources", "out_of_scope", "low_groundedness", "sensitive_topic"]
REJECT = ["inaccurate", "unsupported_by_sources", "incomplete", "wrong_tone"]


def seed(rt: object, n: int, now: datetime) -> dict[str, int]:
    from charter.store.tables import feedback, review_items, trace_sources, traces

    rng = random.Random(1)
    store = rt.store  # type: ignore[attr-defined]
    wf = rt.spec.workflow.id  # type: ignore[attr-defined]
    start = now - timedelta(days=90)
    batch, reviews, fbs, cites = [], [], [], []
    counts = {"traces": 0, "reviews": 0, "feedback": 0, "trace_sources": 0}
    docs = [(f"src{j % 3}", f"doc-{j:02d}.md") for j in range(60)]

    def flush() -> None:
        with store.begin() as conn:
            if batch:
                conn.execute(traces.insert(), batch)
            if reviews:
                conn.execute(review_items.insert(), reviews)
            if fbs:
                conn.execute(feedback.insert(), fbs)
            if cites:
                conn.execute(trace_sources.insert(), cites)
        counts["traces"] += len(batch)
        counts["reviews"] += len(reviews)
        counts["feedback"] += len(fbs)
        batch.clear()
        reviews.clear()
        fbs.clear()
        cites.clear()

    cols = list(traces.c.keys())

    def fast_flush() -> None:
        """Traces through the driver directly on SQLite (the ORM's per-row processing would dominate)."""
        if store.dialect != "sqlite":
            flush()
            return
        rows = [
            tuple(
                (
                    r[c].strftime("%Y-%m-%d %H:%M:%S.%f")
                    if c == "started_at"
                    else json.dumps(r[c])
                    if c == "body"
                    else r[c]
                )
                for c in cols
            )
            for r in batch
        ]
        if rows:
            with store.begin() as conn:
                conn.exec_driver_sql(
                    f"INSERT INTO traces ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows
                )
            srows = [
                (
                    c["request_id"],
                    c["rank"],
                    c["started_at"].strftime("%Y-%m-%d %H:%M:%S.%f"),
                    c["source_id"],
                    c["doc_id"],
                    c["chunk_id"],
                    c["score"],
                    1 if c["cited"] else 0,
                )
                for c in cites
            ]
            if srows:
                with store.begin() as conn:
                    conn.exec_driver_sql(
                        "INSERT INTO trace_sources (request_id, rank, started_at, source_id, doc_id, chunk_id,"
                        " score, cited) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        srows,
                    )
        counts["traces"] += len(batch)
        counts["trace_sources"] += len(cites)
        batch.clear()
        cites.clear()
        flush()

    for i in range(n):
        at = start + timedelta(seconds=90 * 86400 * i / n)
        day = (at - start).days
        pv = "v1" if day < 30 else ("v2" if day < 60 else "v3")
        model = "extractive" if day < 45 else "local-smollm2"
        iv = f"idx-{1 + day // 23}"
        esc = REASONS[i % 4] if rng.random() < 0.1 else None
        status = "needs_human" if esc else ("error" if rng.random() < 0.01 else "answered")
        rid = f"req_b{i:018d}"
        batch.append(
            {
                "request_id": rid,
                "workflow": wf,
                "principal_id": f"u{i % 500}",
                "started_at": at,
                "status": status,
                "model": model,
                "provider": "local",
                "prompt_version": pv,
                "index_version": iv,
                "tool_refusals": 1 if rng.random() < 0.005 else 0,
                "cost_usd": rng.uniform(0.0005, 0.004),
                "cost_source": "estimated",
                "latency_ms": rng.lognormvariate(6.5, 0.6),
                "input_tokens": 400,
                "output_tokens": 120,
                "escalation": esc,
                "groundedness": rng.uniform(0.3, 1.0),
                "error_type": "ProviderError" if status == "error" else None,
                "error_stage": "generate" if status == "error" else None,
                "body": {
                    "question": f"billing question {i % 2000} about invoice <ID>",
                    **(
                        {
                            "errors": [
                                {
                                    "type": "ProviderError",
                                    "stage": "generate",
                                    "message": f"upstream timeout after {1000 + i % 97} ms on req_{i:x}",
                                }
                            ]
                        }
                        if status == "error"
                        else {}
                    ),
                },
                "channel": "server",
            }
        )
        for rank, j in enumerate(rng.sample(range(60), 3)):
            src, doc = docs[j]
            cites.append(
                {
                    "request_id": rid,
                    "rank": rank,
                    "started_at": at,
                    "source_id": src,
                    "doc_id": doc,
                    "chunk_id": f"{doc}#0",
                    "score": 1.0 / (rank + 1),
                    "cited": rank < 2,
                }
            )
        if rng.random() < 0.1:
            decision = rng.choice(["approved", "approved", "edited", "rejected"])
            reviews.append(
                {
                    "id": f"rv_b{i:018d}",
                    "request_id": rid,
                    "submitter": "ana",
                    "question": "q",
                    "draft": "d",
                    "citations": [],
                    "agent_notes": [],
                    "groundedness": 0.8,
                    "escalation_reason": esc,
                    "status": decision,
                    "assigned_role": "lead",
                    "escalation_level": 0,
                    "sla_due_at": None,
                    "created_at": at,
                    "updated_at": at,
                    "decision": decision,
                    "decided_by": "lena",
                    "decided_at": at + timedelta(minutes=10),
                    "final_text": None,
                    "diff": None,
                    "reject_reason": rng.choice(REJECT) if decision == "rejected" else None,
                    "comment": None,
                    "version": 1,
                }
            )
        if rng.random() < 0.03:
            down = rng.random() < 0.3
            fbs.append(
                {
                    "id": f"fb_b{i:018d}",
                    "request_id": rid,
                    "created_at": at + timedelta(minutes=5),
                    "principal_id": f"u{i % 500}",
                    "rating": -1 if down else 1,
                    "reasons": [rng.choice(["outdated", "inaccurate", "incomplete"])]
                    if down
                    else ["helpful"],
                    "comment": None,
                }
            )
        if len(batch) >= 20_000:
            fast_flush()
    fast_flush()
    if store.dialect == "sqlite":
        from sqlalchemy import text

        with store.begin() as conn:
            conn.execute(text("ANALYZE"))
    return counts


def timed(fn: object, repeat: int) -> tuple[float, float, object]:
    """Median wall-clock and CPU seconds of ``repeat`` runs (CPU time: the process's own work, which a
    shared machine's load inflates less than the wall clock), and the last result."""
    times, cpu, out = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(times), statistics.median(cpu), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--traces", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--db-url", default=None, help="Default: a SQLite file in a temporary folder.")
    ap.add_argument(
        "--keep",
        default=None,
        help="Keep the seeded project (and its SQLite file) in this folder; reuse it when it was seeded "
        "with the same --traces.",
    )
    ap.add_argument(
        "--only", default=None, help="Comma-separated names of the timings to run (default: all)."
    )
    args = ap.parse_args()

    import os

    from charter.runtime import Runtime
    from charter.telemetry import build_report
    from charter.telemetry._alerts import evaluate_alerts
    from charter.telemetry._clusters import build_failures
    from charter.telemetry._trends import build_trends

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="report-bench-"))
    try:
        dest = tmp / "project"
        marker = tmp / "seeded.json"
        reuse = (
            bool(args.keep) and marker.exists() and json.loads(marker.read_text())["traces"] == args.traces
        )
        if not reuse:
            shutil.rmtree(dest, ignore_errors=True)
            marker.unlink(missing_ok=True)
            shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".charter", "__pycache__"))
        if args.db_url:
            os.environ["CHARTER_DATABASE_URL"] = args.db_url
        rt = Runtime.open(dest / "charter.yaml")
        now = datetime(2026, 11, 30, 12, tzinfo=UTC)
        t0 = time.perf_counter()
        if reuse:
            saved = json.loads(marker.read_text())
            counts, seeded_s = saved["counts"], saved["seed_s"]
        else:
            counts = seed(rt, args.traces, now)
            seeded_s = time.perf_counter() - t0
            if args.keep:
                marker.write_text(
                    json.dumps({"traces": args.traces, "counts": counts, "seed_s": round(seeded_s, 1)})
                )
        only = ("budget_burn", "escalation_spike", "latency_slo_burn", "sync_freshness", "kill_switch")
        results: dict[str, object] = {
            "seeded": counts,
            "seed_s": round(seeded_s, 1),
            "dialect": rt.store.dialect,
            "reused_seed": reuse,
        }
        results["loadavg_before"] = [round(x, 2) for x in os.getloadavg()]
        wanted = set(args.only.split(",")) if args.only else None
        for name, fn in (
            ("trends_28d", lambda: build_trends(rt, since=timedelta(days=28), now=now)),
            ("trends_90d", lambda: build_trends(rt, since=timedelta(days=90), now=now)),
            ("failures_28d", lambda: build_failures(rt, since=timedelta(days=28), now=now)),
            ("alerts", lambda: evaluate_alerts(rt, now, only=only)),
            (
                "trends_28d+failures_28d",
                lambda: (
                    build_trends(rt, since=timedelta(days=28), now=now),
                    build_failures(rt, since=timedelta(days=28), now=now),
                ),
            ),
            ("build_report_7d", lambda: build_report(rt, since=timedelta(days=7), now=now)),
            (
                "build_report_7d_as_reader",  # as the console builds it: for a principal (scrubbing)
                lambda: build_report(
                    rt, since=timedelta(days=7), now=now, principal=rt.charter.principal("ben")
                ),
            ),
        ):
            if wanted is not None and name not in wanted:
                continue
            secs, cpu, out = timed(fn, args.repeat)
            results[name + "_s"] = round(secs, 3)
            results[name + "_cpu_s"] = round(cpu, 3)
            if name == "trends_90d":
                results["requests_in_90d"] = out["totals"]["requests"]  # type: ignore[index]
                results["cells_days"] = len(out["by_day"])  # type: ignore[index]
        results["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        rt.close()
        print(json.dumps(results, indent=2))
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
