"""Search on PostgreSQL (``charter.retrieval._pg``): the same answers as the in-memory search, the permission
filter inside the vector search, and k results whenever k chunks are readable — on a real server."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from charter.retrieval import Index
from charter.spec._schema import Fusion
from charter.store import open_store
from tests.retrieval.conftest import HashEmbedder
from tests.retrieval.test_search import QUERIES

pytestmark = pytest.mark.postgres


def _pair(request: pytest.FixtureRequest) -> tuple[Index, Index]:
    """The example indexed on SQLite (in-memory search) and on PostgreSQL (search in the database)."""
    template, _ = request.getfixturevalue("_example_template")
    sqlite = Index(open_store(f"sqlite:///{template}", migrate=False), HashEmbedder())
    from tests.retrieval.conftest import _copy_pg_database, _drop_pg_database

    cluster = request.getfixturevalue("pg_cluster")
    url = _copy_pg_database(cluster, request.getfixturevalue("_example_pg_template"))
    request.addfinalizer(lambda: _drop_pg_database(cluster, url))
    pg = Index(open_store(url), HashEmbedder())
    request.addfinalizer(pg.store.dispose)
    request.addfinalizer(sqlite.store.dispose)
    return sqlite, pg


def test_same_results_as_in_memory_search(request: pytest.FixtureRequest, project) -> None:
    from charter.spec import load_charter

    sqlite, pg = _pair(request)
    assert not pg.store.is_sqlite
    fusions = [None, Fusion(method="rrf"), Fusion(normalization="zscore", depth=5)]
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
