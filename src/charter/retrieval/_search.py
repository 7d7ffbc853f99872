"""The in-memory side of search: a snapshot of the index and exact, permission-filtered hybrid scoring.

A :class:`Snapshot` holds, for every chunk, its document row, its L2-normalised float32 vector (one matrix)
and its BM25 postings; for every ACL token, a boolean mask over documents. A query

1. builds the *permitted* mask: documents whose ACL contains one of the principal's tokens (and that belong
   to the requested sources), spread to their chunks — this is the only set that is ever scored;
2. scores every permitted chunk exactly: dense = dot product with the query vector; BM25 with statistics
   (N, document frequencies, average length) computed over the permitted chunks only;
3. fuses the two lists (see :func:`fuse`) and keeps the top k by (score desc, canonical chunk order).

Nothing outside the permitted set enters any number the caller sees, so the result is exactly the top k of
an exact ranking over what the principal may read, and the full k whenever k chunks are readable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from charter.retrieval._lexical import Postings

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
Mask = npt.NDArray[np.bool_]


@dataclass
class DocMeta:
    pk: int
    source_id: str
    doc_id: str
    title: str
    url: str | None


@dataclass
class Snapshot:
    """Everything search needs, loaded from the store at one content version and one ACL version."""

    content_version: int
    acl_version: int
    chunk_pks: npt.NDArray[np.int64]  # row -> retrieval_chunks.id (rows in source, doc, position order)
    chunk_doc: I32  # row -> document index
    vectors: F32  # (rows, dim)
    postings: Postings
    docs: list[DocMeta]
    doc_index: dict[int, int]  # document pk -> document index
    token_docs: dict[str, Mask] = field(default_factory=dict)  # ACL token -> mask over documents
    source_ranges: dict[str, tuple[int, int]] = field(default_factory=dict)  # docs are sorted by source

    def __post_init__(self) -> None:
        ranges: dict[str, tuple[int, int]] = {}
        for i, d in enumerate(self.docs):
            lo, _ = ranges.get(d.source_id, (i, i))
            ranges[d.source_id] = (lo, i + 1)
        self.source_ranges = ranges

    @property
    def size(self) -> int:
        return len(self.chunk_pks)

    def doc_mask(self, tokens: frozenset[str], sources: set[str] | None) -> Mask:
        mask = np.zeros(len(self.docs), dtype=np.bool_)
        for token in tokens:
            m = self.token_docs.get(token)
            if m is not None:
                mask |= m
        if sources is not None:
            allowed = np.zeros(len(self.docs), dtype=np.bool_)
            for source_id, (lo, hi) in self.source_ranges.items():
                if source_id in sources:
                    allowed[lo:hi] = True
            mask &= allowed
        return mask


@dataclass
class Scored:
    rows: I32  # snapshot rows of the top k, best first
    fused: F32
    bm25: F32
    bm25_norm: F32
    dense: F32
    dense_norm: F32


def _normalise(scores: F32, present: Mask, method: str, depth: int) -> F32:
    """Scores mapped to a common scale using statistics of this list's top ``depth`` only.

    ``minmax``: (s - s_depth) / (s_max - s_depth), clipped to [0, 1], where s_depth is the depth-th best
    score; ``zscore``: (s - mean) / std over the top depth; ``none``: raw scores. Rows absent from the
    list (``present`` false: no query term for BM25) score 0.
    """
    out = np.zeros(len(scores), dtype=np.float32)
    vals = scores[present]
    if len(vals) == 0:
        return out
    d = min(depth, len(vals))
    top = np.partition(vals, len(vals) - d)[len(vals) - d :] if d < len(vals) else vals
    if method == "none":
        out[present] = vals
    elif method == "zscore":
        mu, sd = float(top.mean()), float(top.std())
        out[present] = (vals - mu) / (sd if sd > 1e-9 else 1.0)
    else:  # minmax
        lo, hi = float(top.min()), float(top.max())
        span = hi - lo
        if span <= 1e-9:
            out[present] = np.where(vals >= hi, 1.0, 0.0)
        else:
            out[present] = np.clip((vals - lo) / span, 0.0, 1.0)
    return out


def _ranks(scores: F32, present: Mask) -> F32:
    """1-based ranks (ties broken by row order); absent rows get +inf."""
    order = np.lexsort((np.arange(len(scores)), -scores))
    ranks = np.empty(len(scores), dtype=np.float32)
    ranks[order] = np.arange(1, len(scores) + 1, dtype=np.float32)
    ranks[~present] = np.inf
    return ranks


def _top(scores: F32, present: Mask, depth: int) -> F32:
    """The ``depth`` best scores of the rows in ``present``, best first."""
    vals = scores[present]
    d = min(depth, len(vals))
    if d == 0:
        return np.zeros(0, dtype=np.float32)
    top = np.partition(vals, len(vals) - d)[len(vals) - d :] if d < len(vals) else vals
    return np.sort(top)[::-1].astype(np.float32)


def _spread(top: F32) -> float:
    """The effective number of hits a list singles out: the sum of its top scores min-max normalised over
    that top (1 when one hit stands far above the rest, up to ``len(top)`` when they are all alike)."""
    if len(top) < 2:
        return float(len(top))
    lo, hi = float(top[-1]), float(top[0])
    if hi - lo <= 1e-9:
        return float(len(top))
    return float(((top - lo) / (hi - lo)).sum())


def _cliff(top: F32) -> float:
    """The largest drop between consecutive scores of ``top`` (best first), as a fraction of the best score:
    the share of the best hit's lexical evidence that the hits below the break lack."""
    if len(top) < 2 or float(top[0]) <= 1e-9:
        return 0.0
    return float(np.max(top[:-1] - top[1:]) / float(top[0]))


