"""BM25 top-m on PostgreSQL when every chunk is readable: the merge, or MaxScore for selective queries (exact).

The one statement (``PgSearch._bm25_top_scan``) materialises the query terms' permitted postings, counts
their ``df`` with a ``GROUP BY``, joins the weights and hash-aggregates every chunk: ~250 ms at 1,000,000
chunks (~75,000–100,000 postings), although reading those postings is an index-only scan of ~15–20 ms.
Measured in ``docs/benchmarks.md`` ("BM25 at 1M on PostgreSQL"); the design is in ``docs/retrieval.md``.

1. **Per-term statistics over the permitted set** (:func:`term_stats`: one index-only pass, counting only):
   each term's permitted ``df`` (its idf, exactly as before), its largest ``tf`` and its shortest chunk
   length. BM25's term part ``tf (k1 + 1) / (tf + k1 (1 - b + b len / avgdl))`` grows with ``tf`` and
   shrinks with ``len``, so ``ub = w idf part(max tf, min len)`` bounds the term's contribution to any
   permitted chunk (``w``: the term's count in the query). Nothing is stored ahead of time: writes need no
   extra bookkeeping and no statistic can go stale or leak across readers. When every chunk is readable the
   permitted statistics are the index's own, so a process-local :class:`TermStatsCache` keeps them for the
   content version they were read at (a repeated term costs no pass; any content write empties it).
2. **The merge** (:func:`bm25_top_merge`): one index range per term in chunk order, merged and summed as the
   streams pass (Merge Append + GroupAggregate, no hash table), the idf weights already known.
3. **MaxScore** (Turtle & Flood 1995; :func:`_maxscore`) when a term is selective: ``theta`` = the m-th best
   full score among the ``SEED_FULL x m`` best chunks on the rarest terms (a lower bound of the true m-th
   score); the longest prefix of the terms sorted by ``ub`` whose bounds sum below ``theta`` is
   non-essential (a chunk holding only those cannot reach the top m); one statement aggregates the essential
   terms' postings, raises ``theta`` to the m-th best essential part, and looks the other terms up one at a
   time, dropping a chunk as soon as its score so far plus the bounds still to come is below ``theta``.

Both return the exact top m (ids, scores, ``chunk_id`` tie-break) of the permitted BM25 ranking: the bounds
are inflated by a relative ``SLACK`` against float rounding and a tie at ``theta`` is kept. ``bm25_top``
chooses by cost only (``MERGE_SHARE``).
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import Connection, text

from charter.retrieval._lexical import K1, B

SEED_SHARE = 0.25  # the seed: the rarest terms' lists, up to this share of the query's postings
SEED_FULL = 2  # the seed scores this many times m chunks over every term
MERGE_SHARE = 0.1  # MaxScore reads the essential lists (hash-aggregated) and looks up the rest: past this
# share of the postings, streaming all of them through the merge was faster at 1M chunks (docs/benchmarks.md)
SLACK = 1e-9  # relative inflation of every bound, against float rounding


@dataclass
class TermStat:
    term: str
    weight: int  # occurrences in the query
    df: int  # permitted chunks holding the term
    max_tf: int
    min_len: int
    idfw: float = 0.0  # weight x idf over the permitted set
    ub: float = 0.0  # upper bound of the term's contribution to any permitted chunk


class TermStatsCache:
    """Each term's statistics over the *whole* index — ``(df, max tf, min length)``, or ``None`` for a term no
    chunk holds — for one content version (thread-safe).

    Only for searches where every chunk is readable: there the permitted statistics are the index's, the same
    for every such reader, and they change only when content does — and every content write bumps the
    version in its own transaction (``retrieval_versions``), read here in the search's snapshot. A new
    version empties the cache, so a statistic is never used with content other than its own; narrower
    readers never use it (their statistics depend on what they may read).
    """

    def __init__(self, max_terms: int = 100_000) -> None:
        self.max_terms = max_terms
        self._lock = threading.Lock()
        self._version: Hashable = None
        self._terms: OrderedDict[str, tuple[int, int, int] | None] = OrderedDict()

    def lookup(
        self, version: Hashable, terms: list[str]
    ) -> tuple[dict[str, tuple[int, int, int] | None], list[str]]:
        """The cached statistics of ``terms`` at ``version``, and the terms not cached."""
        with self._lock:
            if version != self._version:
                return {}, list(terms)
            known = {t: self._terms[t] for t in terms if t in self._terms}
            for t in known:
                self._terms.move_to_end(t)
        return known, [t for t in terms if t not in known]

    def store(self, version: Hashable, stats: dict[str, tuple[int, int, int] | None]) -> None:
        with self._lock:
            if version != self._version:
                self._version, self._terms = version, OrderedDict()
            self._terms.update(stats)
            while len(self._terms) > self.max_terms:
                self._terms.popitem(last=False)


def term_stats(
    conn: Connection,
    params: dict[str, Any],
    filt: str,
    n: int,
    avgdl: float,
    cache: TermStatsCache | None = None,
    version: Hashable = None,
) -> list[TermStat]:
    """The query terms that occur in a permitted chunk, with their permitted statistics and bounds.

    ``cache`` (with the snapshot's content ``version``): statistics over the whole index, for searches
    without a permission filter (``filt`` empty) — only the terms it does not hold are read.
    """
    if cache is not None and filt:
        raise ValueError("term statistics are cached only for searches where every chunk is readable")
    weights = dict(zip(params["terms"], params["weights"], strict=True))
    known: dict[str, tuple[int, int, int] | None] = {}
    todo = list(params["terms"])
    if cache is not None:
        known, todo = cache.lookup(version, todo)
    read: dict[str, tuple[int, int, int] | None] = dict.fromkeys(todo)
    if todo:
        for term, df, max_tf, min_len in conn.execute(
            text(
                "SELECT p.term, count(*), max(p.tf), min(p.length) FROM retrieval_postings p "
                f"WHERE p.term = ANY(:terms){filt} GROUP BY p.term"
            ),
            {**params, "terms": todo},
        ):
            read[str(term)] = (int(df), int(max_tf), int(min_len))
        if cache is not None:
            cache.store(version, read)
    rows = sorted((t, *v) for t, v in {**known, **read}.items() if v is not None)
    out = []
    for term, df, max_tf, min_len in rows:
        s = TermStat(str(term), int(weights[term]), int(df), int(max_tf), int(min_len))
        s.idfw = s.weight * math.log1p((n - s.df + 0.5) / (s.df + 0.5))
        part = s.max_tf * (K1 + 1.0) / (s.max_tf + K1 * (1.0 - B + B * s.min_len / max(avgdl, 1e-9)))
        s.ub = s.idfw * part * (1.0 + SLACK)
        out.append(s)
    return out


def _score_sql(filt: str, rest_ubs: list[float]) -> str:
    """Chunks of the essential terms' permitted postings, scored over every query term, pruned as they go.

    ``e``: each chunk's essential part. ``t``: theta, raised to the m-th best essential part (also a lower
    bound of the m-th best score). Then the other terms are looked up one at a time by primary key, largest
    bound first; before each lookup a chunk whose score so far plus the bounds still to come is below theta
    is dropped (it cannot reach the top m).
    """
    part = (
        "w.idfw * p.tf * CAST(:k1p1 AS float8) / (p.tf + CAST(:k1 AS float8) * (1.0::float8 - CAST(:b AS float8)"
        " + CAST(:b AS float8) * p.length / CAST(:avgdl AS float8)))"
    )
    ctes = [
        "w AS (SELECT term, idfw FROM unnest(CAST(:all_terms AS text[]), CAST(:idfws AS float8[])) AS q(term, idfw))",
        f"s0 AS (SELECT p.chunk_id, sum({part}) AS s FROM retrieval_postings p JOIN w ON w.term = p.term "
        f"WHERE p.term = ANY(:ess){filt} GROUP BY p.chunk_id)",
        "t AS (SELECT greatest(CAST(:theta AS float8), coalesce((SELECT s FROM s0 ORDER BY s DESC "
        f"OFFSET :m1 LIMIT 1), '-infinity'::float8)) - {SLACK} * (1 + abs(CAST(:theta AS float8))) AS theta)",
    ]
    rpart = part.replace("w.idfw", "CAST(:rw{i} AS float8)")
    for i, _ in enumerate(rest_ubs):
        ctes.append(
            f"s{i + 1} AS MATERIALIZED (SELECT c.chunk_id, c.s + coalesce({rpart.format(i=i)}, 0) AS s "
            f"FROM s{i} c CROSS JOIN t LEFT JOIN retrieval_postings p ON p.term = :rt{i} AND p.chunk_id = c.chunk_id "
            f"WHERE c.s + CAST(:rub{i} AS float8) >= t.theta)"
        )
    last = f"s{len(rest_ubs)}"
    return (
        "WITH " + ", ".join(ctes) + f" SELECT c.chunk_id, c.s FROM {last} c, t WHERE c.s >= t.theta "
        "ORDER BY c.s DESC, c.chunk_id LIMIT :m"
    )


def _seed_theta(
    conn: Connection, params: dict[str, Any], filt: str, stats: list[TermStat], seed: list[TermStat], m: int
) -> float:
    """A lower bound of the m-th best score: the chunks with the best ``SEED_FULL x m`` scores over the
    ``seed`` terms alone, scored over every term (the other terms looked up by primary key); the m-th best of
    those full scores (0 if fewer than m permitted chunks hold a seed term). Real chunks' real scores, so
    at least m chunks score that much."""
    part = (
        "w.idfw * p.tf * CAST(:k1p1 AS float8) / (p.tf + CAST(:k1 AS float8) * (1.0::float8 - CAST(:b AS float8)"
        " + CAST(:b AS float8) * p.length / CAST(:avgdl AS float8)))"
    )
    sql = (
        "WITH w AS (SELECT term, idfw FROM unnest(CAST(:all_terms AS text[]), CAST(:idfws AS float8[])) "
        "  AS q(term, idfw)), "
        f"sp AS MATERIALIZED (SELECT p.chunk_id, sum({part}) AS s FROM retrieval_postings p "
        f"  JOIN w ON w.term = p.term WHERE p.term = ANY(:seed_terms){filt} GROUP BY p.chunk_id "
        "  ORDER BY s DESC, p.chunk_id LIMIT :top) "
        f"SELECT sp.s + coalesce((SELECT sum({part}) FROM retrieval_postings p JOIN w ON w.term = p.term "
        "  WHERE p.term = ANY(:others) AND p.chunk_id = sp.chunk_id), 0) AS s "
        "FROM sp ORDER BY s DESC OFFSET :m1 LIMIT 1"
    )
    names = {s.term for s in seed}
    values = {
        **params,
        "all_terms": [s.term for s in stats],
        "idfws": [s.idfw for s in stats],
        "seed_terms": sorted(names),
        "others": [s.term for s in stats if s.term not in names],
        "top": SEED_FULL * m,
        "m1": m - 1,
    }
    row = conn.execute(text(sql), values).first()
    return float(row[0]) if row is not None else 0.0


def _run(
    conn: Connection,
    params: dict[str, Any],
    filt: str,
    stats: list[TermStat],
    ess: list[TermStat],
    theta: float,
    m: int,
) -> list[tuple[int, float]]:
    names = {s.term for s in ess}
    rest = sorted((s for s in stats if s.term not in names), key=lambda s: (-s.ub, s.term))
    values: dict[str, Any] = {
        **params,
        "all_terms": [s.term for s in stats],
        "idfws": [s.idfw for s in stats],
        "ess": sorted(names),
        "theta": theta,
        "m": m,
        "m1": m - 1,
    }
    rest_ubs = [sum(s.ub for s in rest[i:]) for i in range(len(rest))]  # bounds still to come
    for i, s in enumerate(rest):
        values[f"rt{i}"], values[f"rub{i}"], values[f"rw{i}"] = s.term, rest_ubs[i], s.idfw
    rows = conn.execute(text(_score_sql(filt, rest_ubs)), values).all()
    return [(int(a), float(b)) for a, b in rows]


def essential(stats: list[TermStat], theta: float) -> list[TermStat]:
    """The terms at least one of which every chunk scoring ``theta`` or more must hold."""
    order = sorted(stats, key=lambda s: (s.ub, s.term))
    total = 0.0
    for i, s in enumerate(order):
        if total + s.ub >= theta * (1.0 - SLACK):
            return order[i:]
        total += s.ub
    return []


def _merge_sql(n_terms: int, filt: str) -> str:
    """Every posting of the query terms, one index range per term in chunk order, merged and summed per chunk
    as the streams pass (Merge Append + GroupAggregate: no hash table over the candidate chunks)."""
    # w (k1 + 1) tf / (tf + k1 (1 - b) + (k1 b / avgdl) len): the constants folded, four operations a row
    part = "p.tf / (p.tf + CAST(:c1 AS float8) + CAST(:c2 AS float8) * p.length)"
    branches = " UNION ALL ".join(
        f"(SELECT p.chunk_id, CAST(:w{i} AS float8) * {part} AS x FROM retrieval_postings p "
        f"WHERE p.term = :t{i}{filt} ORDER BY p.chunk_id)"
        for i in range(n_terms)
    )
    merged = f"{branches} ORDER BY chunk_id" if n_terms > 1 else branches[1:-1]  # one term: its own order
    return (
        f"SELECT chunk_id, sum(x) AS s FROM ({merged}) u GROUP BY chunk_id ORDER BY s DESC, chunk_id LIMIT :m"
    )


def bm25_top_merge(
    conn: Connection, params: dict[str, Any], filt: str, stats: list[TermStat], m: int
) -> list[tuple[int, float]]:
    """Exact top ``m`` over every permitted posting (the idf weights come from ``stats``)."""
    avgdl = float(params["avgdl"])
    values = {**params, "m": m, "c1": K1 * (1.0 - B), "c2": K1 * B / avgdl}
    for i, s in enumerate(stats):
        values[f"t{i}"], values[f"w{i}"] = s.term, s.idfw * (K1 + 1.0)
    rows = conn.execute(text(_merge_sql(len(stats), filt)), values).all()
    return [(int(a), float(b)) for a, b in rows]


def _seed_terms(stats: list[TermStat], share: float) -> list[TermStat]:
    """The rarest terms, while their lists hold at most ``share`` of all the query's postings (at least one)."""
    total = sum(s.df for s in stats)
    out: list[TermStat] = []
    covered = 0
    for s in sorted(stats, key=lambda s: (s.df, s.term)):
        if out and covered + s.df > share * total:
            break
        out.append(s)
        covered += s.df
    return out


