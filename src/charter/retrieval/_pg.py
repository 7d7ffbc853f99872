"""Search on PostgreSQL: pgvector dense retrieval and BM25 in SQL, permission filter inside both.

On SQLite, search loads an in-memory snapshot (``_search.py``). On PostgreSQL every query runs in the
database, so many stateless workers share one index without each holding (and reloading) a copy:

* **Permitted set.** Documents whose ACL (``retrieval_acl``) shares a token with the principal, restricted to
  the requested sources. Its size ``N`` and total length in terms (for BM25's average length) come from
  ``retrieval_chunk_vectors`` (one row per chunk) and are cached per (index version, tokens, sources): any
  write bumps the version, so the cache can never be stale.
* **Dense.** Exact top-M by inner product over the permitted chunks (``ORDER BY embedding <#> q`` with the
  filter in the ``WHERE``), or, when the permitted set is large and the vectors have the indexed dimension
  (384), the HNSW index with a raised ``hnsw.ef_search`` and over-fetch, the permission filter applied to
  the index's candidates in the same statement. pgvector 0.6 has no iterative index scans, so the path is
  chosen by selectivity: the HNSW path is taken only when the expected number of permitted candidates
  among ``ef_search`` is well above what is needed, and whenever it returns fewer than needed the exact
  scan runs instead — so the full k comes back whenever k chunks are readable.
* **BM25.** ``retrieval_postings`` holds (term, chunk, tf, chunk length). One statement takes the query
  terms' postings of the permitted chunks, computes each term's document frequency over those postings and
  scores Lucene BM25 (``k1 = 1.5``, ``b = 0.75``) with ``N`` and the average length of the permitted set:
  the same numbers as the in-memory BM25, and no statistic of a chunk the principal cannot read. When every
  chunk is readable, ``_pg_bm25`` computes the same top m faster (a streamed merge of the terms' postings, or
  MaxScore when a term is selective); the one statement stays for narrower readers, where it is faster.
* **Fusion** is :func:`charter.retrieval._search.fuse`, unchanged, applied to the union of both top-M
  lists; the adaptive fusion's identifier lead is decided from the codes' permitted document frequencies,
  which the BM25 statement returns. Every fusion is ``wb * bm25_norm + wd * dense_norm`` (under the lead,
  minus ``wb`` for a chunk with no query term) with weights and normalisation that depend
  only on each list's top ``depth`` scores (``M >= depth``, so the union has them exactly); rows outside
  both lists therefore score at most what a row at both lists' boundaries would (fusion is monotone in each
  score), so if the k-th fused score beats that bound the result equals the exact fused
  ranking over the whole permitted set (Fagin's threshold algorithm); otherwise M grows until it does or
  until M covers every permitted chunk. With the exact dense path the result is therefore identical to the
  in-memory search; with the HNSW path the dense list is approximate (recall measured in
  ``bench/scale_bench.py``).

Writes: :func:`write_chunks` adds a chunk's vector row and postings in the document's transaction
(``Index.upsert_document``); deleting chunks cascades. Chunks indexed before migration 0009 (or by another
embedder) get their vectors on the first search of a process (:meth:`PgSearch.backfill`).
"""

from __future__ import annotations

import math
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, bindparam, select, text

from charter.errors import Conflict
from charter.retrieval._lexical import K1, B
from charter.retrieval._pg_bm25 import (
    SEED_SHARE,
    PostingsCache,
    TermStatsCache,
    bm25_top,
    bm25_top_memory,
    postings_cache_size,
)
from charter.retrieval._search import clears_bound, fuse, fuse_parts
from charter.retrieval._types import Chunk, Hit
from charter.store.tables import chunks, documents, versions

if TYPE_CHECKING:
    from charter.retrieval._index import Index

F32 = npt.NDArray[np.float32]

INDEXED_DIM = 384  # the HNSW index of migration 0009 covers embedding::vector(384)
EXACT_MAX_ROWS = 20_000  # at most this many permitted chunks: always the exact scan
EF_SEARCH_MAX = 1000  # pgvector's upper bound for hnsw.ef_search
HNSW_MARGIN = 2.0  # expected permitted candidates must be this many times what is needed
HNSW_MIN_RESULTS = 20  # permitted chunks the HNSW path must return (at least 2k)
HNSW_MIN_EF = 200