# Under an identifier lead the dense score only orders chunks whose normalised BM25 scores (in [0, 1]) are
# within this much of each other: in effect BM25 first, dense second.
LEAD_TIE = 1e-3


def adaptive_weights(
    bm25: F32, bm25_present: Mask, dense: F32, depth: int, lead: bool = False
) -> tuple[float, float]:
    """(bm25_weight, dense_weight) of the ``adaptive`` fusion for one query.

    ``lead``: the query names a code (``charter.retrieval._lexical.identifier_terms``) that occurs in a
    permitted chunk. The dense model cannot read codes (its sub-word pieces of ``INV-2026-004817`` and
    ``INV-2026-004871`` are nearly the same vector), so only lexical evidence can tell the chunk that holds
    the code from the ones that merely read alike: BM25 leads and the dense score breaks (near-)ties —
    weights ``(1 - LEAD_TIE, LEAD_TIE)``, and chunks with no query term at all rank below every chunk with
    one (:func:`fuse_parts`).

    Otherwise dense-first: BM25's weight is the largest drop between consecutive scores of its top
    ``depth``, as a fraction of the best score (one half when a single chunk matches); the dense weight is
    the rest. A rare term that only a few chunks contain puts a cliff under them — BM25 then leads; a
    natural-language question whose words match many chunks gives a gently falling list and leaves the
    ranking to the dense model. No BM25 match at all, or a list where every chunk scores alike, gives
    ``(0, 1)``: the dense ranking.

    The weights are functions of the query and of the list's top ``depth`` scores only, so they are
    constants of the query for every row outside them (the PostgreSQL path's bound).
    """
    tb = _top(bm25, bm25_present, depth)
    if len(tb) == 0:
        return 0.0, 1.0
    if lead:
        return 1.0 - LEAD_TIE, LEAD_TIE
    wb = 0.5 if len(tb) == 1 else _cliff(tb)  # a lone match leads; the other chunks keep the dense order
    return wb, 1.0 - wb


def clears_bound(score: float, bound: float) -> bool:
    """Whether ``score`` is above ``bound`` by more than float32 rounding can account for.

    Fused scores are float32: at a magnitude of a few hundred (z-scores of near-equal lists) one rounding step
    is ~3e-5, so a bound computed from the same inputs in another order can be off by more than any fixed
    absolute epsilon. A relative margin of 1e-5 (~80 float32 steps) keeps "the k-th result clears the bound
    of every unseen row" safe; a score that does not clear it only costs another, wider round."""
    return score > bound + 1e-5 * max(1.0, abs(bound))


