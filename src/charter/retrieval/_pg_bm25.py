"""BM25 top-m on PostgreSQL without aggregating every posting of the query terms (MaxScore, exact).

The plain statement (``PgSearch._bm25_top_scan``) scores every permitted posting of every query term: at
1,000,000 chunks a query's terms have ~75,000 postings and the aggregation costs ~250 ms. Most of those
postings belong to common terms (``what``, ``definit``) whose idf is low, so no chunk can reach the top m
on them alone. MaxScore (Turtle & Flood, 1995) makes that a proof instead of a heuristic:

1. **Per-term statistics over the permitted set** (one index-only pass over the query terms' postings,
   counting only, no arithmetic): each term's permitted document frequency ``df`` (for its idf, exactly as
   before), its largest term frequency and its shortest chunk length. Since BM25's term part
   ``tf (k1 + 1) / (tf + k1 (1 - b + b len / avgdl))`` grows with ``tf`` and shrinks with ``len``, the term's
   contribution to any permitted chunk is at most ``ub = w idf f(max tf, min len)`` (``w``: the term's count
   in the query), computed with the permitted set's own ``N`` and average length. Nothing is stored ahead
   of time, so writes need no extra bookkeeping and no statistic can go stale or leak across readers.
2. **Seed.** The rarest terms' postings (their lists together about ``seed`` postings long) give candidate
   chunks, each scored exactly over *all* query terms (the other terms are looked up by primary key for
   those chunks only); the m-th best score is ``theta``, a lower bound on the true m-th score.
3. **Essential terms.** Sort the terms by ``ub``; the longest prefix whose bounds sum to less than ``theta``
   is non-essential: a chunk holding only those terms scores below ``theta`` and cannot be in the top m.
   So every chunk of the top m holds an essential term. If the seed already covered every essential term,
   its top m is exact. Otherwise one more statement scores the chunks of the essential terms' postings,
   skips a chunk whose essential part plus the non-essential bounds is below ``theta``, and looks up the
   non-essential terms of the rest by primary key.

The result is the exact top m (ids, scores, ``chunk_id`` tie-break) of the permitted BM25 ranking — the
bounds are inflated by a relative ``1e-9`` against float rounding, and a tie at ``theta`` is kept. What it
saves depends on the query: a query of only common terms still scores their lists (correct, as slow as
before); a query with one selective term touches that term's postings plus a few lookups per candidate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, text

from charter.retrieval._lexical import K1, B

SEED_POSTINGS = 1_000  # the seed's postings budget (the rarest terms' lists up to about this many)
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


def term_stats(conn: Connection, params: dict[str, Any], filt: str, n: int, avgdl: float) -> list[TermStat]:
    """The query terms that occur in a permitted chunk, with their permitted statistics and bounds."""
    weights = dict(zip(params["terms"], params["weights"], strict=True))
    rows = conn.execute(
        text(
            "SELECT p.term, count(*), max(p.tf), min(p.length) FROM retrieval_postings p "
            f"WHERE p.term = ANY(:terms){filt} GROUP BY p.term"
        ),
        params,
    ).all()
    out = []
    for term, df, max_tf, min_len in rows:
        s = TermStat(str(term), int(weights[term]), int(df), int(max_tf), int(min_len))
        s.idfw = s.weight * math.log1p((n - s.df + 0.5) / (s.df + 0.5))
        part = s.max_tf * (K1 + 1.0) / (s.max_tf + K1 * (1.0 - B + B * s.min_len / max(avgdl, 1e-9)))
        s.ub = s.idfw * part * (1.0 + SLACK)
        out.append(s)
    return out


def _score_sql(filt: str) -> str:
    """Chunks of the essential terms' permitted postings, pruned by ``theta``, scored over every query term."""
    part = (
        "w.idfw * p.tf * CAST(:k1p1 AS float8) / (p.tf + CAST(:k1 AS float8) * (1.0::float8 - CAST(:b AS float8)"
        " + CAST(:b AS float8) * p.length / CAST(:avgdl AS float8)))"
    )
    return (
        "WITH w AS (SELECT term, idfw FROM unnest(CAST(:all_terms AS text[]), CAST(:idfws AS float8[])) "
        "  AS q(term, idfw)), "
        f"e AS (SELECT p.chunk_id, sum({part}) AS s FROM retrieval_postings p JOIN w ON w.term = p.term "
        f"  WHERE p.term = ANY(:ess){filt} GROUP BY p.chunk_id), "
        "c AS (SELECT chunk_id, s FROM e WHERE s + CAST(:rest_ub AS float8) >= CAST(:theta AS float8)), "
        "f AS (SELECT c.chunk_id, c.s + coalesce((SELECT sum("
        f"{part}) FROM retrieval_postings p JOIN w ON w.term = p.term "
        "  WHERE p.term = ANY(:rest) AND p.chunk_id = c.chunk_id), 0) AS s FROM c) "
        "SELECT chunk_id, s FROM f ORDER BY s DESC, chunk_id LIMIT :m"
    )


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
    rest = [s for s in stats if s.term not in names]
    values = {
        **params,
        "all_terms": [s.term for s in stats],
        "idfws": [s.idfw for s in stats],
        "ess": sorted(names),
        "rest": [s.term for s in rest],
        "rest_ub": sum(s.ub for s in rest),
        "theta": theta,
        "m": m,
    }
    rows = conn.execute(text(_score_sql(filt)), values).all()
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


def bm25_top_maxscore(
    conn: Connection,
    params: dict[str, Any],
    filt: str,
    m: int,
    seed: int = SEED_POSTINGS,
) -> tuple[list[tuple[int, float]], dict[str, int], int]:
    """Exact permitted BM25 top ``m``, the terms' permitted df, and the statements' rounds (1 or 2)."""
    n, avgdl = int(params["n"]), float(params["avgdl"])
    stats = term_stats(conn, params, filt, n, avgdl)
    dfs = {s.term: s.df for s in stats}
    if not stats:
        return [], dfs, 0
    by_df = sorted(stats, key=lambda s: (s.df, s.term))
    seed_terms: list[TermStat] = []
    covered = 0
    for s in by_df:  # the rarest lists, until they hold about `seed` (and at least m) postings
        if seed_terms and covered >= max(seed, m):
            break
        seed_terms.append(s)
        covered += s.df
    top = _run(conn, params, filt, stats, seed_terms, -math.inf, m)
    if len(seed_terms) == len(stats):
        return top, dfs, 1
    # fewer than m seed chunks: no lower bound on the m-th score, every term is essential
    theta = top[-1][1] if len(top) >= m else 0.0
    seeded = {s.term for s in seed_terms}
    if len(top) >= m and sum(s.ub for s in stats if s.term not in seeded) < theta * (1.0 - SLACK):
        return top, dfs, 1  # a chunk without a seed term scores below theta: the seed's top m is exact
    ess = essential(stats, theta) if len(top) >= m else stats
    if not ess:  # cannot happen (theta is a chunk's score, at most the sum of the bounds); stay exact anyway
        ess = stats
    margin = SLACK * max(1.0, abs(theta))
    return _run(conn, params, filt, stats, ess, theta - margin, m), dfs, 2