def vector_literal(v: npt.NDArray[np.float32]) -> str:
    """pgvector's text form; Python's float repr round-trips each float32 exactly."""
    return "[" + ",".join(map(repr, np.asarray(v, dtype=np.float32).tolist())) + "]"


# ---------------------------------------------------------------------------------------------- writes
def write_chunks(
    conn: Connection,
    doc_pk: int,
    model: str,
    positions: list[int],
    vectors: npt.NDArray[np.float32],
    term_lists: list[list[str]],
) -> None:
    """The vector rows and postings of a document's freshly inserted chunks (same transaction)."""
    ids = dict(
        conn.execute(select(chunks.c.position, chunks.c.id).where(chunks.c.doc_pk == doc_pk)).tuples().all()
    )
    write_chunk_rows(
        conn,
        model,
        [(int(ids[p]), doc_pk, v, t) for p, v, t in zip(positions, vectors, term_lists, strict=True)],
    )


def write_chunk_rows(
    conn: Connection, model: str, items: list[tuple[int, int, npt.NDArray[np.float32], list[str]]]
) -> None:
    """Upsert (chunk id, document pk, vector, analysed terms) rows into the vector and postings tables."""
    vec_rows: list[dict[str, Any]] = []
    post_rows: list[dict[str, Any]] = []
    for cid, doc_pk, vec, terms in items:
        vec_rows.append(
            {
                "c": cid,
                "d": doc_pk,
                "l": len(terms),
                "m": model,
                "n": int(vec.shape[0]),
                "e": vector_literal(vec),
            }
        )
        for term, tf in Counter(terms).items():
            post_rows.append({"t": term, "c": cid, "d": doc_pk, "f": tf, "l": len(terms)})
    if vec_rows:
        conn.execute(
            text(
                "INSERT INTO retrieval_chunk_vectors (chunk_id, doc_pk, length, model, dim, embedding) "
                "VALUES (:c, :d, :l, :m, :n, CAST(:e AS vector)) ON CONFLICT (chunk_id) DO UPDATE SET "
                "doc_pk = EXCLUDED.doc_pk, length = EXCLUDED.length, model = EXCLUDED.model, "
                "dim = EXCLUDED.dim, embedding = EXCLUDED.embedding"
            ),
            vec_rows,
        )
    if post_rows:
        conn.execute(
            text(
                "INSERT INTO retrieval_postings (term, chunk_id, doc_pk, tf, length) "
                "VALUES (:t, :c, :d, :f, :l) ON CONFLICT DO NOTHING"
            ),
            post_rows,
        )


# ---------------------------------------------------------------------------------------------- search
@dataclass
class Ranked:
    pks: list[int]
    fused: F32
    bm25: F32
    bm25_norm: F32
    dense: F32
    dense_norm: F32
    path: str = "exact"  # "exact" | "hnsw" (how the dense list was found), for benchmarks and tests


@dataclass
class _Cand:
    key: tuple[str, str, int]  # canonical order: source, document, position
    dense: float = 0.0
    bm25: float = 0.0
    present: bool = False  # matches a query term


def _perm_sql(sources: bool) -> str:
    """The permitted documents, for ``doc_pk IN (...)`` — the only rows any statement below ever scores.

    (A plain subquery, not a materialised CTE: the planner semi-joins it without de-duplicating first.)
    """
    if sources:
        return (
            "SELECT a.doc_pk FROM retrieval_acl a JOIN retrieval_documents d ON d.id = a.doc_pk "
            "WHERE a.token = ANY(:tokens) AND d.source_id = ANY(:sources)"
        )
    return "SELECT a.doc_pk FROM retrieval_acl a WHERE a.token = ANY(:tokens)"


def _bm25_term(df: float, n: int, tf: float, length: float, avgdl: float) -> float:
    idf = math.log1p((n - df + 0.5) / (df + 0.5))
    return idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * length / max(avgdl, 1e-9)))