def bm25_top(
    conn: Connection,
    params: dict[str, Any],
    filt: str,
    m: int,
    seed: float = SEED_SHARE,
    method: str = "auto",
    cache: TermStatsCache | None = None,
    version: Hashable = None,
) -> tuple[list[tuple[int, float]], dict[str, int], str]:
    """Exact permitted BM25 top ``m``, the terms' permitted df, and how it was found.

    ``method``: ``"merge"`` (every posting, streamed), ``"maxscore"`` (seed theta + one pruned statement),
    or ``"auto"``: MaxScore unless its essential terms hold more than ``MERGE_SHARE`` of the postings, then
    the merge. Both are exact; the choice is only cost. ``cache``/``version``: see :func:`term_stats`.
    """
    n, avgdl = int(params["n"]), float(params["avgdl"])
    stats = term_stats(conn, params, filt, n, avgdl, cache, version)
    dfs = {s.term: s.df for s in stats}
    if not stats:
        return [], dfs, "none"
    total = sum(s.df for s in stats)
    if method == "merge" or (method == "auto" and min(s.df for s in stats) > MERGE_SHARE * total):
        return bm25_top_merge(conn, params, filt, stats, m), dfs, "merge"  # no selective term: merge
    top = _maxscore(conn, params, filt, stats, seed, m, method == "auto")
    if top is None:
        return bm25_top_merge(conn, params, filt, stats, m), dfs, "merge"
    return top, dfs, "maxscore"


