"""HNSW recall@10 on real text: pgvector's HNSW index (the product's settings: m 16, ef_construction 64,
inner product on normalised all-MiniLM-L6-v2 vectors) against the exact scan, over the chunk vectors of a
synced Charter store, for a range of ``ef_search`` values; with per-query latency.

The vectors come from a store that a sync has filled (its ``retrieval_embeddings`` cache), e.g. the one that
``bench/ingest_bench.py --workdir DIR`` leaves in ``DIR/project/.charter/charter.db`` (25,721 chunks of
Debian's PostgreSQL manual with ``--pages 800 --chunk-tokens 64``), or that store with a second ``folder``
source of whole manual pages (``bench/data/build_manpages_corpus.py DIR --full-text CHARS``) synced into it —
99,949 vectors in ``docs/benchmarks.md``. Queries: the 44 judged questions of
``bench/data/pgdocs_questions.json`` plus the first words of randomly chosen chunks (``--sample``), embedded
with the same model. The exact top 10 is computed in numpy over every vector (an oracle independent of
PostgreSQL); recall@10 is the share of it that the index returns.

    python bench/hnsw_recall.py /tmp/ing20k/project/.charter/charter.db --sample 156

``--readable 0.1`` measures the *permission-filtered* path instead: a random share of the vectors is
readable, the oracle is the exact top 10 over the readable vectors only, and the index is queried the way
``charter.retrieval._pg.PgSearch`` queries it for such a reader — the ``ef`` nearest by the index, then the
permission filter, then the top 10, with ``ef`` from the product's own rule (``HNSW_MARGIN`` x the results it
needs / the readable share, at least ``HNSW_MIN_EF``; the ``--ef`` list is ignored). A query whose filtered
candidates are fewer than the product needs is ranked exactly by the product (counted as a fallback, recall 1).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("store", type=Path, help="a synced Charter SQLite store (charter.db)")
    ap.add_argument("--sample", type=int, default=156, help="chunk-derived queries besides the judged ones")
    ap.add_argument("--ef", default="10,20,40,80,100,200,400")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=10)
    ap.add_argument("--readable", type=float, default=1.0, help="share of vectors the reader may read")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import pgserver
    import psycopg

    from charter.retrieval import get_embedder

    db = sqlite3.connect(args.store)
    emb = get_embedder("minilm")
    rows = db.execute("SELECT vector FROM retrieval_embeddings WHERE model = ?", (emb.name,)).fetchall()
    vecs = np.stack([np.frombuffer(r[0], dtype="<f4") for r in rows]).astype(np.float32)
    texts = [t for (t,) in db.execute("SELECT text FROM retrieval_chunks")]
    rng = random.Random(args.seed)
    questions = [
        q["text"] for q in json.loads((REPO / "bench/data/pgdocs_questions.json").read_text())["questions"]
    ]
    sampled = [" ".join(t.split()[:12]) for t in rng.sample(texts, min(args.sample, len(texts)))]
    queries = questions + sampled
    qv = emb.embed(queries).astype(np.float32)
    readable = np.ones(len(vecs), dtype=bool)
    if args.readable < 1.0:
        readable = np.random.default_rng(args.seed).random(len(vecs)) < args.readable
    scores = qv @ vecs.T
    scores[:, ~readable] = -np.inf  # the oracle: every readable vector scored
    exact = np.argsort(-scores, axis=1)[:, : args.k]

    pgdata = Path(tempfile.mkdtemp(prefix="hnsw-recall-"))
    server = pgserver.get_server(pgdata, cleanup_mode="delete")
    report: dict = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "vectors": len(vecs),
        "queries": {"judged_questions": len(questions), "chunk_openings": len(sampled)},
        "k": args.k,
        "readable_share": args.readable,
        "readable_vectors": int(readable.sum()),
    }
    try:
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute("CREATE TABLE v (id int PRIMARY KEY, ok boolean, embedding vector(384))")
            t0 = time.perf_counter()
            with conn.cursor().copy("COPY v (id, ok, embedding) FROM STDIN") as cp:
                for i, v in enumerate(vecs):
                    cp.write_row((i, bool(readable[i]), "[" + ",".join(f"{x:.7g}" for x in v) + "]"))
            report["load_s"] = round(time.perf_counter() - t0, 1)
            t0 = time.perf_counter()
            conn.execute(
                "CREATE INDEX ON v USING hnsw (embedding vector_ip_ops) WITH (m = 16, ef_construction = 64)"
            )
            report["index_s"] = round(time.perf_counter() - t0, 1)
            conn.execute("ANALYZE v")
            curve = []
            efs = (
                [int(x) for x in args.ef.split(",")]
                if args.readable >= 1.0
                else [_product_ef(args.readable, args.k)]
            )
            for ef in efs:
                curve.append(
                    _measure(conn, qv, exact, scores, queries, ef, args.k, filtered=args.readable < 1.0)
                )
                print(json.dumps(curve[-1]), flush=True)
            report["curve"] = curve
    finally:
        server.cleanup()
    report["loadavg_end"] = os.getloadavg()
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


def _product_ef(share: float, k: int) -> int:
    """``ef_search`` as ``PgSearch`` sizes it for a reader who may read ``share`` of the chunks."""
    from charter.retrieval._pg import HNSW_MIN_RESULTS, hnsw_ef_search

    ef = hnsw_ef_search(share, max(2 * k, HNSW_MIN_RESULTS))
    if ef is None:
        raise SystemExit(f"at {share:.0%} readable the product ranks exactly (ef beyond pgvector's limit)")
    return ef


def _measure(
    conn: Any,
    qv: np.ndarray,
    exact: np.ndarray,
    scores: np.ndarray,
    queries: list[str],
    ef: int,
    k: int,
    filtered: bool,
) -> dict[str, Any]:
    """Recall@k of the index at ``ef`` (filtered: the product's statement shape and fallback rule), and how
    much worse the missed neighbours are: per query, the mean cosine of the exact top k minus that of the k the
    index returned (0 when it returned the exact set or vectors tied with it), for the worst queries."""
    from charter.retrieval._pg import HNSW_MIN_RESULTS

    need = max(2 * k, HNSW_MIN_RESULTS)
    conn.execute(f"SET hnsw.ef_search = {ef}")
    sql = (
        "SELECT id FROM (SELECT id, ok, embedding <#> %s::vector AS d FROM v ORDER BY embedding <#> %s::vector "
        "LIMIT %s) c WHERE c.ok ORDER BY c.d, c.id LIMIT %s"
        if filtered
        else "SELECT id FROM v ORDER BY embedding <#> %s::vector LIMIT %s"
    )
    recalls, ms, fallbacks, gaps = [], [], 0, []
    for i, (q, truth) in enumerate(zip(qv, exact, strict=True)):
        lit = "[" + ",".join(f"{x:.7g}" for x in q) + "]"
        t0 = time.perf_counter()
        got = [r[0] for r in conn.execute(sql, (lit, lit, ef, need) if filtered else (lit, k))]
        ms.append((time.perf_counter() - t0) * 1000)
        if filtered and len(got) < need:
            fallbacks += 1  # the product ranks this query exactly
            recalls.append(1.0)
            gaps.append(0.0)
            continue
        recalls.append(len(set(got[:k]) & set(truth.tolist())) / k)
        gaps.append(float(scores[i, truth].mean() - scores[i, got[:k]].mean()))
    worst = sorted(range(len(recalls)), key=lambda i: (recalls[i], -gaps[i]))[:5]
    return {
        "ef_search": ef,
        "recall_at_10": round(float(np.mean(recalls)), 4),
        "min_query_recall": round(float(np.min(recalls)), 2),
        "exact_fallbacks": fallbacks,
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p95_ms": round(float(np.percentile(ms, 95)), 2),
        "cosine_gap_p50_max": [round(float(np.percentile(gaps, 50)), 4), round(float(np.max(gaps)), 4)],
        "worst_queries": [
            {"query": queries[i][:70], "recall": recalls[i], "cosine_gap": round(gaps[i], 4)} for i in worst
        ],
    }


if __name__ == "__main__":
    main()
