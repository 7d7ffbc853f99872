"""Search on PostgreSQL (``charter.retrieval._pg``): the same answers as the in-memory search, the permission
filter inside the vector search, and k results whenever k chunks are readable — on a real server."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from charter.retrieval import Index, analyse, chunk_document
from charter.retrieval._lexical import identifier_terms
from charter.retrieval._search import fuse
from charter.sources import Document
from charter.spec._schema import Chunking, Fusion
from charter.store import open_store
from tests.retrieval.conftest import HashEmbedder
from tests.retrieval.test_search import QUERIES, TOKENS, WORDS, _bm25_reference, doc_strategy

pytestmark = pytest.mark.postgres


def _pair(request: pytest.FixtureRequest) -> tuple[Index, Index]:
    """The example indexed on SQLite (in-memory search) and on PostgreSQL (search in the database)."""
    template, _ = request.getfixturevalue("_example_template")
    sqlite = Index(open_store(f"sqlite:///{template}", migrate=False), HashEmbedder())

    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.copy_database(request.getfixturevalue("_example_pg_template"))
    request.addfinalizer(lambda: cluster.drop_database(url))
    pg = Index(open_store(url), HashEmbedder())
    request.addfinalizer(pg.store.dispose)
    request.addfinalizer(sqlite.store.dispose)
    return sqlite, pg


def test_same_results_as_in_memory_search(request: pytest.FixtureRequest, project) -> None:
    from charter.spec import load_charter

    sqlite, pg = _pair(request)
    assert not pg.store.is_sqlite
    fusions = [
        None,  # the default: adaptive
        Fusion(depth=5),
        Fusion(method="weighted"),
        Fusion(method="rrf"),
        Fusion(method="weighted", normalization="zscore", depth=5),
    ]
    for p in load_charter(project).principals.values():
        for q in QUERIES:
            for mode in ("hybrid", "bm25", "dense"):
                for fusion in fusions if mode == "hybrid" else [None]:
                    want = sqlite.search(p.acl_tokens, q, k=8, mode=mode, fusion=fusion)
                    got = pg.search(p.acl_tokens, q, k=8, mode=mode, fusion=fusion)
                    assert [h.chunk_id for h in got] == [h.chunk_id for h in want], (p.id, q, mode, fusion)
                    for a, b in zip(got, want, strict=True):
                        assert abs(a.score - b.score) < 1e-4
                        assert abs(a.bm25 - b.bm25) < 1e-3 and abs(a.dense - b.dense) < 1e-4
                        assert a.acl_reason == b.acl_reason


def test_tables_exist_only_on_postgres(request: pytest.FixtureRequest, tmp_path) -> None:
    _, index = _pair(request)
    pg = index.store
    with pg.connect() as conn:
        names = set(
            conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")).scalars()
        )
        assert {"retrieval_chunk_vectors", "retrieval_postings"} <= names
        assert conn.execute(text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")).scalar()
    lite = open_store(f"sqlite:///{tmp_path / 'x.db'}")
    with lite.connect() as conn:
        names = set(conn.execute(text("SELECT name FROM sqlite_master WHERE type = 'table'")).scalars())
    assert "retrieval_chunk_vectors" not in names and "retrieval_postings" not in names
    lite.dispose()


# ------------------------------------------------------------------------------------------------ property
_examples = itertools.count()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    docs=st.lists(doc_strategy, min_size=1, max_size=10),
    principal=st.frozensets(st.sampled_from(TOKENS), max_size=3),
    query=st.lists(st.sampled_from(WORDS), min_size=1, max_size=4),
    k=st.integers(1, 8),
    fusion=st.sampled_from(
        [
            None,  # the default: adaptive
            Fusion(depth=2),
            Fusion(method="weighted"),
            Fusion(method="rrf", depth=3),
            Fusion(method="weighted", normalization="zscore", depth=2),
        ]
    ),
)
def test_postgres_results_are_exactly_the_permitted_top_k(
    pg_property_index, docs, principal, query, k, fusion
) -> None:
    """On PostgreSQL, for random documents, ACLs, principals and fusions: exactly the top k of an exact
    ranking (dense, BM25 with permitted-only statistics, and the same fusion) over the permitted chunks."""
    index: Index = pg_property_index
    source = f"p{next(_examples)}"
    chunking = Chunking(max_tokens=32, overlap=0)
    permitted: list[tuple[str, str]] = []  # (chunk id, embedded text) in canonical order
    for i, (paragraphs, acl_tokens) in enumerate(docs):
        text_ = "\n\n".join(" ".join(p) for p in paragraphs)
        doc = Document(source_id=source, doc_id=f"d{i:02d}", title="", text=text_, format="text")
        index.upsert_document(doc, acl_tokens, chunking)
        if principal & acl_tokens:
            permitted.extend(
                (f"{source}/d{i:02d}#{c.position}", c.embed_text) for c in chunk_document(doc, chunking)
            )
    q = " ".join(query)
    if not permitted:
        assert index.search(principal, q, k=k, sources={source}) == []
        return
    emb = HashEmbedder()
    dense = emb.embed([t for _, t in permitted]) @ emb.embed([q])[0]
    bm25 = np.array(_bm25_reference([analyse(t) for _, t in permitted], analyse(q)), dtype=np.float32)
    present = np.array([any(t in analyse(x) for t in analyse(q)) for _, x in permitted], dtype=np.bool_)
    # the adaptive fusion's lexical lead: an identifier of the query occurs in a *permitted* chunk
    lead = any(t in analyse(x) for t in identifier_terms(q) for _, x in permitted)
    expected = {
        "dense": dense.astype(np.float32),
        "bm25": np.where(present, bm25, -np.inf).astype(np.float32),
        "hybrid": fuse(bm25, present, dense.astype(np.float32), fusion or Fusion(), lead)[0],
    }
    for mode, scores in expected.items():
        got = index.search(principal, q, k=k, mode=mode, sources={source}, fusion=fusion, min_score=-1e9)
        order = sorted(range(len(permitted)), key=lambda i: (-scores[i], i))
        if mode == "bm25":
            order = [i for i in order if np.isfinite(scores[i])]
        want = order[:k]
        assert len(got) == len(want), mode
        assert np.allclose([h.score for h in got], [scores[i] for i in want], atol=1e-4), mode
        # ids equal except where scores tie within float noise
        for h, i in zip(got, want, strict=True):
            assert h.chunk_id == permitted[i][0] or abs(h.score - scores[i]) < 1e-4, mode
        assert all(h.acl_reason and set(h.acl_reason) <= principal for h in got)


# ------------------------------------------------------------------------------------------------ HNSW path
class HashEmbedder384(HashEmbedder):
    """The hash embedder at 384 dimensions: the dimension migration 0009's HNSW index covers."""

    name = "test-hash-384@1"
    dim = 384

    def embed(self, texts: list[str]) -> np.ndarray:
        import hashlib
        import re

        out = np.zeros((len(texts), 384), dtype=np.float32)
        for i, t in enumerate(texts):
            for word in re.findall(r"\w+", t.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
                out[i, h % 384] += 1.0 if (h >> 16) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return (out / norms).astype(np.float32)


def test_hnsw_path_filters_inside_and_always_returns_k(request: pytest.FixtureRequest) -> None:
    from charter.retrieval._pg import PgSearch

    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.create_database()
    request.addfinalizer(lambda: cluster.drop_database(url))
    index = Index(open_store(url), HashEmbedder384())
    request.addfinalizer(index.store.dispose)
    rng = np.random.default_rng(3)
    acls: dict[str, frozenset[str]] = {}
    for i in range(600):
        words = rng.choice(WORDS, size=8).tolist()
        tokens = (
            {"group:all"}
            | ({"group:third"} if i % 3 == 0 else set())
            | ({"group:few"} if i % 40 == 0 else set())
        )
        doc = Document(source_id="s", doc_id=f"d{i:03d}", title="", text=" ".join(words), format="text")
        index.upsert_document(doc, frozenset(tokens), Chunking(max_tokens=64, overlap=0))
        acls[f"d{i:03d}"] = frozenset(tokens)
    index.search(frozenset({"group:all"}), "refund", k=1)
    searcher: PgSearch = index._charter_pg_search  # type: ignore[attr-defined]
    searcher.exact_max_rows = 0  # every permitted set is "large": choose by selectivity alone
    for token, readable, path in (
        ("group:all", 600, "hnsw"),
        ("group:third", 200, "hnsw"),
        ("group:few", 15, "exact"),
    ):
        for q in ["refund invoice", "annual plan price", "card dispute currency", "trial seat tax"]:
            for k in (1, 10, 50):
                hits = index.search(frozenset({token}), q, k=k)
                assert searcher.last_path == path, (token, q, k)
                assert len(hits) == min(k, readable)
                assert all(token in acls[h.doc_id] for h in hits)
                assert len({h.chunk_id for h in hits}) == len(hits)
                # the HNSW path ranks nearly what the exact path ranks
                searcher.exact_max_rows = 10**9
                exact = index.search(frozenset({token}), q, k=k)
                searcher.exact_max_rows = 0
                overlap = len({h.chunk_id for h in hits} & {h.chunk_id for h in exact}) / len(exact)
                assert overlap >= 0.8, (token, q, k, overlap)
    # the HNSW statement really walks the index (pgvector 0.6: no iterative scan, so ef_search bounds it)
    with index.store.begin() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))
        q = "[" + ",".join(["0.05"] * 384) + "]"
        plan = "\n".join(
            conn.execute(
                text("EXPLAIN " + searcher.hnsw_sql(False)),
                {"q": q, "ef": 100, "m": 10, "model": "test-hash-384@1", "tokens": ["group:all"]},
            ).scalars()
        )
    assert "ix_retrieval_chunk_vectors_hnsw_384" in plan, plan
    # too few permitted candidates among ef_search: falls back to the exact scan, still k results
    searcher.hnsw_margin = 0.05
    for q in ["refund invoice", "annual plan price"]:
        hits = index.search(frozenset({"group:third"}), q, k=50)
        assert len(hits) == 50 and searcher.last_path == "exact"
        assert all("group:third" in acls[h.doc_id] for h in hits)