def fuse_parts(
    bm25: F32, bm25_present: Mask, dense: F32, fusion: Any, lead: bool = False
) -> tuple[F32, F32, F32, float, float]:
    """(fused, bm25_norm, dense_norm, bm25_weight, dense_weight): fused = wb * bm25_norm + wd * dense_norm.

    ``lead``: see :func:`adaptive_weights` (``adaptive`` only; the other methods ignore it).

    The weights are constants of the query (functions of each list's top ``depth`` scores only), so for a
    fixed query the fused score is non-decreasing in each row's BM25 and dense score — the property the
    PostgreSQL path's threshold bound relies on (``_pg.py``).
    """
    method = getattr(fusion, "method", "adaptive")  # no fusion given: the schema default
    depth = int(getattr(fusion, "depth", 100))
    dense_present = np.ones(len(dense), dtype=np.bool_)
    if method == "rrf":
        k = float(getattr(fusion, "rrf_k", 60))
        rb, rd = _ranks(bm25, bm25_present), _ranks(dense, dense_present)
        nb = np.where(rb <= depth, 1.0 / (k + rb), 0.0).astype(np.float32)
        nd = np.where(rd <= depth, 1.0 / (k + rd), 0.0).astype(np.float32)
        return (nb + nd).astype(np.float32), nb, nd, 1.0, 1.0
    norm = getattr(fusion, "normalization", "minmax")
    nb = _normalise(bm25, bm25_present, norm, depth)
    nd = _normalise(dense, dense_present, norm, depth)
    if method == "adaptive":
        wb, wd = adaptive_weights(bm25, bm25_present, dense, depth, lead)
    else:
        wb, wd = float(getattr(fusion, "bm25_weight", 0.3)), float(getattr(fusion, "dense_weight", 0.7))
    fused = wb * nb + wd * nd
    if method == "adaptive" and lead:
        # under the lead a chunk without any query term ranks below every chunk with one (min-max maps the
        # depth-th best match to 0, the score of no match at all): lowers only absent rows, so the fused
        # score stays non-decreasing in each row's BM25 and dense score and the PostgreSQL bound holds
        fused = fused - wb * (~bm25_present)
    return fused.astype(np.float32), nb, nd, wb, wd


def fuse(bm25: F32, bm25_present: Mask, dense: F32, fusion: Any, lead: bool = False) -> tuple[F32, F32, F32]:
    """(fused, bm25_norm, dense_norm) for aligned score arrays over the permitted rows."""
    fused, nb, nd, _, _ = fuse_parts(bm25, bm25_present, dense, fusion, lead)
    return fused, nb, nd


def score(
    snap: Snapshot,
    permitted_rows: I32,
    query_vec: F32 | None,
    query_terms: list[str],
    k: int,
    fusion: Any,
    mode: str = "hybrid",
    identifiers: frozenset[str] = frozenset(),
) -> Scored:
    """Exact scores of every permitted row; the top ``k`` by fused score (ties: canonical row order).

    ``mode`` is ``hybrid``, ``bm25`` or ``dense`` (the single retrievers, for benchmarks and explain).
    ``identifiers``: the query's identifier terms (``_lexical.identifier_terms``); when one of them occurs in
    a permitted chunk the ``adaptive`` fusion lets BM25 lead (:func:`adaptive_weights`).
    """
    n = len(permitted_rows)
    empty = np.zeros(0, dtype=np.float32)
    if n == 0 or k <= 0:
        return Scored(np.zeros(0, dtype=np.int32), empty, empty, empty, empty, empty)
    if query_vec is not None and mode != "bm25":
        if n == snap.size:
            dense = snap.vectors @ query_vec
        elif n > snap.size // 4:
            dense = (snap.vectors @ query_vec)[permitted_rows]
        else:
            dense = snap.vectors[permitted_rows] @ query_vec
        dense = dense.astype(np.float32, copy=False)
    else:
        dense = np.zeros(n, dtype=np.float32)
    bm25 = np.zeros(n, dtype=np.float32)
    present = np.zeros(n, dtype=np.bool_)
    lead = False
    if mode != "dense" and query_terms:
        mask = np.zeros(snap.size, dtype=np.bool_)
        mask[permitted_rows] = True
        lead = any(snap.postings.df(t, mask) > 0 for t in identifiers)
        avgdl = float(snap.postings.lengths[permitted_rows].mean())
        rows, sc = snap.postings.scores(query_terms, mask, n, avgdl)
        if len(rows):
            pos = np.searchsorted(permitted_rows, rows)  # permitted_rows is sorted
            bm25[pos] = sc
            present[pos] = True
    if mode == "bm25":
        fused, nb, nd = bm25.copy(), bm25.copy(), np.zeros(n, dtype=np.float32)
        fused[~present] = -np.inf
    elif mode == "dense":
        fused, nb, nd = dense.copy(), np.zeros(n, dtype=np.float32), dense.copy()
    else:
        fused, nb, nd = fuse(bm25, present, dense, fusion, lead)
    kk = min(k, n)
    if kk < n:
        cand = np.argpartition(-fused, kk - 1)[:kk]
        # include every row tied with the k-th score, so the tie-break below is exact
        kth = fused[cand].min()
        cand = np.flatnonzero(fused >= kth)
    else:
        cand = np.arange(n)
    order = cand[np.lexsort((cand, -fused[cand]))][:kk]
    if mode == "bm25":
        order = order[np.isfinite(fused[order])]
    return Scored(
        permitted_rows[order].astype(np.int32), fused[order], bm25[order], nb[order], dense[order], nd[order]
    )
