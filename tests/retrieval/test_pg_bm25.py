"""BM25 top-m on PostgreSQL by MaxScore (``charter.retrieval._pg_bm25``): exactly the permitted ranking of a
plain oracle (ids, scores, tie-break) for random corpora, ACLs, queries, depths and seed budgets — through
the pruned second round as well — and after random upserts and deletes when every chunk is readable."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from charter.retrieval import Index, analyse, chunk_document
from charter.retrieval._pg import PgSearch
from charter.retrieval._pg_bm25 import TermStat, essential
from charter.sources import Document
from charter.spec._schema import Chunking
from charter.store import open_store
from tests.retrieval.conftest import HashEmbedder
from tests.retrieval.test_search import TOKENS, WORDS, _bm25_reference

pytestmark = pytest.mark.postgres

CHUNKING = Chunking(max_tokens=32, overlap=0)
# a skewed vocabulary: a few common words, a tail of rare ones and words no query holds (long chunks), so
# that some query terms are non-essential and the pruned second round is reached
FILLER = ["alpha", "bravo", "delta", "echo", "foxtrot", "golf", "hotel", "india"]
VOCAB = WORDS[:3] * 12 + WORDS + FILLER * 6
paragraph = st.lists(st.sampled_from(VOCAB), min_size=1, max_size=28)
doc_st = st.tuples(
    st.lists(paragraph, min_size=1, max_size=3),
    st.frozensets(st.sampled_from(TOKENS[:3]), min_size=0, max_size=2),
)


def _searcher(index: Index) -> PgSearch:
    s = getattr(index, "_charter_pg_search", None)
    if not isinstance(s, PgSearch):
        s = PgSearch(index)
        index._charter_pg_search = s  # type: ignore[attr-defined]
    return s


def _pks(index: Index, source: str) -> dict[tuple[str, int], int]:
    with index.store.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT d.doc_id, c.position, c.id FROM retrieval_chunks c "
                "JOIN retrieval_documents d ON d.id = c.doc_pk WHERE d.source_id = :s"
            ),
            {"s": source},
        ).all()
    return {(r[0], int(r[1])): int(r[2]) for r in rows}


def _oracle(chunks: list[tuple[int, list[str]]], query: list[str], m: int) -> list[tuple[int, float]]:
    """The permitted BM25 ranking written out plainly: positive scores, descending, ties by chunk pk."""
    if not chunks:
        return []
    scores = _bm25_reference([t for _, t in chunks], query)
    ranked = sorted(
        ((pk, s) for (pk, _), s in zip(chunks, scores, strict=True) if s > 0), key=lambda x: (-x[1], x[0])
    )
    return ranked[:m]


def _assert_same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert len(got) == len(want)
    for (gid, gs), (wid, ws) in zip(got, want, strict=True):
        assert math.isclose(gs, ws, rel_tol=1e-9, abs_tol=1e-9), (got, want)
        # the same chunk, unless two chunks' scores tie within float rounding (then either order is exact)
        assert gid == wid or any(pk == gid and math.isclose(s, ws, rel_tol=1e-9) for pk, s in want), (
            got,
            want,
        )


_examples = itertools.count()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    docs=st.lists(doc_st, min_size=6, max_size=25),
    principal=st.frozensets(st.sampled_from(TOKENS), min_size=1, max_size=3),
    query=st.lists(st.sampled_from(WORDS), min_size=1, max_size=6, unique=True),
    m=st.sampled_from([1, 1, 2, 3, 6]),
    seed=st.sampled_from([0.0, 0.25, 1.0]),
    method=st.sampled_from(["maxscore", "merge", "memory", "auto"]),
)
def test_maxscore_is_the_exact_permitted_top_m(
    pg_property_index, docs, principal, query, m, seed, method
) -> None:
    index: Index = pg_property_index
    source = f"m{next(_examples)}"
    permitted: list[tuple[tuple[str, int], list[str]]] = []
    for i, (paragraphs, acl_tokens) in enumerate(docs):
        doc = Document(
            source_id=source,
            doc_id=f"d{i:02d}",
            title="",
            text="\n\n".join(" ".join(p) for p in paragraphs),
            format="text",
        )
        index.upsert_document(doc, acl_tokens, CHUNKING)
        if principal & acl_tokens:
            permitted += [
                ((doc.doc_id, c.position), analyse(c.embed_text)) for c in chunk_document(doc, CHUNKING)
            ]
    pks = _pks(index, source)
    chunks = [(pks[key], terms) for key, terms in permitted]
    terms = analyse(" ".join(query))
    want = _oracle(chunks, terms, m)
    searcher = _searcher(index)
    searcher.bm25_seed, searcher.bm25_method = seed, method
    got, dfs = searcher.bm25_top(principal, terms, m, {source})
    event(f"BM25 path: {searcher.last_bm25_how}")
    _assert_same(got, want)
    assert dfs == {t: n for t in set(terms) if (n := sum(1 for _, c in chunks if t in c))}
    searcher.bm25_method = "scan"  # the one-statement reference agrees too
    try:
        scan, scan_dfs = searcher.bm25_top(principal, terms, m, {source})
    finally:
        searcher.bm25_method = "auto"
    _assert_same(scan, want)
    assert scan_dfs == dfs


@pytest.fixture(scope="module")
def pg_all(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """A database where every chunk is readable (the path without a permission filter), with its model."""

    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.create_database()
    index = Index(open_store(url), HashEmbedder())
    model: dict[str, list[list[str]]] = {}  # doc id -> its chunks' analysed terms, as indexed now
    yield index, model
    index.store.dispose()
    cluster.drop_database(url)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("upsert"), st.integers(0, 14), st.lists(paragraph, min_size=1, max_size=3)),
        st.tuples(st.just("delete"), st.integers(0, 14), st.just([])),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=ops,
    query=st.lists(st.sampled_from(WORDS), min_size=1, max_size=6),
    k=st.integers(1, 8),
    seed=st.sampled_from([0.0, 1.0]),
    method=st.sampled_from(["maxscore", "merge", "memory", "auto"]),
)
def test_everything_readable_after_writes(pg_all, steps, query, k, seed, method) -> None:
    """Upserts and deletes (the sync's writes) keep the statistics MaxScore reads, and the posting lists kept in
    memory, exact: search in ``bm25`` mode equals the oracle over the chunks indexed now, with the permission
    filter dropped (the searcher and its caches live across examples, so stale lists would show)."""
    index, model = pg_all
    for op, i, paragraphs in steps:
        doc_id = f"d{i:02d}"
        if op == "delete":
            index.delete_document("s", doc_id)
            model.pop(doc_id, None)
            continue
        doc = Document(
            source_id="s",
            doc_id=doc_id,
            title="",
            text="\n\n".join(" ".join(p) for p in paragraphs),
            format="text",
        )
        index.upsert_document(doc, frozenset({"public"}), CHUNKING)
        model[doc_id] = [analyse(c.embed_text) for c in chunk_document(doc, CHUNKING)]
    searcher = _searcher(index)
    searcher.bm25_seed, searcher.bm25_method = seed, method
    reader = frozenset({"public", "user:x"})
    got = index.search(reader, " ".join(query), k=k, mode="bm25", min_score=-1e9)
    chunks = [((doc_id, pos), terms) for doc_id in sorted(model) for pos, terms in enumerate(model[doc_id])]
    scores = _bm25_reference([t for _, t in chunks], analyse(" ".join(query))) if chunks else []
    order = sorted((i for i, s in enumerate(scores) if s > 0), key=lambda i: (-scores[i], chunks[i][0]))[:k]
    assert len(got) == len(order)
    for h, i in zip(got, order, strict=True):
        assert math.isclose(h.score, scores[i], rel_tol=1e-5, abs_tol=1e-5)
        key = chunks[i][0]
        assert h.chunk_id == f"s/{key[0]}#{key[1]}" or math.isclose(h.score, scores[i], rel_tol=1e-6)
    # the statistics MaxScore reads (N, total length, per-term df, max tf, min length) match the model
    with index.store.connect() as conn:
        n, total = conn.execute(
            text("SELECT count(*), coalesce(sum(length), 0) FROM retrieval_chunk_vectors")
        ).one()
        rows = conn.execute(
            text("SELECT term, count(*), max(tf), min(length) FROM retrieval_postings GROUP BY term")
        ).all()
    assert (n, total) == (len(chunks), sum(len(t) for _, t in chunks))
    want_terms: dict[str, tuple[int, int, int]] = {}
    for _, terms in chunks:
        for t in set(terms):
            df, mx, mn = want_terms.get(t, (0, 0, 10**9))
            want_terms[t] = (df + 1, max(mx, terms.count(t)), min(mn, len(terms)))
    assert {r[0]: (r[1], r[2], r[3]) for r in rows} == want_terms


def test_essential_terms_bound() -> None:
    """The non-essential prefix's bounds sum below theta; adding the next term would reach it."""
    stats = [TermStat(t, 1, 1, 1, 1, ub=u) for t, u in [("a", 1.0), ("b", 2.0), ("c", 4.0)]]
    assert [s.term for s in essential(stats, 3.5)] == ["c"]
    assert [s.term for s in essential(stats, 3.0)] == ["b", "c"]  # 1 + 2 reaches 3: b can matter
    assert [s.term for s in essential(stats, 100.0)] == []
    assert [s.term for s in essential(stats, 0.0)] == ["a", "b", "c"]


@pytest.mark.parametrize("method", ["maxscore", "merge", "scan"])
def test_pruned_second_round_keeps_a_chunk_only_the_common_terms_lift(pg_property_index, method) -> None:
    """A rare term in long chunks seeds a low theta; the best chunk holds only the two common terms. The
    second round must score it: its essential term alone is below theta, the non-essential bound lifts it."""
    index: Index = pg_property_index
    source = f"crafted-{method}"
    filler = "alpha bravo delta echo foxtrot golf hotel india juliet kilo lima mike"
    texts = [f"zebra {filler}"] * 3 + ["refund invoice"] * 20 + ["refund"] * 20 + ["invoice"] * 20
    texts += [filler] * 37
    for i, t in enumerate(texts):
        doc = Document(source_id=source, doc_id=f"d{i:03d}", title="", text=t, format="text")
        index.upsert_document(doc, frozenset({"public"}), CHUNKING)
    pks = _pks(index, source)
    chunks = [(pks[(f"d{i:03d}", 0)], analyse(t)) for i, t in enumerate(texts)]
    terms = analyse("zebra refund invoice")
    searcher = _searcher(index)
    searcher.bm25_method, searcher.bm25_seed = method, 0.0
    try:
        got, _ = searcher.bm25_top(frozenset({"public"}), terms, 1, {source})
    finally:
        searcher.bm25_method = "auto"
    want = _oracle(chunks, terms, 1)
    assert "zebra" not in next(t for pk, t in chunks if pk == want[0][0])  # the scenario is as described
    _assert_same(got, want)
    if method == "maxscore":
        assert searcher.last_bm25_how == "maxscore"


@pytest.mark.parametrize("method", ["merge", "memory"])
def test_cached_statistics_and_lists_follow_every_content_write(pg_all, method) -> None:
    """When every chunk is readable, per-term statistics (merge, MaxScore) and whole posting lists (memory)
    are cached for the content version: a repeated search reads none again, and a write that changes a
    term's df, max tf or min length is seen by the next search (scores equal the oracle's)."""
    index, model = pg_all
    searcher = _searcher(index)
    searcher.bm25_method = method
    reader = frozenset({"public"})
    query = f"quokka wombat {method}"
    terms = sorted(set(analyse(query)))

    def check() -> None:
        got = index.search(reader, query, k=5, mode="bm25", min_score=-1e9)
        assert searcher.last_bm25_how == method
        chunks = [t for d in sorted(model) for t in model[d]]
        scores = sorted((s for s in _bm25_reference(chunks, analyse(query)) if s > 0), reverse=True)[:5]
        assert len(got) == len(scores)
        for h, s in zip(got, scores, strict=True):
            assert math.isclose(h.score, s, rel_tol=1e-5, abs_tol=1e-5), (got, scores)

    def put(doc_id: str, body: str) -> None:
        doc = Document(source_id="s", doc_id=doc_id, title="", text=body, format="text")
        index.upsert_document(doc, frozenset({"public"}), CHUNKING)
        model[doc_id] = [analyse(c.embed_text) for c in chunk_document(doc, CHUNKING)]

    def cached(version: object) -> set[str]:
        if method == "merge":
            known, _ = searcher._term_stats.lookup(version, terms)
            return set(known)
        return (
            {t for t in terms if t in searcher._postings._lists}
            if searcher._postings._version == version
            else set()
        )

    try:
        put(f"{method}-1", f"quokka wombat alpha bravo {method}")
        put(f"{method}-2", "quokka alpha bravo delta echo foxtrot")
        check()
        with index.store.connect() as conn:
            current = searcher._content_version(conn)
        assert cached(current) == set(terms)  # the first search filled the cache
        put(f"{method}-3", "quokka quokka quokka wombat")  # df, max tf and min length of both terms change
        with index.store.connect() as conn:
            assert searcher._content_version(conn) != current
        check()
        index.delete_document("s", f"{method}-3")
        model.pop(f"{method}-3")
        check()
    finally:
        searcher.bm25_method = "auto"


def test_the_postings_cache_keeps_at_most_its_size(pg_all) -> None:
    """Least recently used lists leave first; a list longer than the whole cache is used, not kept; an absent
    term reads as an empty list."""
    from charter.retrieval._pg_bm25 import PostingsCache

    index, model = pg_all
    for i, body in enumerate(["kiwi kiwi mango", "kiwi mango papaya", "kiwi"]):
        doc = Document(source_id="s", doc_id=f"fruit-{i}", title="", text=body, format="text")
        index.upsert_document(doc, frozenset({"public"}), CHUNKING)
        model[f"fruit-{i}"] = [analyse(c.embed_text) for c in chunk_document(doc, CHUNKING)]
    kiwi, mango, papaya = (analyse(w)[0] for w in ("kiwi", "mango", "papaya"))
    cache = PostingsCache(max_postings=3)
    with index.store.begin() as conn:
        lists = cache.lists(conn, "v1", [kiwi, mango, papaya, "nosuchterm"])
        assert [len(lists[t].chunks) for t in (kiwi, mango, papaya, "nosuchterm")] == [3, 2, 1, 0]
        assert list(lists[kiwi].tf) == [2, 1, 1] or sorted(lists[kiwi].tf) == [1, 1, 2]
        # kiwi (3) fills it; mango (2) pushes kiwi out, the least recently used; papaya (1) fits beside mango
        assert list(cache._lists) == [mango, papaya, "nosuchterm"] and cache._size == 3
        cache.lists(conn, "v1", [mango])  # a hit: mango becomes the most recently used
        cache.lists(
            conn, "v1", [kiwi]
        )  # 3 more: papaya, the empty list, then mango leave (least recent first)
        assert list(cache._lists) == [kiwi] and cache._size == 3
        big = PostingsCache(max_postings=2)
        big.lists(conn, "v1", [kiwi])
        assert kiwi not in big._lists  # longer than the cache: used once
        cache.lists(conn, "v2", [papaya])
        assert set(cache._lists) == {papaya}  # a new version empties it


def test_postings_cache_size_from_the_environment(monkeypatch) -> None:
    from charter.retrieval._pg_bm25 import postings_cache_size

    monkeypatch.setenv("CHARTER_PG_POSTINGS_CACHE", "2_000_000")
    assert postings_cache_size() == 2_000_000
    monkeypatch.setenv("CHARTER_PG_POSTINGS_CACHE", "0")
    assert postings_cache_size() == 0
    monkeypatch.setenv("CHARTER_PG_POSTINGS_CACHE", "lots")
    with pytest.raises(ValueError, match="whole number of postings"):
        postings_cache_size()