# ------------------------------------------------------------------------------------------------ upgrade
def test_upgrade_to_0009_backfills_postings_and_vectors(request: pytest.FixtureRequest, project) -> None:
    """An index written before migration 0009 (revision 0008) searches the same after the upgrade: the
    migration derives the postings in SQL, the first search fills the vectors from the embedding cache."""
    from charter.spec import load_charter
    from charter.store.tables import acl, chunks, documents, embeddings, versions

    template, _ = request.getfixturevalue("_example_template")
    sqlite = Index(open_store(f"sqlite:///{template}", migrate=False), HashEmbedder())
    request.addfinalizer(sqlite.store.dispose)
    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.create_database(migrated=False)
    request.addfinalizer(lambda: cluster.drop_database(url))
    old = open_store(url, migrate=False)
    old.migrate("0008")
    with sqlite.store.connect() as src, old.begin() as dst:
        dst.execute(versions.delete())
        for table in (documents, acl, chunks, embeddings, versions):
            rows = [dict(r._mapping) for r in src.execute(table.select())]
            dst.execute(table.insert(), rows)
        dst.execute(text("SELECT setval('retrieval_chunks_id_seq', (SELECT max(id) FROM retrieval_chunks))"))
        dst.execute(
            text("SELECT setval('retrieval_documents_id_seq', (SELECT max(id) FROM retrieval_documents))")
        )
    old.migrate()
    with old.connect() as conn:
        n_postings = conn.execute(text("SELECT count(*) FROM retrieval_postings")).scalar()
        n_vectors = conn.execute(text("SELECT count(*) FROM retrieval_chunk_vectors")).scalar()
        n_expected = conn.execute(
            text(
                "SELECT count(*) FROM (SELECT DISTINCT c.id, t FROM retrieval_chunks c, unnest(string_to_array(c.terms, ' ')) t) x"
            )
        ).scalar()
    assert n_postings == n_expected and n_postings > 0
    assert n_vectors == 0
    pg = Index(old, HashEmbedder())
    for p in list(load_charter(project).principals.values())[:3]:
        for q in QUERIES[:4]:
            want = sqlite.search(p.acl_tokens, q, k=8)
            got = pg.search(p.acl_tokens, q, k=8)
            assert [h.chunk_id for h in got] == [h.chunk_id for h in want], (p.id, q)
    with old.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM retrieval_chunk_vectors")).scalar()
            == conn.execute(text("SELECT count(*) FROM retrieval_chunks")).scalar()
        )
    # the index keeps working for writes after the upgrade
    doc = Document(source_id="help-center", doc_id="new.md", title="New", text="zebra invoice", format="text")
    pg.upsert_document(doc, frozenset({"public"}), Chunking())
    assert pg.search(frozenset({"public"}), "zebra", k=1, mode="bm25")[0].doc_id == "new.md"
    old.dispose()