def _maxscore(
    conn: Connection,
    params: dict[str, Any],
    filt: str,
    stats: list[TermStat],
    seed: float,
    m: int,
    auto: bool,
) -> list[tuple[int, float]] | None:
    """Seed theta, essential terms, one pruned statement; ``None`` (when ``auto``) if the essential terms
    hold more than ``MERGE_SHARE`` of the postings: the merge reads them faster."""
    theta = _seed_theta(conn, params, filt, stats, _seed_terms(stats, seed), m)
    ess = essential(stats, theta) or stats  # never empty in practice (theta is at most a chunk's score)
    if auto and sum(s.df for s in ess) > MERGE_SHARE * sum(s.df for s in stats):
        return None
    return _run(conn, params, filt, stats, ess, theta - SLACK * max(1.0, abs(theta)), m)


# ------------------------------------------------------------------------------ the lists in process memory
_ROW = np.dtype([("chunk", ">i4"), ("tf", ">i4"), ("len", ">i4")])  # int4send: 4 bytes, big-endian


@dataclass(frozen=True)
class Postings:
    """One term's posting list over the whole index: chunk pks (ascending), term counts, chunk lengths."""

    chunks: npt.NDArray[np.int32]
    tf: npt.NDArray[np.int32]
    length: npt.NDArray[np.int32]