def hnsw_ef_search(selectivity: float, need: int, margin: float = HNSW_MARGIN) -> int | None:
    """``ef_search`` that brings back ``need`` permitted chunks with ``margin`` to spare when a share
    ``selectivity`` of the indexed chunks is permitted; ``None`` when that is beyond pgvector's limit (then
    the exact scan is the right choice)."""
    ef = math.ceil(need * margin / max(selectivity, 1e-9))
    if ef > EF_SEARCH_MAX:
        return None
    return max(ef, HNSW_MIN_EF)


class PgSearch:
    """Permission-filtered hybrid search in PostgreSQL for one :class:`Index` (thread-safe)."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._lock = threading.Lock()
        self._stats: OrderedDict[tuple[Any, ...], tuple[int, int, int, int]] = OrderedDict()
        self._backfilled: str | None = None
        self.exact_max_rows = EXACT_MAX_ROWS  # tunable (benchmarks, tests)
        self.hnsw_margin = HNSW_MARGIN
        self.last_path = ""
        # "auto" (every chunk readable: the lists in memory, or — with CHARTER_PG_POSTINGS_CACHE=0 — MaxScore or
        # the merge by cost; narrower readers: the one statement), "memory", "maxscore", "merge", or "scan" (the
        # one-statement reference)
        self.bm25_method = "auto"
        self.bm25_seed = SEED_SHARE
        self.last_bm25_how = ""
        self._term_stats = TermStatsCache()  # per-term statistics when every chunk is readable (_pg_bm25)
        # whole posting lists in memory when every chunk is readable ("auto"/"memory"; 0 postings: off)
        self._postings = PostingsCache(postings_cache_size())

    # -------------------------------------------------------------------------------------- backfill
    def backfill(self) -> int:
        """Vector rows for chunks that have none for the current embedder (once per process and model)."""
        model = self.index.embedder.name
        if self._backfilled == model:
            return 0
        c, d = chunks.c, documents.c
        sql = text(
            "SELECT c.id FROM retrieval_chunks c LEFT JOIN retrieval_chunk_vectors v ON v.chunk_id = c.id "
            "WHERE v.chunk_id IS NULL OR v.model <> :m"
        )
        with self.index.store.connect() as conn:
            todo = [int(r[0]) for r in conn.execute(sql, {"m": model})]
        for start in range(0, len(todo), 500):
            part = todo[start : start + 500]
            with self.index.store.connect() as conn:
                rows = conn.execute(
                    select(c.id, c.doc_pk, c.text, c.heading, c.terms, d.title)
                    .select_from(chunks.join(documents, d.id == c.doc_pk))
                    .where(c.id.in_(part))
                ).all()
            texts = [Chunk("", "", r.title, r.heading, 0, r.text, 0).embed_text for r in rows]
            _, vecs, new = self.index._vectors_for(texts)
            with self.index.store.begin() as conn:
                self.index._cache_vectors(conn, new)
                write_chunk_rows(
                    conn,
                    model,
                    [(int(r.id), int(r.doc_pk), v, r.terms.split()) for r, v in zip(rows, vecs, strict=True)],
                )
        self._backfilled = model
        return len(todo)

    # -------------------------------------------------------------------------------------- statistics
    @staticmethod
    def _content_version(conn: Connection) -> tuple[int, str]:
        """The content counter and its stamp in this snapshot (the stamp: a database rebuilt from scratch
        never repeats a (counter, stamp) pair)."""
        row = conn.execute(
            select(versions.c.counter, versions.c.stamp).where(versions.c.name == "content")
        ).first()
        return (int(row[0]), str(row[1])) if row is not None else (0, "")

    def _versions(self, conn: Connection) -> tuple[int, int]:
        rows = dict(conn.execute(select(versions.c.name, versions.c.counter)).tuples().all())
        return int(rows.get("content", 0)), int(rows.get("acl", 0))

    def _permitted_stats(
        self, conn: Connection, params: dict[str, Any], has_sources: bool
    ) -> tuple[int, int, int, int]:
        """(permitted chunks, their total length in terms, chunks with a vector of this model, all chunks)."""
        key = (
            self._versions(conn),
            tuple(params["tokens"]),
            tuple(params.get("sources") or ()),
            params["model"],
        )
        with self._lock:
            hit = self._stats.get(key)
            if hit is not None:
                self._stats.move_to_end(key)
                return hit
        row = conn.execute(
            text(
                "SELECT count(*), coalesce(sum(v.length), 0) FROM retrieval_chunk_vectors v "
                f"WHERE v.doc_pk IN ({_perm_sql(has_sources)})"
            ),
            params,
        ).one()
        total = conn.execute(
            text("SELECT count(*) FILTER (WHERE model = :model), count(*) FROM retrieval_chunk_vectors"),
            params,
        ).one()
        stats = (int(row[0]), int(row[1]), int(total[0]), int(total[1]))
        with self._lock:
            self._stats[key] = stats
            while len(self._stats) > 1024:
                self._stats.popitem(last=False)
        return stats

    # -------------------------------------------------------------------------------------- the lists
    @staticmethod
    def _filter(column: str, has_sources: bool, everything: bool) -> str:
        """`` AND <column> IN (permitted documents)``; nothing when every chunk is permitted (same snapshot)."""
        return "" if everything else f" AND {column} IN ({_perm_sql(has_sources)})"

    def _dense_exact(
        self, conn: Connection, params: dict[str, Any], has_sources: bool, m: int, everything: bool = False
    ) -> list[tuple[int, float]]:
        sql = text(
            "SELECT v.chunk_id, -(v.embedding <#> CAST(:q AS vector)) AS s FROM retrieval_chunk_vectors v "
            f"WHERE v.model = :model{self._filter('v.doc_pk', has_sources, everything)} "
            "ORDER BY s DESC, v.chunk_id LIMIT :m"
        )
        return [(int(a), float(b)) for a, b in conn.execute(sql, {**params, "m": m})]

    @staticmethod
    def hnsw_sql(has_sources: bool) -> str:
        """The HNSW statement: the index's ``:ef`` nearest, then the permission (and source) filter, top ``:m``."""
        src = (
            "AND EXISTS (SELECT 1 FROM retrieval_documents d WHERE d.id = c.doc_pk "
            "AND d.source_id = ANY(:sources)) "
            if has_sources
            else ""
        )
        return (
            "SELECT c.chunk_id, -c.dist AS s FROM ("
            f"  SELECT v.chunk_id, v.doc_pk, v.model, v.embedding::vector({INDEXED_DIM}) "
            f"    <#> CAST(:q AS vector({INDEXED_DIM})) AS dist "
            f"  FROM retrieval_chunk_vectors v WHERE v.dim = {INDEXED_DIM} "
            f"  ORDER BY v.embedding::vector({INDEXED_DIM}) <#> CAST(:q AS vector({INDEXED_DIM})) LIMIT :ef"
            ") c WHERE c.model = :model "
            "AND EXISTS (SELECT 1 FROM retrieval_acl a WHERE a.doc_pk = c.doc_pk AND a.token = ANY(:tokens)) "
            f"{src}ORDER BY c.dist, c.chunk_id LIMIT :m"
        )

    def _dense_hnsw(
        self, conn: Connection, params: dict[str, Any], has_sources: bool, m: int, ef: int
    ) -> list[tuple[int, float]]:
        """Top-m permitted chunks among the HNSW index's ``ef`` nearest (the filter is in the statement).

        Sequential scans are switched off for this one statement: the path was chosen for the index, and on a
        small table the planner would otherwise sort every row (exact, but not what was chosen).
        """
        conn.execute(text(f"SET LOCAL hnsw.ef_search = {int(ef)}"))
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        try:
            rows = conn.execute(text(self.hnsw_sql(has_sources)), {**params, "m": m, "ef": ef}).all()
        finally:
            conn.execute(text("SET LOCAL enable_seqscan = on"))
        return [(int(a), float(b)) for a, b in rows]

    def _bm25_top(
        self, conn: Connection, params: dict[str, Any], has_sources: bool, m: int, everything: bool = False
    ) -> tuple[list[tuple[int, float]], dict[str, int]]:
        """Top-m permitted chunks by BM25 over the permitted set, and each query term's permitted df.

        ``bm25_method``: ``"auto"`` (the default) takes ``_pg_bm25`` when every chunk is readable — the posting
        lists kept in memory (``PostingsCache``), or MaxScore / the merge when that cache is off (all exact) —
        and the one statement otherwise; ``"scan"`` always the one statement.
        """
        # for a narrower reader the one statement, whose permission semi-join runs once (measured at 1M chunks:
        # docs/benchmarks.md); the caches hold whole-index statistics and lists, so they serve only readers who
        # may read every chunk
        if everything and self.bm25_method in ("auto", "memory") and self._postings.max_postings > 0:
            top, dfs = bm25_top_memory(conn, params, m, self._postings, self._content_version(conn))
            self.last_bm25_how = "memory"
            return top, dfs
        if self.bm25_method not in ("scan", "memory") and (everything or self.bm25_method != "auto"):
            filt = self._filter("p.doc_pk", has_sources, everything)
            cache, version = (self._term_stats, self._content_version(conn)) if everything else (None, None)
            top, dfs, how = bm25_top(conn, params, filt, m, self.bm25_seed, self.bm25_method, cache, version)
            self.last_bm25_how = how
            return top, dfs
        self.last_bm25_how = "scan"
        return self._bm25_top_scan(conn, params, has_sources, m, everything)

    def _bm25_top_scan(
        self, conn: Connection, params: dict[str, Any], has_sources: bool, m: int, everything: bool = False
    ) -> tuple[list[tuple[int, float]], dict[str, int]]:
        """Top-m by scoring every permitted posting of the query terms in one statement (the reference)."""
        sql = text(
            "WITH p AS MATERIALIZED (SELECT p.term, p.chunk_id, p.tf, p.length FROM retrieval_postings p "
            f"  WHERE p.term = ANY(:terms){self._filter('p.doc_pk', has_sources, everything)}), "
            "df AS (SELECT term, count(*) AS df FROM p GROUP BY term), "
            # each query term's weight x idf, from its document frequency over the permitted postings
            "w AS (SELECT q.term, q.w * ln(1.0::float8 + (CAST(:n AS float8) - df.df + 0.5::float8) "
            "  / (df.df + 0.5::float8)) AS idfw "
            "  FROM unnest(CAST(:terms AS text[]), CAST(:weights AS int[])) AS q(term, w) "
            "  JOIN df ON df.term = q.term), "
            "s AS (SELECT p.chunk_id, sum(w.idfw * p.tf * CAST(:k1p1 AS float8) / (p.tf + CAST(:k1 AS float8) "
            "  * (1.0::float8 - CAST(:b AS float8) + CAST(:b AS float8) * p.length / CAST(:avgdl AS float8)))) AS s "
            "  FROM p JOIN w ON w.term = p.term GROUP BY p.chunk_id) "
            "SELECT 0 AS kind, chunk_id::text, s FROM (SELECT chunk_id, s FROM s ORDER BY s DESC, chunk_id "
            "LIMIT :m) top "
            "UNION ALL SELECT 1, term, df FROM df"
        )
        top: list[tuple[int, float]] = []
        dfs: dict[str, int] = {}
        for kind, ident, value in conn.execute(sql, {**params, "m": m}):
            if kind == 0:
                top.append((int(ident), float(value)))
            else:
                dfs[str(ident)] = int(value)
        top.sort(key=lambda t: (-t[1], t[0]))
        return top, dfs

    # -------------------------------------------------------------------------------------- ranking
    def _params(
        self, tokens: frozenset[str], qvec: F32 | None, terms: list[str], sources: set[str] | None
    ) -> dict[str, Any]:
        weights = Counter(terms)
        params: dict[str, Any] = {
            "tokens": sorted(tokens),
            "model": self.index.embedder.name,
            "terms": list(weights),
            "weights": list(weights.values()),
            "k1": K1,
            "k1p1": K1 + 1.0,
            "b": B,
        }
        if sources is not None:
            params["sources"] = sorted(sources)
        if qvec is not None:
            params["q"] = vector_literal(qvec)
        return params

    def bm25_top(
        self, tokens: frozenset[str], terms: list[str], m: int, sources: set[str] | None = None
    ) -> tuple[list[tuple[int, float]], dict[str, int]]:
        """The permitted BM25 top ``m`` (chunk pk, score) and the terms' permitted df, by ``bm25_method``
        (for tests and benchmarks; ``rank`` calls the same statements inside its snapshot)."""
        params = self._params(tokens, None, terms, sources)
        with self.index.store.begin() as conn:
            conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
            n, total_len, _, n_all = self._permitted_stats(conn, params, sources is not None)
            if n == 0 or not terms:
                return [], {}
            params["n"], params["avgdl"] = n, max(total_len / n, 1e-9)
            return self._bm25_top(conn, params, sources is not None, m, n == n_all)

    def rank(
        self,
        tokens: frozenset[str],
        qvec: F32 | None,
        terms: list[str],
        k: int,
        fusion: Any,
        sources: set[str] | None,
        mode: str,
        identifiers: frozenset[str] = frozenset(),
    ) -> Ranked:
        """The exact (or, on the HNSW path, approximate-dense) permitted top ``k``; see the module docstring.

        ``identifiers``: the query's identifier terms; the adaptive fusion's lead is decided from their
        permitted document frequencies, as in memory (``_search.score``).
        """
        self.backfill()
        empty = np.zeros(0, dtype=np.float32)
        none = Ranked([], empty, empty, empty, empty, empty)
        if not tokens or (sources is not None and not sources):
            return none
        params = self._params(tokens, qvec, terms, sources)
        has_sources = sources is not None
        use_dense = mode != "bm25" and qvec is not None
        use_bm25 = mode != "dense" and bool(terms)
        with self.index.store.begin() as conn:
            # one snapshot for every statement of the ranking (as the in-memory snapshot): the change counters,
            # the permitted-set statistics and the lists agree even while a sync commits; read-only, so
            # REPEATABLE READ never fails with a serialisation error
            conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
            conn.execute(text("SET LOCAL work_mem = '64MB'"))  # hash joins over large permitted sets
            n, total_len, n_model, n_all = self._permitted_stats(conn, params, has_sources)
            everything = n == n_all  # every chunk is readable: the permission filter would keep every row
            if n == 0:
                return none
            params["n"] = n
            params["avgdl"] = max(total_len / n, 1e-9)
            depth = int(getattr(fusion, "depth", 100)) if mode == "hybrid" else 0
            m = max(depth, 2 * k, 16)
            # the HNSW path must bring back at least this many permitted chunks (it may bring fewer than m:
            # then the fusion's normalisation sees the dense list it has — the path is approximate anyway)
            hnsw_need = max(2 * k, HNSW_MIN_RESULTS)
            hnsw = self._hnsw_ef(n, n_model, hnsw_need) if use_dense else None
            while True:
                dense_list: list[Any] = []
                dense_exact = True
                if use_dense:
                    dense_list, hnsw = self._dense_list(
                        conn, params, has_sources, m, n, hnsw, hnsw_need, everything
                    )
                    dense_exact = hnsw is None or m >= n
                bm25_list, dfs = (
                    self._bm25_top(conn, params, has_sources, m, everything) if use_bm25 else ([], {})
                )
                ranked = self._fuse_candidates(
                    conn,
                    params,
                    dense_list,
                    bm25_list,
                    dfs,
                    k,
                    m,
                    n,
                    fusion,
                    mode,
                    use_dense,
                    use_bm25,
                    dense_exact,
                    any(dfs.get(t, 0) > 0 for t in identifiers),
                )
                if ranked is not None:
                    ranked.path = "exact" if dense_exact else "hnsw"
                    self.last_path = ranked.path
                    return ranked
                if not dense_exact:
                    hnsw = None  # the approximate lists could not settle the top k: rank exactly
                else:
                    m = min(m * 4, n)

    def _dense_list(
        self,
        conn: Connection,
        params: dict[str, Any],
        has_sources: bool,
        m: int,
        n: int,
        hnsw: int | None,
        hnsw_need: int,
        everything: bool,
    ) -> tuple[list[Any], int | None]:
        """The dense candidate list of depth ``m``, and the HNSW ``ef_search`` still in use (``None``: the
        list is exact). The HNSW path is left for the exact scan when it brings back too few permitted
        chunks, or when ``m`` covers every permitted chunk anyway."""
        if hnsw and m < n:
            found = self._dense_hnsw(conn, params, has_sources, m, hnsw)
            if len(found) >= min(hnsw_need, n):
                return found, hnsw
            hnsw = None  # too few permitted candidates: exact scan
        return self._dense_exact(conn, params, has_sources, m, everything), hnsw

    def _hnsw_ef(self, n: int, n_model: int, need: int) -> int | None:
        """``ef_search`` for the HNSW path, or ``None`` when the exact scan is the right (or only) choice."""
        if n <= self.exact_max_rows or n_model == 0 or self.index.embedder.dim != INDEXED_DIM:
            return None
        return hnsw_ef_search(n / n_model, need, self.hnsw_margin)

    def _fuse_candidates(
        self,
        conn: Connection,
        params: dict[str, Any],
        dense_list: list[tuple[int, float]],
        bm25_list: list[tuple[int, float]],
        dfs: dict[str, int],
        k: int,
        m: int,
        n: int,
        fusion: Any,
        mode: str,
        use_dense: bool,
        use_bm25: bool,
        dense_exact: bool = True,
        lead: bool = False,
    ) -> Ranked | None:
        """Fuse the union of both lists; ``None`` when rows outside them might still reach the top k."""
        cands: dict[int, _Cand] = {}
        for cid, s in dense_list:
            cands[cid] = _Cand(("", "", 0), dense=s)
        for cid, s in bm25_list:
            c = cands.setdefault(cid, _Cand(("", "", 0)))
            c.bm25, c.present = s, True
        if not cands:
            empty = np.zeros(0, dtype=np.float32)
            return Ranked([], empty, empty, empty, empty, empty)
        ids = list(cands)
        self._complete(conn, params, cands, dense_list, bm25_list, dfs, n, use_dense, use_bm25)
        order = sorted(ids, key=lambda i: cands[i].key)
        dense = np.array([cands[i].dense for i in order], dtype=np.float32)
        bm25 = np.array([cands[i].bm25 for i in order], dtype=np.float32)
        present = np.array([cands[i].present for i in order], dtype=np.bool_)
        dense_done = not use_dense or (dense_exact and (len(dense_list) < m or len(dense_list) >= n))
        bm25_done = not use_bm25 or len(bm25_list) < m
        d_edge = dense_list[-1][1] if dense_list else 0.0
        b_edge = bm25_list[-1][1] if bm25_list else 0.0
        if mode == "bm25":
            fused, nb, nd = bm25.copy(), bm25.copy(), np.zeros(len(order), dtype=np.float32)
            fused[~present] = -np.inf
            done, bound = bm25_done, b_edge
        elif mode == "dense":
            fused, nb, nd = dense.copy(), np.zeros(len(order), dtype=np.float32), dense.copy()
            done, bound = dense_done, d_edge
        else:
            fused, nb, nd = fuse(bm25, present, dense, fusion, lead)
            done = use_dense and dense_done  # every permitted chunk is a candidate
            # the fused score of a row at both lists' boundaries bounds every row outside them; appended as
            # a sentinel it cannot move the normalisation (it is not above either list's m-th >= depth-th)
            sb = np.append(bm25, np.float32(b_edge if not bm25_done else 0.0))
            sp = np.append(present, not bm25_done)
            sd = np.append(dense, np.float32(d_edge if use_dense else 0.0))
            # the weights are the query's constants (functions of each list's top `depth` scores), the same
            # with or without the sentinel
            _, snb, snd, wb, wd = fuse_parts(sb, sp, sd, fusion, lead)
            bound = wb * max(float(snb[-1]), 0.0) + wd * float(snd[-1])
        idx = np.arange(len(order))
        ranked = idx[np.lexsort((idx, -fused))]
        if mode == "bm25":
            ranked = ranked[np.isfinite(fused[ranked])]
        top = ranked[:k]
        if not done and (len(top) < k or not clears_bound(float(fused[top[-1]]), bound)):
            return None  # a row outside both lists might tie or win: widen them
        return Ranked([order[i] for i in top], fused[top], bm25[top], nb[top], dense[top], nd[top])

    def _complete(
        self,
        conn: Connection,
        params: dict[str, Any],
        cands: dict[int, _Cand],
        dense_list: list[tuple[int, float]],
        bm25_list: list[tuple[int, float]],
        dfs: dict[str, int],
        n: int,
        use_dense: bool,
        use_bm25: bool,
    ) -> None:
        """Fill in each candidate's document key, and the dense / BM25 score of candidates that only the other
        list brought (exact: the same formulas as the lists)."""
        ids = list(cands)
        dense_known = {cid for cid, _ in dense_list}
        bm25_known = {cid for cid, _ in bm25_list}
        for cid, source_id, doc_id, position in conn.execute(
            select(chunks.c.id, documents.c.source_id, documents.c.doc_id, chunks.c.position)
            .select_from(chunks.join(documents, documents.c.id == chunks.c.doc_pk))
            .where(chunks.c.id.in_(ids))
        ):
            cands[int(cid)].key = (source_id, doc_id, int(position))
        if use_dense and (missing := [i for i in ids if i not in dense_known]):
            for cid, s in conn.execute(
                text(
                    "SELECT chunk_id, -(embedding <#> CAST(:q AS vector)) FROM retrieval_chunk_vectors "
                    "WHERE chunk_id IN :ids AND model = :model"
                ).bindparams(bindparam("ids", expanding=True)),
                {**params, "ids": missing},
            ):
                cands[int(cid)].dense = float(s)
        if use_bm25 and (missing := [i for i in ids if i not in bm25_known]):
            weights = dict(zip(params["terms"], params["weights"], strict=True))
            for cid, term, tf, length in conn.execute(
                text(
                    "SELECT chunk_id, term, tf, length FROM retrieval_postings "
                    "WHERE chunk_id IN :ids AND term IN :terms"
                ).bindparams(bindparam("ids", expanding=True), bindparam("terms", expanding=True)),
                {"ids": missing, "terms": params["terms"]},
            ):
                c = cands[int(cid)]
                c.bm25 += weights[term] * _bm25_term(dfs[term], n, tf, length, params["avgdl"])
                c.present = True

    # -------------------------------------------------------------------------------------- hits
    def materialise(self, ranked: Ranked, tokens: frozenset[str], min_score: float) -> list[Hit] | None:
        """Hits after re-checking each document's current ACL; ``None`` if one no longer admits them."""
        from charter.retrieval._index import hits_for

        return hits_for(self.index.store, list(ranked.pks), ranked, tokens, min_score)


def pg_search(
    index: Index,
    tokens: frozenset[str],
    qvec: F32 | None,
    terms: list[str],
    k: int,
    fusion: Any,
    sources: set[str] | None,
    min_score: float,
    mode: str,
    identifiers: frozenset[str] = frozenset(),
) -> list[Hit]:
    """``Index.search`` on PostgreSQL: rank in the database, then re-check every hit's ACL (3 attempts)."""
    searcher = getattr(index, "_charter_pg_search", None)
    if not isinstance(searcher, PgSearch):
        searcher = PgSearch(index)
        index._charter_pg_search = searcher  # type: ignore[attr-defined]
    for _attempt in range(3):
        ranked = searcher.rank(tokens, qvec, terms, k, fusion, sources, mode, identifiers)
        hits = searcher.materialise(ranked, tokens, min_score)
        if hits is not None:
            return hits
    raise Conflict("the index kept changing during the search; try again")
