"""Retrieval benchmark: quality (nDCG@10, recall@10, MRR with ranx), search latency at 100,000 chunks under
three ACL selectivities, and sync/index throughput.

    .venv/bin/python bench/retrieval_bench.py [--data ../shared/data/retrieval/msmarco] [--json out.json]
        [--skip-latency] [--latency-chunks 100000] [--tune]

Quality compares, in one run and on the same judged queries: our BM25, our dense (all-MiniLM-L6-v2), our
hybrid (the charter's default fusion), and the peers bm25s (English stop words + Snowball stemmer via
PyStemmer) and plain reciprocal-rank fusion (k=60, ``ranx.fuse``) of bm25s and our dense run.

Corpus embeddings are cached in ``bench/.cache/`` (gitignored); the first run embeds the 5,000 passages
(a few minutes on 2 cores). The latency corpus is the real corpus repeated with perturbed texts (words
dropped and shuffled per copy) and perturbed vectors (Gaussian noise, renormalised) instead of re-embedding.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from _common import spinner  # type: ignore[import-not-found]  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from charter.retrieval import Index, analyse, get_embedder  # noqa: E402
from charter.retrieval._search import fuse  # noqa: E402
from charter.sources import Document  # noqa: E402
from charter.spec._schema import Chunking, Fusion  # noqa: E402
from charter.store import open_store, utcnow  # noqa: E402
from charter.store.tables import acl, chunks, documents, embeddings, versions  # noqa: E402

CACHE = REPO / "bench" / ".cache"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "retrieval" / "msmarco"
METRICS = ["ndcg@10", "recall@10", "mrr"]
BENCH_CHUNKING = Chunking(max_tokens=512, overlap=0)  # one passage = one chunk


def load_data(path: Path) -> tuple[list[dict], dict[str, str], dict[str, dict[str, int]]]:
    corpus = [json.loads(line) for line in (path / "corpus.jsonl").open(encoding="utf-8")]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (path / "queries.jsonl").open(encoding="utf-8"))}
    qrels: dict[str, dict[str, int]] = {}
    for line in (path / "qrels" / "test.tsv").open(encoding="utf-8"):
        parts = line.strip().split("\t")
        if len(parts) != 3 or not parts[2].isdigit():
            continue  # header
        qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return corpus, queries, qrels


def docs_of(corpus: list[dict]) -> list[Document]:
    return [
        Document(
            source_id="msmarco", doc_id=d["_id"], title=d.get("title") or "", text=d["text"], format="text"
        )
        for d in corpus
    ]


def fresh_store(tmp: Path, name: str):  # type: ignore[no-untyped-def]
    return open_store(f"sqlite:///{tmp / name}")


def cached_embeddings(model: str) -> dict[str, bytes]:
    path = CACHE / f"embeddings-{model.replace('/', '_')}.npz"
    if not path.exists():
        return {}
    data = np.load(path)
    return {h: v.astype("<f4").tobytes() for h, v in zip(data["hashes"], data["vectors"], strict=True)}


def save_embeddings(store, model: str) -> None:  # type: ignore[no-untyped-def]
    CACHE.mkdir(parents=True, exist_ok=True)
    with store.connect() as conn:
        rows = conn.execute(embeddings.select().where(embeddings.c.model == model)).all()
    hashes = np.array([r.text_hash for r in rows])
    vectors = np.stack([np.frombuffer(r.vector, dtype="<f4") for r in rows])
    np.savez(CACHE / f"embeddings-{model.replace('/', '_')}.npz", hashes=hashes, vectors=vectors)


def seed_cache(store, model: str, cache: dict[str, bytes]) -> None:  # type: ignore[no-untyped-def]
    with store.begin() as conn:
        rows = [{"model": model, "text_hash": h, "dim": len(v) // 4, "vector": v} for h, v in cache.items()]
        for i in range(0, len(rows), 5000):
            conn.execute(insert(embeddings), rows[i : i + 5000])


# ------------------------------------------------------------------------------------------------ quality
def build_quality_index(tmp: Path, corpus: list[dict], report: dict) -> Index:
    emb = get_embedder("minilm")
    cache = cached_embeddings(emb.name)
    docs = docs_of(corpus)
    tp: dict[str, object] = {}
    # cold: empty embedding cache, a sample of the corpus (embedding dominates)
    n_cold = min(len(docs), 300 if cache else len(docs))
    store = fresh_store(tmp, "cold.db")
    index = Index(store, emb)
    index.embedder.embed(["warm up the model"])  # model load is not indexing time
    t = time.perf_counter()
    for start in range(
        0, n_cold, 64
    ):  # as the sync does: embed a batch of changed documents, then write each
        batch = docs[start : min(start + 64, n_cold)]
        index.prefetch_embeddings(batch, BENCH_CHUNKING)
        for d in batch:
            index.upsert_document(d, frozenset({"public"}), BENCH_CHUNKING)
    dt = time.perf_counter() - t
    chunks_cold = sum(c["chunks"] for c in index.counts().values())
    tp["cold"] = {
        "documents": n_cold,
        "seconds": round(dt, 2),
        "docs_per_s": round(n_cold / dt, 1),
        "chunks_per_s": round(chunks_cold / dt, 1),
    }
    if not cache:
        save_embeddings(store, emb.name)
        cache = cached_embeddings(emb.name)
    store.dispose()
    # warm: every embedding cached, the whole corpus
    store = fresh_store(tmp, "quality.db")
    seed_cache(store, emb.name, cache)
    index = Index(store, emb)
    t = time.perf_counter()
    for d in docs:
        index.upsert_document(d, frozenset({"public"}), BENCH_CHUNKING)
    dt = time.perf_counter() - t
    n_chunks = sum(c["chunks"] for c in index.counts().values())
    tp["warm"] = {
        "documents": len(docs),
        "seconds": round(dt, 2),
        "docs_per_s": round(len(docs) / dt, 1),
        "chunks_per_s": round(n_chunks / dt, 1),
    }
    # re-sync of unchanged documents
    t = time.perf_counter()
    results = [index.upsert_document(d, frozenset({"public"}), BENCH_CHUNKING) for d in docs]
    dt = time.perf_counter() - t
    tp["unchanged"] = {
        "documents": len(docs),
        "seconds": round(dt, 2),
        "docs_per_s": round(len(docs) / dt, 1),
        "all_unchanged": all(r == "unchanged" for r in results),
    }
    # ACL-only change: no re-embedding
    t = time.perf_counter()
    for d in docs[:500]:
        index.upsert_document(d, frozenset({"public", "group:x"}), BENCH_CHUNKING)
    dt = time.perf_counter() - t
    tp["acl_only"] = {"documents": 500, "seconds": round(dt, 2), "docs_per_s": round(500 / dt, 1)}
    for d in docs[:500]:
        index.upsert_document(d, frozenset({"public"}), BENCH_CHUNKING)
    report["throughput"] = tp
    t = time.perf_counter()
    index.snapshot()
    report["snapshot_load_s_5k"] = round(time.perf_counter() - t, 3)
    return index


def run_of(hits_by_query: dict[str, list[tuple[str, float]]]) -> dict[str, dict[str, float]]:
    return {q: {doc: float(s) for doc, s in hits} for q, hits in hits_by_query.items() if hits}


def quality(
    index: Index,
    corpus: list[dict],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    report: dict,
    tune: bool,
) -> None:
    import bm25s
    import Stemmer
    from ranx import Qrels, Run, evaluate
    from ranx import fuse as ranx_fuse

    judged = {q: t for q, t in queries.items() if q in qrels}
    everyone = frozenset({"public"})
    runs: dict[str, dict[str, dict[str, float]]] = {}
    for mode in ("bm25", "dense", "hybrid"):
        runs[f"ours-{mode}"] = run_of(
            {
                q: [(h.doc_id, h.score) for h in index.search(everyone, text, k=100, mode=mode)]
                for q, text in judged.items()
            }
        )
    # peer: bm25s with English stop words and the Snowball stemmer
    stemmer = Stemmer.Stemmer("english")
    ids = [d["_id"] for d in corpus]
    texts = [((d.get("title") or "") + " " + d["text"]).strip() for d in corpus]
    retriever = bm25s.BM25()
    retriever.index(
        bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False
    )
    qids = list(judged)
    res, scores = retriever.retrieve(
        bm25s.tokenize([judged[q] for q in qids], stopwords="en", stemmer=stemmer, show_progress=False),
        k=100,
        show_progress=False,
    )
    runs["bm25s"] = {
        q: {ids[int(i)]: float(s) for i, s in zip(res[j], scores[j], strict=True) if s > 0}
        for j, q in enumerate(qids)
    }
    rrf = ranx_fuse(
        [Run(runs["bm25s"], name="bm25s"), Run(runs["ours-dense"], name="dense")],
        method="rrf",
        params={"k": 60},
    )
    runs["rrf(bm25s,dense) k=60"] = {q: dict(v) for q, v in rrf.to_dict().items()}
    qr = Qrels(qrels)
    table = {}
    for name, run in runs.items():
        table[name] = {
            m: round(float(v), 4)
            for m, v in evaluate(qr, Run(run, name=name), METRICS, make_comparable=True).items()
        }
    report["quality"] = {
        "queries_judged": len(judged),
        "fusion": _fusion_dict(index.default_fusion or Fusion()),
        "results": table,
    }
    if tune:
        report["tuning"] = tune_fusion(index, judged, qrels)


def _fusion_dict(f: Fusion) -> dict:
    return f.model_dump()


def _ndcg10(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> float:
    from ranx import Qrels, Run, evaluate

    return float(evaluate(Qrels(qrels), Run(run), "ndcg@10", make_comparable=True))


def tune_fusion(index: Index, judged: dict[str, str], qrels: dict[str, dict[str, int]]) -> dict:
    """Grid over normalisation, depth and BM25 weight; 2-fold cross-validation over random query halves."""
    from types import SimpleNamespace

    from charter.retrieval._search import score

    snap = index.snapshot()
    rows = np.arange(snap.size, dtype=np.int32)
    doc_ids = [snap.docs[i].doc_id for i in snap.chunk_doc]
    per_query = {}
    for q, text in judged.items():
        qv = index.embedder.embed([text])[0]
        terms = analyse(text)
        s = score(snap, rows, qv, terms, snap.size, Fusion(bm25_weight=0.0, dense_weight=1.0))
        order = np.argsort(s.rows)
        present = np.zeros(snap.size, dtype=bool)
        bm = np.zeros(snap.size, dtype=np.float32)
        bm[s.rows[order]] = s.bm25[order]
        bm_rows, _ = snap.postings.scores(terms, None, snap.size, float(snap.postings.lengths.mean()))
        present[bm_rows] = True
        dn = np.zeros(snap.size, dtype=np.float32)
        dn[s.rows[order]] = s.dense[order]
        per_query[q] = (bm, present, dn)

    def run_for(cfg: SimpleNamespace, qs: list[str]) -> dict[str, dict[str, float]]:
        out = {}
        for q in qs:
            bm, present, dn = per_query[q]
            fused, _, _ = fuse(bm, present, dn, cfg)
            top = np.argsort(-fused, kind="stable")[:100]
            out[q] = {doc_ids[i]: float(fused[i]) for i in top}
        return out

    grid = []
    for norm in ("minmax", "zscore"):
        for depth in (10, 20, 50, 100, 1000):
            for wb in np.round(np.arange(0.0, 1.01, 0.05), 2):
                grid.append(
                    SimpleNamespace(
                        method="weighted",
                        normalization=norm,
                        depth=depth,
                        bm25_weight=float(wb),
                        dense_weight=float(round(1 - wb, 2)),
                    )
                )
    for k in (10, 30, 60):
        for depth in (20, 100, 1000):
            grid.append(SimpleNamespace(method="rrf", rrf_k=k, depth=depth, bm25_weight=0, dense_weight=0))
    qs = list(judged)
    full = [(_ndcg10(run_for(cfg, qs), qrels), cfg) for cfg in grid]
    full.sort(key=lambda x: -x[0])
    best = [{"ndcg@10": round(s, 4), **vars(c)} for s, c in full[:15]]
    # cross-validation: choose on one half, evaluate on the other
    rng = random.Random(7)
    held_out, held_default, held_dense = [], [], []
    default = index.default_fusion or Fusion()
    dense_cfg = SimpleNamespace(
        method="weighted", normalization="minmax", depth=100, bm25_weight=0.0, dense_weight=1.0
    )
    for _ in range(10):
        shuffled = qs[:]
        rng.shuffle(shuffled)
        a, b = shuffled[: len(qs) // 2], shuffled[len(qs) // 2 :]
        for train, test in ((a, b), (b, a)):
            qa = {q: qrels[q] for q in train}
            qb = {q: qrels[q] for q in test}
            chosen = max(grid, key=lambda c: _ndcg10(run_for(c, train), qa))
            held_out.append(_ndcg10(run_for(chosen, test), qb))
            held_default.append(_ndcg10(run_for(default, test), qb))
            held_dense.append(_ndcg10(run_for(dense_cfg, test), qb))
    return {
        "grid_size": len(grid),
        "best_on_full_set": best,
        "cv_2fold_x10": {
            "tuned_on_other_half": round(statistics.mean(held_out), 4),
            "default_fusion": round(statistics.mean(held_default), 4),
            "dense_only": round(statistics.mean(held_dense), 4),
        },
    }


# ------------------------------------------------------------------------------------------------ latency
def _perturb(words: list[str], rng: random.Random) -> list[str]:
    kept = [w for w in words if rng.random() > 0.1] or words[:1]
    for _ in range(max(1, len(kept) // 10)):
        i, j = rng.randrange(len(kept)), rng.randrange(len(kept))
        kept[i], kept[j] = kept[j], kept[i]
    return kept


def build_latency_index(
    tmp: Path, corpus: list[dict], n_chunks: int, model: str, dim: int, cache: dict[str, bytes]
) -> tuple[Index, dict[int, frozenset[str]]]:
    """A store with ``n_chunks`` one-chunk documents; ACL tokens drawn so that 100 %, 10 % and 1 % of the
    chunks are readable by the principals ``group:all``, ``group:ten`` and ``group:one``."""
    import hashlib

    from charter.retrieval import chunk_document
    from charter.retrieval._index import _text_hash

    rng = random.Random(42)
    nrng = np.random.default_rng(42)
    store = fresh_store(tmp, "latency.db")
    now = utcnow()
    base_vecs = {}
    for doc in docs_of(corpus):
        pieces = chunk_document(doc, BENCH_CHUNKING)
        base_vecs[doc.doc_id] = np.frombuffer(cache[_text_hash(pieces[0].embed_text)], dtype="<f4")
    ten = set(rng.sample(range(n_chunks), n_chunks // 10))
    one = set(rng.sample(range(n_chunks), n_chunks // 100))
    acls: dict[int, frozenset[str]] = {}
    doc_rows, acl_rows, chunk_rows, emb_rows = [], [], [], []
    for i in range(n_chunks):
        d = corpus[i % len(corpus)]
        copy = i // len(corpus)
        words = d["text"].split()
        text = d["text"] if copy == 0 else " ".join(_perturb(words, rng))
        vec = base_vecs[d["_id"]]
        if copy:
            vec = vec + nrng.normal(0, 0.02, size=vec.shape).astype(np.float32)
            vec = vec / np.linalg.norm(vec)
        h = hashlib.sha256(f"{copy}:{d['_id']}:{text}".encode()).hexdigest()
        tokens = (
            {"group:all"} | ({"group:ten"} if i in ten else set()) | ({"group:one"} if i in one else set())
        )
        acls[i + 1] = frozenset(tokens)
        doc_rows.append(
            {
                "id": i + 1,
                "source_id": "bench",
                "doc_id": f"{copy:03d}-{d['_id']}",
                "title": "",
                "url": None,
                "format": "text",
                "chunking": "512/0",
                "content_hash": h,
                "acl_hash": "",
                "private_by_default": False,
                "chunk_count": 1,
                "content_seen_at": now,
                "acl_seen_at": now,
                "synced_at": now,
            }
        )
        acl_rows.extend({"doc_pk": i + 1, "token": t} for t in tokens)
        chunk_rows.append(
            {
                "id": i + 1,
                "doc_pk": i + 1,
                "position": 0,
                "heading": "",
                "page": None,
                "text": text,
                "tokens": len(words),
                "text_hash": h,
                "terms": " ".join(analyse(text)),
            }
        )
        emb_rows.append({"model": model, "text_hash": h, "dim": dim, "vector": vec.astype("<f4").tobytes()})
    with store.begin() as conn:
        for table, rows in (
            (documents, doc_rows),
            (acl, acl_rows),
            (chunks, chunk_rows),
            (embeddings, emb_rows),
        ):
            for j in range(0, len(rows), 10000):
                conn.execute(insert(table), rows[j : j + 10000])
        conn.execute(versions.update().values(counter=versions.c.counter + 1))
    return Index(store, get_embedder("minilm")), acls


def latency(
    tmp: Path,
    corpus: list[dict],
    queries: dict[str, str],
    n_chunks: int,
    report: dict,
    blas: list[int] = [1],  # noqa: B006 - read only
    busy: list[int] = [0],  # noqa: B006 - read only
) -> None:
    """Search latency at each selectivity, for each (busy cores, BLAS threads) setting (``--blas-threads``,
    ``--busy``: the thread policy measured with and without background load)."""
    from charter.retrieval._search import score

    emb = get_embedder("minilm")
    cache = cached_embeddings(emb.name)
    t = time.perf_counter()
    index, acls = build_latency_index(tmp, corpus, n_chunks, emb.name, emb.dim, cache)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    snap = index.snapshot()
    load_s = time.perf_counter() - t
    qtexts = list(queries.values())
    index.embedder.embed(["warm up"])
    qvecs = {q: index.embedder.embed([q])[0] for q in qtexts}
    out: dict[str, object] = {
        "chunks": snap.size,
        "build_s": round(build_s, 1),
        "snapshot_load_s": round(load_s, 2),
    }
    # query embedding alone (part of every search)
    emb_times = []
    for q in qtexts:
        t = time.perf_counter()
        index.embedder.embed([q])
        emb_times.append((time.perf_counter() - t) * 1000)
    out["query_embedding_ms"] = {
        "p50": round(float(np.percentile(emb_times, 50)), 2),
        "p95": round(float(np.percentile(emb_times, 95)), 2),
    }
    k = 10
    fusion = index.default_fusion or Fusion()
    row_of = {int(pk): r for r, pk in enumerate(snap.chunk_pks)}
    settings = [(b, n) for b in busy for n in blas]
    cases = [
        (label, token, b, n)
        for b, n in settings
        for label, token in (("100%", "group:all"), ("10%", "group:ten"), ("1%", "group:one"))
    ]
    hogs: list[subprocess.Popen[bytes]] = []
    for label, token, n_busy, n_blas in cases:
        while len(hogs) < n_busy:  # background load: one busy core per process
            hogs.append(spinner())
        while len(hogs) > n_busy:
            hogs.pop().kill()
        limiter = threadpool_limits(limits=n_blas, user_api="blas")
        if len(settings) > 1:
            label = f"{label} blas={n_blas} busy={n_busy}"
        principal = frozenset({"user:bench", token})
        readable = [pk for pk, toks in acls.items() if token in toks]
        end_to_end, first, scoring, recalls, full_k = [], [], [], [], 0
        index._query_vectors.clear()  # the first pass embeds every query afresh
        for rep in range(4):
            for q in qtexts:
                t = time.perf_counter()
                hits = index.search(principal, q, k=k, fusion=fusion)
                (end_to_end if rep else first).append((time.perf_counter() - t) * 1000)
                if rep:
                    continue
                # the same ranking with the query vector precomputed: filter + scoring + re-check only
                t = time.perf_counter()
                doc_mask = snap.doc_mask(principal, None)
                permitted = np.flatnonzero(doc_mask[snap.chunk_doc]).astype(np.int32)
                score(snap, permitted, qvecs[q], analyse(q), k, fusion)
                scoring.append((time.perf_counter() - t) * 1000)
                # exact filtered scan, computed independently of the index's token masks
                exact_rows = np.array(sorted(row_of[pk] for pk in readable), dtype=np.int32)
                exact = score(snap, exact_rows, qvecs[q], analyse(q), k, fusion)
                ours = {h.doc_id for h in hits}
                exact_docs = {snap.docs[snap.chunk_doc[r]].doc_id for r in exact.rows}
                recalls.append(len(ours & exact_docs) / max(1, len(exact_docs)))
                full_k += int(len(hits) == min(k, len(readable)))
        out[label] = {
            "readable_chunks": len(readable),
            "search_ms_first_time_query": {
                "p50": round(float(np.percentile(first, 50)), 2),
                "p95": round(float(np.percentile(first, 95)), 2),
            },
            "search_ms_query_vector_cached": {
                "p50": round(float(np.percentile(end_to_end, 50)), 2),
                "p95": round(float(np.percentile(end_to_end, 95)), 2),
            },
            "filter_and_score_ms": {
                "p50": round(float(np.percentile(scoring, 50)), 2),
                "p95": round(float(np.percentile(scoring, 95)), 2),
            },
            "recall_vs_exact_filtered_scan": round(statistics.mean(recalls), 4),
            "queries_with_full_k": f"{full_k}/{len(qtexts)}",
            "searches": len(end_to_end) + len(first),
            "blas_threads": n_blas,
            "busy_cores": n_busy,
            "loadavg_1m": round(os.getloadavg()[0], 2),
        }
        limiter.restore_original_limits()
    for h in hogs:
        h.kill()
    report["latency"] = out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--json", type=Path, help="Also write the report here.")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--latency-chunks", type=int, default=100_000)
    ap.add_argument("--tune", action="store_true", help="Grid-search fusion settings with cross-validation.")
    ap.add_argument(
        "--blas-threads", default="1", help="comma-separated BLAS thread counts to compare, e.g. 1,2"
    )
    ap.add_argument("--busy", default="0", help="comma-separated numbers of busy background cores, e.g. 0,1")
    args = ap.parse_args()
    corpus, queries, qrels = load_data(args.data)
    report: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
        f"numpy {np.__version__}",
        "corpus": len(corpus),
        "queries": len(queries),
    }
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        if not args.skip_quality:
            index = build_quality_index(tmp, corpus, report)
            index.default_fusion = Fusion()
            quality(index, corpus, queries, qrels, report, args.tune)
        if not args.skip_latency:
            latency(
                tmp,
                corpus,
                queries,
                args.latency_chunks,
                report,
                [int(x) for x in args.blas_threads.split(",")],
                [int(x) for x in args.busy.split(",")],
            )
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