def test_everything_readable_skips_the_filter_with_the_same_results(
    request: pytest.FixtureRequest, tmp_path
) -> None:
    """When every chunk is readable the statements drop the permission filter: same results as SQLite."""

    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.create_database()
    request.addfinalizer(lambda: cluster.drop_database(url))
    pg = Index(open_store(url), HashEmbedder())
    lite = Index(open_store(f"sqlite:///{tmp_path / 'all.db'}"), HashEmbedder())
    request.addfinalizer(pg.store.dispose)
    request.addfinalizer(lite.store.dispose)
    rng = np.random.default_rng(11)
    for i in range(40):
        text_ = "\n\n".join(" ".join(rng.choice(WORDS, size=6).tolist()) for _ in range(3))
        doc = Document(source_id="s", doc_id=f"d{i:02d}", title="", text=text_, format="text")
        for index in (pg, lite):
            index.upsert_document(doc, frozenset({"public"}), Chunking(max_tokens=32, overlap=0))
    for q in ["refund invoice", "annual plan price tax", "dispute"]:
        for mode in ("hybrid", "bm25", "dense"):
            want = lite.search(frozenset({"public", "user:x"}), q, k=10, mode=mode)
            got = pg.search(frozenset({"public", "user:x"}), q, k=10, mode=mode)
            assert [h.chunk_id for h in got] == [h.chunk_id for h in want], (q, mode)
            assert np.allclose([h.score for h in got], [h.score for h in want], atol=1e-4)
