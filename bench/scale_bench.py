"""Scale benchmark: permission-filtered hybrid search at 1,000,000 chunks on PostgreSQL + pgvector, the in-memory
SQLite path at the sizes it can still hold, and where PostgreSQL should be preferred.

    .venv/bin/python bench/scale_bench.py [--chunks 1000000] [--sqlite-sizes 100000,300000]
        [--data ../shared/data/retrieval/msmarco] [--json out.json] [--skip-sqlite] [--skip-pg] [--reps 3]

The corpus is synthetic, generated from the MS MARCO benchmark passages: copy 0 of each passage is the
original, further copies drop ~10 % of the words and swap a few (``bench/retrieval_bench.py``'s
perturbation) and add Gaussian noise (sigma 0.02 per dimension, renormalised) to the passage's
all-MiniLM-L6-v2 vector. The 5,000 base passages are embedded once and cached in
``.charter/bench-cache/`` (gitignored), with the PostgreSQL cluster (pgserver, kept between runs so the
1M-chunk load and the HNSW build happen once). Chunks are grouped ten to a document; each document's ACL
gives ``group:all`` (100 % of chunks readable), ``group:ten`` (a random 10 % of documents) and ``group:one``
(a random 1 %), and the bench principals hold one of those plus ``user:bench``.

PostgreSQL is bulk loaded with COPY (binary COPY for the vectors), postings are derived in SQL exactly as
migration 0009 backfills them, then the indexes (postings, HNSW) are built. Searches go through
``Index.search`` (k = 10, the default fusion), each asserted to return k results; the path the dense side
took (``exact`` / ``hnsw``) is recorded, and HNSW recall is measured against the exact path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import struct
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402

from charter.retrieval import Index, analyse, get_embedder  # noqa: E402
from charter.spec._schema import Fusion  # noqa: E402
from charter.store import open_store  # noqa: E402

CACHE = REPO / ".charter" / "bench-cache"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "retrieval" / "msmarco"
CHUNKS_PER_DOC = 10
K = 10
SELECTIVITIES = (("100%", "group:all"), ("10%", "group:ten"), ("1%", "group:one"))
console = Console()


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


# ------------------------------------------------------------------------------------------------ data
def load_corpus(path: Path) -> tuple[list[dict], list[str]]:
    raw = (path / "corpus.jsonl").read_text(encoding="utf-8")
    corpus = [json.loads(line) for line in raw.split("\n") if line.strip()]
    qraw = (path / "queries.jsonl").read_text(encoding="utf-8")
    queries = [json.loads(line)["text"] for line in qraw.split("\n") if line.strip()]
    return corpus, queries


def base_vectors(corpus: list[dict], model: str) -> np.ndarray:
    """all-MiniLM-L6-v2 vectors of the base passages, embedded once and cached."""
    path = CACHE / "msmarco-base.npz"
    if path.exists():
        data = np.load(path)
        if str(data["model"]) == model and list(data["ids"]) == [d["_id"] for d in corpus]:
            return np.asarray(data["vectors"], dtype=np.float32)
    emb = get_embedder("minilm")
    texts = [d["text"] for d in corpus]
    out = np.zeros((len(texts), emb.dim), dtype=np.float32)
    with progress() as bar:
        task = bar.add_task("embedding the base passages (once)", total=len(texts))
        for i in range(0, len(texts), 256):
            out[i : i + 256] = emb.embed(texts[i : i + 256])
            bar.advance(task, len(texts[i : i + 256]))
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = CACHE / "msmarco-base.tmp.npz"
    np.savez(tmp, ids=np.array([d["_id"] for d in corpus]), vectors=out, model=np.array(model))
    os.replace(tmp, path)
    return out


class Synth:
    """Chunk i: base passage i % n_base, copy i // n_base; document i // 10, position i % 10."""

    def __init__(self, corpus: list[dict], vectors: np.ndarray, n_chunks: int) -> None:
        self.corpus = corpus
        self.vectors = vectors
        self.n_chunks = n_chunks
        self.n_docs = (n_chunks + CHUNKS_PER_DOC - 1) // CHUNKS_PER_DOC
        # analysed terms per whitespace word: a perturbed text's terms are its kept words' terms
        self.words = [d["text"].split() for d in corpus]
        self.word_terms = [[analyse(w) for w in ws] for ws in self.words]
        rng = random.Random(7)
        self.ten = set(rng.sample(range(self.n_docs), max(1, self.n_docs // 10)))
        self.one = set(rng.sample(range(self.n_docs), max(1, self.n_docs // 100)))

    def doc_tokens(self, d: int) -> list[str]:
        return (
            ["group:all"]
            + (["group:ten"] if d in self.ten else [])
            + (["group:one"] if d in self.one else [])
        )

    def readable(self, token: str) -> int:
        docs = {"group:all": range(self.n_docs), "group:ten": self.ten, "group:one": self.one}[token]
        return sum(min(CHUNKS_PER_DOC, self.n_chunks - d * CHUNKS_PER_DOC) for d in docs)

    def chunks(self, start: int, stop: int) -> Iterator[tuple[int, str, list[str], np.ndarray]]:
        """(chunk index, text, analysed terms, vector) for chunks start..stop-1."""
        nb = len(self.corpus)
        rng = random.Random(start)
        nrng = np.random.default_rng(start)
        idx = np.arange(start, stop)
        vecs = self.vectors[idx % nb].copy()
        noisy = idx >= nb
        vecs[noisy] += nrng.normal(0, 0.02, size=(int(noisy.sum()), vecs.shape[1])).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        for j, i in enumerate(range(start, stop)):
            b = i % nb
            words, wterms = self.words[b], self.word_terms[b]
            if i < nb:
                keep = list(range(len(words)))
            else:
                keep = [w for w in range(len(words)) if rng.random() > 0.1] or [0]
                for _ in range(max(1, len(keep) // 10)):
                    x, y = rng.randrange(len(keep)), rng.randrange(len(keep))
                    keep[x], keep[y] = keep[y], keep[x]
            yield (
                i,
                " ".join(words[w] for w in keep),
                [t for w in keep for t in wterms[w]],
                vecs[j],
            )


def pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1)


# ------------------------------------------------------------------------------------------------ PostgreSQL
def pg_server() -> Any:
    import pgserver

    pgdata = CACHE / "pg"
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(pgdata, cleanup_mode=None)  # kept running between runs
    import psycopg

    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        row = conn.execute("SHOW shared_buffers").fetchone()
        if row and row[0] != "2GB":  # the default 128MB: give the cluster what a production one would have
            conn.execute("ALTER SYSTEM SET shared_buffers = '2GB'")
            conn.execute("ALTER SYSTEM SET effective_cache_size = '8GB'")
            restart = True
        else:
            restart = False
    if restart:
        from pgserver._commands import pg_ctl

        pg_ctl(["-w", "-m", "fast", "restart"], pgdata=Path(server.pgdata), user=server.system_user)
    return server


def _vector_copy_rows(
    ids: np.ndarray, docs: np.ndarray, lengths: np.ndarray, model: bytes, vecs: np.ndarray
) -> bytes:
    """Binary COPY tuples for retrieval_chunk_vectors (chunk_id, doc_pk, length, model, dim, embedding)."""
    dim = vecs.shape[1]
    dt = np.dtype(
        [
            ("nf", ">i2"),
            ("l1", ">i4"),
            ("id", ">i4"),
            ("l2", ">i4"),
            ("doc", ">i4"),
            ("l3", ">i4"),
            ("len", ">i4"),
            ("l4", ">i4"),
            ("model", f"S{len(model)}"),
            ("l5", ">i4"),
            ("dim", ">i4"),
            ("l6", ">i4"),
            ("vdim", ">i2"),
            ("vunused", ">i2"),
            ("v", ">f4", (dim,)),
        ]
    )
    rows = np.zeros(len(ids), dtype=dt)
    rows["nf"] = 6
    rows["l1"] = rows["l2"] = rows["l3"] = rows["l5"] = 4
    rows["l4"] = len(model)
    rows["l6"] = 4 + 4 * dim
    rows["id"], rows["doc"], rows["len"], rows["model"] = ids, docs, lengths, model
    rows["dim"] = rows["vdim"] = dim
    rows["v"] = vecs
    return rows.tobytes()


def _watch_index(conn_uri: str, bar: Progress, task: Any, stop: threading.Event) -> None:
    """Follow CREATE INDEX progress (pg_stat_progress_create_index) on a second connection."""
    import psycopg

    with psycopg.connect(conn_uri, autocommit=True) as conn:
        while not stop.wait(2.0):
            row = conn.execute(
                "SELECT blocks_done, blocks_total, tuples_done, tuples_total FROM pg_stat_progress_create_index"
            ).fetchone()
            if row:
                bd, bt, td, tt = row
                if tt:
                    bar.update(task, completed=td, total=tt)
                elif bt:
                    bar.update(task, completed=bd, total=bt)


def pg_load(server: Any, synth: Synth, model: str, report: dict) -> str:
    """The synthetic corpus in database ``scale_<n>`` (loaded once; reused when complete). Returns its URL."""
    import psycopg

    name = f"scale_{synth.n_chunks}"
    admin = server.get_uri()
    uri = admin.replace("/postgres?", f"/{name}?", 1)
    url = uri.replace("postgresql://", "postgresql+psycopg://", 1)
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if exists:
        with psycopg.connect(uri) as conn:
            done = conn.execute(
                "SELECT count(*) FROM pg_indexes WHERE indexname = 'ix_retrieval_chunk_vectors_hnsw_384'"
            ).fetchone()
            n = conn.execute("SELECT count(*) FROM retrieval_chunk_vectors").fetchone()
        if done and done[0] and n and n[0] == synth.n_chunks:
            console.print(f"[green]reusing loaded database {name}[/green]")
            return url
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE {name} WITH (FORCE)")  # type: ignore[arg-type]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    open_store(url).dispose()  # the schema, through the migrations
    timings: dict[str, float] = {}
    now = datetime.now(UTC)
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # no FK triggers during the bulk load
        conn.execute("DROP INDEX ix_retrieval_chunk_vectors_hnsw_384")
        conn.execute("DROP INDEX ix_retrieval_chunk_vectors_doc")
        conn.execute("DROP INDEX ix_retrieval_postings_chunk")
        conn.execute("ALTER TABLE retrieval_postings DROP CONSTRAINT retrieval_postings_pkey")
        t = time.perf_counter()
        with conn.cursor() as cur:
            cols = (
                "id, source_id, doc_id, title, url, format, chunking, content_hash, acl_hash, "
                "private_by_default, chunk_count, content_seen_at, acl_seen_at, synced_at"
            )
            with cur.copy(f"COPY retrieval_documents ({cols}) FROM STDIN") as cp:  # type: ignore[arg-type]
                for d in range(synth.n_docs):
                    n = min(CHUNKS_PER_DOC, synth.n_chunks - d * CHUNKS_PER_DOC)
                    cp.write_row(
                        (d + 1, "bench", f"doc-{d:07d}", f"Document {d}", None, "text", "512/0",
                         f"{d:064x}", "", False, n, now, now, now)
                    )  # fmt: skip
            with cur.copy("COPY retrieval_acl (doc_pk, token) FROM STDIN") as cp:
                for d in range(synth.n_docs):
                    for tok in synth.doc_tokens(d):
                        cp.write_row((d + 1, tok))
        timings["documents_and_acl_s"] = time.perf_counter() - t
        t = time.perf_counter()
        batch = 20_000
        mbytes = model.encode()
        with progress() as bar:
            task = bar.add_task("COPY chunks + vectors", total=synth.n_chunks)
            for start in range(0, synth.n_chunks, batch):
                stop = min(start + batch, synth.n_chunks)
                ids, docs, lengths, vecs = [], [], [], []
                with conn.cursor() as cur:
                    cols = "id, doc_pk, position, heading, page, text, tokens, text_hash, terms"
                    with cur.copy(f"COPY retrieval_chunks ({cols}) FROM STDIN") as cp:  # type: ignore[arg-type]
                        for i, text_, terms, vec in synth.chunks(start, stop):
                            d = i // CHUNKS_PER_DOC
                            cp.write_row(
                                (i + 1, d + 1, i % CHUNKS_PER_DOC, "", None, text_, len(text_.split()),
                                 f"{i:064x}", " ".join(terms))
                            )  # fmt: skip
                            ids.append(i + 1)
                            docs.append(d + 1)
                            lengths.append(len(terms))
                            vecs.append(vec)
                    payload = _vector_copy_rows(
                        np.array(ids), np.array(docs), np.array(lengths), mbytes, np.stack(vecs)
                    )
                    cols = "chunk_id, doc_pk, length, model, dim, embedding"
                    sql = f"COPY retrieval_chunk_vectors ({cols}) FROM STDIN WITH (FORMAT binary)"
                    with cur.copy(sql) as cp:  # type: ignore[arg-type]
                        cp.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
                        cp.write(payload)
                        cp.write(struct.pack(">h", -1))
                bar.advance(task, stop - start)
        timings["chunks_and_vectors_s"] = time.perf_counter() - t
        for seq, table in (("retrieval_documents_id_seq", "retrieval_documents"),
                           ("retrieval_chunks_id_seq", "retrieval_chunks")):  # fmt: skip
            conn.execute(f"SELECT setval('{seq}', (SELECT max(id) FROM {table}))")  # type: ignore[arg-type]
        conn.execute("UPDATE retrieval_versions SET counter = counter + 1")
        conn.execute("SET work_mem = '1GB'")
        conn.execute("SET maintenance_work_mem = '3GB'")
        conn.execute("SET max_parallel_maintenance_workers = 1")
        steps = [
            (
                "postings (SQL, as migration 0009)",
                "INSERT INTO retrieval_postings (term, chunk_id, doc_pk, tf, length) "
                "SELECT t.term, c.id, c.doc_pk, count(*), max(cardinality(string_to_array(c.terms, ' '))) "
                "FROM retrieval_chunks c, unnest(string_to_array(c.terms, ' ')) AS t(term) "
                "WHERE t.term <> '' GROUP BY t.term, c.id, c.doc_pk",
            ),
            (
                "postings primary key",
                "ALTER TABLE retrieval_postings ADD PRIMARY KEY (term, chunk_id) INCLUDE (doc_pk, tf, length)",
            ),
            (
                "postings chunk index",
                "CREATE INDEX ix_retrieval_postings_chunk ON retrieval_postings (chunk_id)",
            ),
            (
                "vectors document index",
                "CREATE INDEX ix_retrieval_chunk_vectors_doc ON retrieval_chunk_vectors (doc_pk) INCLUDE (length)",
            ),
            (
                "HNSW index (m=16, ef_construction=64)",
                "CREATE INDEX ix_retrieval_chunk_vectors_hnsw_384 ON retrieval_chunk_vectors "
                "USING hnsw ((embedding::vector(384)) vector_ip_ops) WITH (m = 16, ef_construction = 64) "
                "WHERE dim = 384",
            ),
            ("VACUUM ANALYZE", "VACUUM ANALYZE"),
        ]
        for label, sql in steps:
            t = time.perf_counter()
            with progress() as bar:
                task = bar.add_task(label, total=None)
                stop_ev = threading.Event()
                watcher = threading.Thread(target=_watch_index, args=(uri, bar, task, stop_ev), daemon=True)
                watcher.start()
                conn.execute(sql)  # type: ignore[arg-type]
                stop_ev.set()
            timings[label] = time.perf_counter() - t
            console.print(f"  {label}: {timings[label]:.0f} s")
        sizes = conn.execute(
            "SELECT relname, pg_total_relation_size(oid) FROM pg_class WHERE relname IN "
            "('retrieval_chunks', 'retrieval_chunk_vectors', 'retrieval_postings', "
            "'ix_retrieval_chunk_vectors_hnsw_384')"
        ).fetchall()
    report["pg_load"] = {
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "sizes_mb": {r[0]: round(r[1] / 2**20) for r in sizes},
    }
    return url


def pg_search_bench(url: str, synth: Synth, queries: list[str], reps: int, report: dict) -> None:
    from charter.retrieval._pg import PgSearch

    store = open_store(url, migrate=False)
    index = Index(store, get_embedder("minilm"))
    fusion = Fusion()
    for q in queries:  # query vectors are cached by the index (LRU); embedding is not what we measure here
        index._query_vector(q)
    index.search(frozenset({"group:one"}), queries[0], k=K)  # first search: backfill check
    searcher: PgSearch = index._charter_pg_search  # type: ignore[attr-defined]
    out: dict[str, Any] = {}
    for label, token in SELECTIVITIES:
        principal = frozenset({"user:bench", token})
        readable = synth.readable(token)
        times: list[float] = []
        first: list[float] = []  # the first pass: this process has not yet read these queries' lists
        bm25_paths: dict[str, int] = {}
        paths: dict[str, int] = {}
        full_k = 0
        results: dict[str, list[str]] = {}
        with progress() as bar:
            task = bar.add_task(f"PostgreSQL search at {label}", total=reps * len(queries))
            for rep in range(reps):
                for q in queries:
                    t = time.perf_counter()
                    hits = index.search(principal, q, k=K, fusion=fusion)
                    (first if rep == 0 else times).append((time.perf_counter() - t) * 1000)
                    assert len(hits) == min(K, readable), (label, q, len(hits))
                    bm25_paths[searcher.last_bm25_how] = bm25_paths.get(searcher.last_bm25_how, 0) + 1
                    full_k += 1
                    paths[searcher.last_path] = paths.get(searcher.last_path, 0) + 1
                    if rep == 0:
                        results[q] = [h.chunk_id for h in hits]
                    bar.advance(task)
        # recall of what was returned against the exact path (exact dense scan over the permitted set)
        recall = None
        if "hnsw" in paths:
            saved = searcher.exact_max_rows
            searcher.exact_max_rows = 10**12
            sample = queries[:15]
            rs = []
            exact_ms = []
            for q in sample:
                t = time.perf_counter()
                exact = [h.chunk_id for h in index.search(principal, q, k=K, fusion=fusion)]
                exact_ms.append((time.perf_counter() - t) * 1000)
                rs.append(len(set(exact) & set(results[q])) / len(exact))
            searcher.exact_max_rows = saved
            recall = round(statistics.mean(rs), 3)
            out.setdefault("exact_path_ms", {})[label] = {"p50": pct(exact_ms, 50), "p95": pct(exact_ms, 95)}
        every = first + times
        out[label] = {
            "readable_chunks": readable,
            # every pass; the first (a process that has not served these queries) and the later ones apart
            "search_ms": {"p50": pct(every, 50), "p95": pct(every, 95), "max": round(max(every), 1)},
            "search_ms_first_pass": {
                "p50": pct(first, 50),
                "p95": pct(first, 95),
                "max": round(max(first), 1),
            },
            "search_ms_later_passes": (
                {"p50": pct(times, 50), "p95": pct(times, 95), "max": round(max(times), 1)} if times else None
            ),
            "searches": len(every),
            "full_k": f"{full_k}/{len(every)}",
            "dense_path": paths,
            "bm25_path": bm25_paths,
            "recall_at_10_vs_exact": recall if recall is not None else 1.0,
        }
        console.print(f"PostgreSQL {label}: {out[label]}")
    store.dispose()
    report["postgres"] = out


def pg_bm25_bench(url: str, queries: list[str], report: dict) -> None:
    """BM25 alone (top 100, the fusion's depth): the one statement ("scan") against the default ("auto":
    the posting lists in memory when every chunk is readable), asserting the same ids and scores."""
    from charter.retrieval._pg import PgSearch

    store = open_store(url, migrate=False)
    searcher = PgSearch(Index(store, get_embedder("minilm")))
    out: dict[str, Any] = {}
    for label, token in SELECTIVITIES:
        tokens = frozenset({"user:bench", token})
        searcher.bm25_top(tokens, ["warm"], 100)  # the permitted-set statistics, cached per index version
        lists: dict[str, list[list[tuple[int, float]]]] = {}
        for method in ("scan", "auto"):
            searcher.bm25_method = method
            times, hows = [], []
            for q in queries:
                t = time.perf_counter()
                top, _ = searcher.bm25_top(tokens, analyse(q), 100)
                times.append((time.perf_counter() - t) * 1000)
                hows.append(searcher.last_bm25_how)
                lists.setdefault(method, []).append(top)
            out[f"{label} {method}"] = {
                "p50": pct(times, 50),
                "p95": pct(times, 95),
                "max": round(max(times), 1),
                "paths": {h: hows.count(h) for h in sorted(set(hows))},
            }
        # the same scores at every rank, and the same chunk unless two chunks tie within float rounding (the
        # statements sum the terms in different orders; a tie at rank 100 may then keep either chunk)
        same = all(
            len(a) == len(b)
            and all(abs(x[1] - y[1]) <= 1e-9 * max(1.0, abs(y[1])) for x, y in zip(a, b, strict=True))
            for a, b in zip(lists["scan"], lists["auto"], strict=True)
        )
        same_ids = sum(
            [x[0] for x in a] == [y[0] for y in b] for a, b in zip(lists["scan"], lists["auto"], strict=True)
        )
        out[f"{label} identical_id_lists"] = f"{same_ids}/{len(queries)}"
        out[f"{label} same_top100"] = same
        console.print(f"BM25 {label}: scan {out[f'{label} scan']} auto {out[f'{label} auto']} same {same}")
    store.dispose()
    report["postgres_bm25"] = out


# ------------------------------------------------------------------------------------------------ SQLite
def sqlite_bench(tmp: Path, synth_for: Any, n: int, queries: list[str], reps: int, model: str) -> dict:
    """Build a SQLite index of ``n`` chunks, load its in-memory snapshot, search at three selectivities."""
    import psutil
    from sqlalchemy import insert

    from charter.store.tables import acl, chunks, documents, embeddings, versions

    synth: Synth = synth_for(n)
    path = tmp / f"sqlite-{n}.db"
    if path.exists():
        path.unlink()
    store = open_store(f"sqlite:///{path}")
    now = datetime.now(UTC)
    t = time.perf_counter()
    with store.begin() as conn:
        conn.execute(
            insert(documents),
            [
                {"id": d + 1, "source_id": "bench", "doc_id": f"doc-{d:07d}", "title": f"Document {d}",
                 "url": None, "format": "text", "chunking": "512/0", "content_hash": f"{d:064x}",
                 "acl_hash": "", "private_by_default": False, "chunk_count": CHUNKS_PER_DOC,
                 "content_seen_at": now, "acl_seen_at": now, "synced_at": now}
                for d in range(synth.n_docs)
            ],
        )  # fmt: skip
        conn.execute(
            insert(acl),
            [{"doc_pk": d + 1, "token": tok} for d in range(synth.n_docs) for tok in synth.doc_tokens(d)],
        )
        with progress() as bar:
            task = bar.add_task(f"SQLite: insert {n:,} chunks", total=n)
            for start in range(0, n, 20_000):
                stop = min(start + 20_000, n)
                crow, erow = [], []
                for i, text_, terms, vec in synth.chunks(start, stop):
                    h = f"{i:064x}"
                    crow.append(
                        {"id": i + 1, "doc_pk": i // CHUNKS_PER_DOC + 1, "position": i % CHUNKS_PER_DOC,
                         "heading": "", "page": None, "text": text_, "tokens": len(text_.split()),
                         "text_hash": h, "terms": " ".join(terms)}
                    )  # fmt: skip
                    erow.append({"model": model, "text_hash": h, "dim": len(vec), "vector": vec.tobytes()})
                conn.execute(insert(chunks), crow)
                conn.execute(insert(embeddings), erow)
                bar.advance(task, stop - start)
        conn.execute(versions.update().values(counter=versions.c.counter + 1))
    build_s = time.perf_counter() - t
    index = Index(store, get_embedder("minilm"))
    proc = psutil.Process()
    rss0 = proc.memory_info().rss
    t = time.perf_counter()
    index.snapshot()
    load_s = time.perf_counter() - t
    rss = proc.memory_info().rss - rss0
    for q in queries:
        index._query_vector(q)
    out: dict[str, Any] = {
        "chunks": n,
        "insert_s": round(build_s, 1),
        "snapshot_load_s": round(load_s, 1),
        "snapshot_rss_mb": round(rss / 2**20),
        "db_mb": round(path.stat().st_size / 2**20),
    }
    fusion = Fusion()
    for label, token in SELECTIVITIES:
        principal = frozenset({"user:bench", token})
        readable = synth.readable(token)
        times = []
        for _ in range(reps):
            for q in queries:
                t = time.perf_counter()
                hits = index.search(principal, q, k=K, fusion=fusion)
                times.append((time.perf_counter() - t) * 1000)
                assert len(hits) == min(K, readable)
        out[label] = {"p50": pct(times, 50), "p95": pct(times, 95), "searches": len(times)}
    console.print(f"SQLite {n:,}: {out}")
    index._snapshot = None
    store.dispose()
    path.unlink()
    for suffix in ("-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    return out


# ------------------------------------------------------------------------------------------------ lexical
class _NullEmbedder:
    """Lexical quality needs no dense vectors: a constant unit vector keeps the index's write path intact."""

    name = "bench-null@1"
    dim = 384

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        out[:, 0] = 1.0
        return out


def lexical_quality(server: Any, data: Path, corpus: list[dict], report: dict) -> None:
    """nDCG@10 / recall@10 / MRR of our BM25 on PostgreSQL vs in memory vs PostgreSQL's ts_rank(_cd)."""
    import tempfile

    import psycopg
    from ranx import Qrels, Run, evaluate
    from sqlalchemy import text as sql

    from charter.sources import Document
    from charter.spec._schema import Chunking

    raw = (data / "queries.jsonl").read_text(encoding="utf-8")
    queries = {q["_id"]: q["text"] for q in (json.loads(x) for x in raw.split("\n") if x.strip())}
    qrels: dict[str, dict[str, int]] = {}
    for line in (data / "qrels" / "test.tsv").read_text(encoding="utf-8").split("\n"):
        parts = line.strip().split("\t")
        if len(parts) == 3 and parts[2].isdigit():
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    judged = {q: t for q, t in queries.items() if q in qrels}
    docs = [
        Document(source_id="msmarco", doc_id=d["_id"], title="", text=d["text"], format="text")
        for d in corpus
    ]
    chunking = Chunking(max_tokens=512, overlap=0)
    admin = server.get_uri()
    name = "lexical_msmarco"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # type: ignore[arg-type]
        conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    url = admin.replace("/postgres?", f"/{name}?", 1).replace("postgresql://", "postgresql+psycopg://", 1)
    tmp = Path(tempfile.mkdtemp(dir=CACHE))
    indexes = {
        "ours-bm25-postgres": Index(open_store(url), _NullEmbedder()),
        "ours-bm25-in-memory": Index(open_store(f"sqlite:///{tmp / 'lex.db'}"), _NullEmbedder()),
    }
    with progress() as bar:
        for label, index in indexes.items():
            task = bar.add_task(f"index {label}", total=len(docs))
            for d in docs:
                index.upsert_document(d, frozenset({"public"}), chunking)
                bar.advance(task)
    runs: dict[str, dict[str, dict[str, float]]] = {}
    everyone = frozenset({"public"})
    for label, index in indexes.items():
        runs[label] = {
            q: {h.doc_id: h.score for h in index.search(everyone, t, k=100, mode="bm25")} or {"none": 0.0}
            for q, t in judged.items()
        }
    pg = indexes["ours-bm25-postgres"].store
    with pg.begin() as conn:
        conn.execute(
            sql(
                "CREATE TABLE lexical_fts AS SELECT d.doc_id, to_tsvector('english', c.text) AS tsv "
                "FROM retrieval_chunks c JOIN retrieval_documents d ON d.id = c.doc_pk"
            )
        )
        conn.execute(sql("CREATE INDEX ON lexical_fts USING gin (tsv)"))
    for label, rank in (
        ("postgres-ts_rank_cd", "ts_rank_cd(tsv, q)"),
        ("postgres-ts_rank", "ts_rank(tsv, q)"),
    ):
        run: dict[str, dict[str, float]] = {}
        with pg.connect() as conn:
            for q, t in judged.items():
                rows = conn.execute(
                    sql(
                        f"SELECT doc_id, {rank} AS s FROM lexical_fts, "
                        "CAST(replace(CAST(plainto_tsquery('english', :t) AS text), '&', '|') AS tsquery) q "
                        "WHERE tsv @@ q ORDER BY s DESC, doc_id LIMIT 100"
                    ),
                    {"t": t},
                ).all()
                run[q] = {r[0]: float(r[1]) for r in rows} or {"none": 0.0}
        runs[label] = run
    same = all(
        list(runs["ours-bm25-postgres"][q])[:10] == list(runs["ours-bm25-in-memory"][q])[:10] for q in judged
    )
    qr = Qrels(qrels)
    out: dict[str, Any] = {"judged_queries": len(judged), "postgres_top10_equals_in_memory": same}
    for label, run in runs.items():
        scores = evaluate(qr, Run(run), ["ndcg@10", "recall@10", "mrr"])
        out[label] = {m: round(float(v), 4) for m, v in scores.items()}
    console.print(out)
    for index in indexes.values():
        index.store.dispose()
    report["lexical_quality"] = out


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--chunks", type=int, default=1_000_000)
    ap.add_argument("--sqlite-sizes", default="100000,300000")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--skip-sqlite", action="store_true")
    ap.add_argument("--skip-pg", action="store_true")
    ap.add_argument("--lexical", action="store_true", help="only the lexical quality comparison")
    ap.add_argument("--bm25", action="store_true", help="also time BM25 alone on PostgreSQL: scan vs auto")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    corpus, queries = load_corpus(args.data)
    emb = get_embedder("minilm")
    vectors = base_vectors(corpus, emb.name)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}",
        "queries": len(queries),
        "k": K,
        "chunks_per_document": CHUNKS_PER_DOC,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    if args.lexical:
        lexical_quality(pg_server(), args.data, corpus, report)
        args.skip_pg = args.skip_sqlite = True
    if not args.skip_pg:
        synth = Synth(corpus, vectors, args.chunks)
        server = pg_server()
        url = pg_load(server, synth, emb.name, report)
        if args.bm25:
            pg_bm25_bench(url, queries, report)
        pg_search_bench(url, synth, queries, args.reps, report)
    if not args.skip_sqlite:
        import tempfile

        tmp = Path(tempfile.mkdtemp(dir=CACHE))
        report["sqlite"] = [
            sqlite_bench(tmp, lambda n: Synth(corpus, vectors, n), int(n), queries, args.reps, emb.name)
            for n in args.sqlite_sizes.split(",")
            if n
        ]
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text_ = json.dumps(report, indent=2)
    console.print(text_)
    if args.json:
        args.json.write_text(text_ + "\n")


if __name__ == "__main__":
    main()