def read_postings(conn: Connection, terms: list[str]) -> dict[str, Postings]:
    """The terms' whole posting lists (an absent term: an empty list), in one statement inside the caller's
    transaction (its snapshot). Each list comes back as one ``bytea`` of packed ``(chunk, tf, length)``
    integers — about 3x faster to read than a ``COPY`` of the rows, 6x faster than one row each."""
    rows = conn.execute(
        text(
            "SELECT term, string_agg(int4send(chunk_id) || int4send(tf) || int4send(length), ''::bytea) "
            "FROM retrieval_postings WHERE term = ANY(:terms) GROUP BY term"
        ),
        {"terms": terms},
    ).all()
    empty = np.zeros(0, dtype=np.int32)
    out = dict.fromkeys(terms, Postings(empty, empty, empty))
    for term, packed in rows:
        a = np.frombuffer(packed, dtype=_ROW)
        order = np.argsort(
            a["chunk"], kind="stable"
        )  # the aggregate's order is the plan's: make it ascending
        out[str(term)] = Postings(*(a[f][order].astype(np.int32) for f in ("chunk", "tf", "len")))
    return out


def postings_cache_size() -> int:
    """``CHARTER_PG_POSTINGS_CACHE``: postings a search process keeps in memory (default 10,000,000 ≈ 120 MB;
    0 turns the in-memory lists off, so that every-readable searches run the merge or MaxScore)."""
    value = os.environ.get("CHARTER_PG_POSTINGS_CACHE", "").strip().replace("_", "")
    if not value:
        return 10_000_000
    if not value.isdigit():
        raise ValueError(
            f"CHARTER_PG_POSTINGS_CACHE must be a whole number of postings (0 turns the cache off), not {value!r}"
        )
    return int(value)


class PostingsCache:
    """Whole posting lists kept in process memory for one content version (thread-safe), for searches where
    every chunk is readable: BM25 over them is a vectorised sum instead of PostgreSQL's per-row merge.

    A list is read once (:func:`read_postings`, in the search's snapshot) and kept, least recently used first out,
    while the cache holds at most ``max_postings`` postings (12 bytes each); a list longer than that is used
    once and not kept. As :class:`TermStatsCache`, a new content version empties it, and narrower readers
    never use it (their statistics, and what they may see, differ).
    """

    def __init__(self, max_postings: int = 10_000_000) -> None:
        self.max_postings = max_postings
        self._lock = threading.Lock()
        self._version: Hashable = None
        self._lists: OrderedDict[str, Postings] = OrderedDict()
        self._size = 0

    def lists(self, conn: Connection, version: Hashable, terms: list[str]) -> dict[str, Postings]:
        out: dict[str, Postings] = {}
        with self._lock:
            if version != self._version:
                self._version, self._lists, self._size = version, OrderedDict(), 0
            for t in terms:
                if t in self._lists:
                    self._lists.move_to_end(t)
                    out[t] = self._lists[t]
        missing = [t for t in terms if t not in out]
        if missing:
            for t, p in read_postings(conn, missing).items():
                out[t] = p
                self._keep(version, t, p)
        return out

    def _keep(self, version: Hashable, term: str, p: Postings) -> None:
        if len(p.chunks) > self.max_postings:
            return
        with self._lock:
            if version != self._version or term in self._lists:
                return
            self._lists[term] = p
            self._size += len(p.chunks)
            while self._size > self.max_postings:
                _, old = self._lists.popitem(last=False)
                self._size -= len(old.chunks)


def bm25_top_memory(
    conn: Connection, params: dict[str, Any], m: int, cache: PostingsCache, version: Hashable
) -> tuple[list[tuple[int, float]], dict[str, int]]:
    """Exact top ``m`` over the whole index (every chunk readable) from the cached lists: each posting's BM25
    part in float64 (the same formula as the statements), summed per chunk, the top ``m`` by score then pk."""
    n, avgdl = int(params["n"]), float(params["avgdl"])
    weights = dict(zip(params["terms"], params["weights"], strict=True))
    lists = cache.lists(conn, version, sorted(weights))
    dfs = {t: len(p.chunks) for t, p in lists.items() if len(p.chunks)}
    if not dfs:
        return [], dfs
    ids, parts = [], []
    for term in sorted(dfs):
        p, df = lists[term], dfs[term]
        idfw = weights[term] * math.log1p((n - df + 0.5) / (df + 0.5))
        tf = p.tf.astype(np.float64)
        parts.append(idfw * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * p.length / max(avgdl, 1e-9))))
        ids.append(p.chunks)
    all_ids = np.concatenate(ids)
    order = np.argsort(all_ids, kind="stable")  # each list is sorted: merging runs
    sorted_ids = all_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    sums = np.add.reduceat(np.concatenate(parts)[order], starts)
    chunk_ids = sorted_ids[starts]
    if len(sums) > m:
        threshold = np.partition(sums, len(sums) - m)[len(sums) - m]  # the m-th best score
        keep = np.flatnonzero(sums >= threshold)  # every chunk tied with it too: the pk decides below
        sums, chunk_ids = sums[keep], chunk_ids[keep]
    best = np.lexsort((chunk_ids, -sums))[:m]
    return [(int(chunk_ids[i]), float(sums[i])) for i in best], dfs
