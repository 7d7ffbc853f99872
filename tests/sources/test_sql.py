"""The ``sql`` connector against real databases: SQLite and PostgreSQL (pgserver, tests/_pg.py).

Rows become documents; incremental by a change column; deletions by disappearance and by tombstone;
ACLs from a grants table, picked up by ``--acl-only`` without re-embedding; the permission matrix holds
after a full sync and after an ACL-only revocation.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from charter.retrieval import Index
from charter.sources import source_documents_listing, source_statuses, sync_sources
from tests.sources._embedder import CountingEmbedder
from tests.sources._helpers import make_source
from tests.sources._matrix import check_matrix
from tests.sources.conftest import Workspace

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
# doc id -> (unique word, grants)
CANARIES: dict[str, tuple[str, set[str]]] = {
    "a-fin": ("zorblax", {"group:finance"}),
    "a-sup": ("quimvex", {"group:support"}),
    "a-casey": ("plorvin", {"user:casey"}),
    "a-pub": ("vantrel", {"public"}),
    "a-two": ("gruffel", {"group:support-leads", "user:farid"}),
}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def kb_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database the test fills with articles and grants (not the charter's store)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'kb.db'}"
        return
    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.create_database(migrated=False)
    yield url
    cluster.drop_database(url)


def create_kb(url: str) -> sa.Engine:
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(
            sa.text(
                "CREATE TABLE articles (id VARCHAR(50) PRIMARY KEY, title TEXT, body TEXT, "
                "updated_at TIMESTAMP WITH TIME ZONE, deleted BOOLEAN NOT NULL DEFAULT FALSE)"
            )
        )
        c.execute(sa.text("CREATE TABLE grants (article_id VARCHAR(50), principal VARCHAR(100))"))
        for i, (doc_id, (word, acl)) in enumerate(CANARIES.items()):
            c.execute(
                sa.text("INSERT INTO articles (id, title, body, updated_at) VALUES (:i, :t, :b, :u)"),
                {
                    "i": doc_id,
                    "t": f"Article {doc_id}",
                    "b": f"Billing note {i}: the word is {word}.",
                    "u": T0,
                },
            )
            for token in acl:
                c.execute(sa.text("INSERT INTO grants VALUES (:i, :p)"), {"i": doc_id, "p": token})
    return engine


def sql_source(url: str, **sql: Any) -> dict[str, Any]:
    return {
        "id": "kb",
        "connector": "sql",
        "location": url,
        "owner": "omar",
        "sensitivity": "internal",
        "permissions": {"model": "per-document"},
        "freshness": {"max_age": "7d"},
        "chunking": {"max_tokens": 64, "overlap": 8},
        "sql": {
            "table": "articles",
            "updated_column": "updated_at",
            "tombstone_column": "deleted",
            "grants_query": "SELECT article_id, principal FROM grants",
            **sql,
        },
    }


def test_sql_full_incremental_tombstone_and_acl_only(ws: Workspace, kb_url: str) -> None:
    engine = create_kb(kb_url)
    ws.configure([sql_source(kb_url)])
    s = ws.sync()["kb"]
    assert (s.status, s.added, s.private_by_default) == ("succeeded", 5, 0), s.as_dict()
    index = Index.for_runtime(ws.rt)
    assert check_matrix(ws.rt, index, "kb", CANARIES) == 7 * 5

    # nothing changed: every row is listed by id only, nothing is read or embedded
    before = CountingEmbedder.texts
    s = ws.sync()["kb"]
    assert (s.unchanged, s.added, s.updated) == (5, 0, 0)
    assert CountingEmbedder.texts == before

    # one row changes (newer updated_at), one is tombstoned, one disappears, one is new
    with engine.begin() as c:
        c.execute(
            sa.text("UPDATE articles SET body = :b, updated_at = :u WHERE id = 'a-sup'"),
            {"b": "Billing note: the word is quimvex, refunds take five days.", "u": T0 + timedelta(hours=1)},
        )
        c.execute(
            sa.text("UPDATE articles SET deleted = TRUE, updated_at = :u WHERE id = 'a-pub'"), {"u": T0}
        )
        c.execute(sa.text("DELETE FROM articles WHERE id = 'a-two'"))
        c.execute(
            sa.text(
                "INSERT INTO articles (id, title, body, updated_at) VALUES ('a-new', 'New', 'fresh', :u)"
            ),
            {"u": T0 + timedelta(hours=2)},
        )
        c.execute(sa.text("INSERT INTO grants VALUES ('a-new', 'group:support')"))
    s = ws.sync()["kb"]
    assert (s.updated, s.added, s.deleted, s.unchanged) == (1, 1, 2, 2), s.as_dict()
    assert set(index.document_states("kb")) == {"a-fin", "a-sup", "a-casey", "a-new"}
    rows = {r["doc_id"]: r for r in source_documents_listing(ws.rt, "kb")}
    assert rows["a-sup"]["acl"] == ["group:support"]

    # revoke casey, grant finance the support article: --acl-only, no embedding at all
    with engine.begin() as c:
        c.execute(sa.text("DELETE FROM grants WHERE article_id = 'a-casey'"))
        c.execute(sa.text("INSERT INTO grants VALUES ('a-sup', 'group:finance')"))
    before = CountingEmbedder.texts
    [s] = sync_sources(ws.rt, acl_only=True)
    assert (s.mode, s.acl_changed, s.private_by_default) == ("acl-only", 2, 1), s.as_dict()
    assert CountingEmbedder.texts == before
    canaries = {k: v for k, v in CANARIES.items() if k in ("a-fin", "a-sup", "a-casey")}
    canaries["a-casey"] = ("plorvin", {"user:omar"})  # no grant left: owner only (fail closed)
    canaries["a-sup"] = ("quimvex", {"group:support", "group:finance"})
    check_matrix(ws.rt, index, "kb", canaries)
    [row] = source_statuses(ws.rt)
    assert row["acl_synced_at"] is not None and row["acl_freshness"] == "fresh"
    engine.dispose()


def test_sql_acl_column_and_query(ws: Workspace, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'acl.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE faq (n INTEGER, q TEXT, a TEXT, acl TEXT, rev INTEGER)"))
        c.execute(sa.text("INSERT INTO faq VALUES (1, 'Refunds?', 'gribbon refunds', 'group:finance', 1)"))
        c.execute(sa.text("INSERT INTO faq VALUES (2, 'Bad', 'tazzle', 'group:Bad Token', 1)"))
        c.execute(sa.text("INSERT INTO faq VALUES (3, 'Pub', 'mivvle', '[\"public\"]', 1)"))
    src = sql_source("sqlite:///acl.db")  # relative to the charter's folder
    (ws.base / "acl.db").write_bytes((tmp_path / "acl.db").read_bytes())
    src["sql"] = {
        "query": "SELECT n, q, a || ' answer' AS body, acl, rev FROM faq",
        "id_column": "n",
        "title_column": "q",
        "body_column": "body",
        "acl_column": "acl",
        "updated_column": "rev",
    }
    ws.configure([src])
    s = ws.sync()["kb"]
    assert (s.added, s.private_by_default) == (3, 1)
    check_matrix(
        ws.rt,
        Index.for_runtime(ws.rt),
        "kb",
        {"1": ("gribbon", {"group:finance"}), "2": ("tazzle", {"user:omar"}), "3": ("mivvle", {"public"})},
    )
    engine.dispose()


def test_sql_credentials_only_by_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="must not contain a password"):
        make_source(connector="sql", location="postgresql://u:hunter2@db/kb", sql={"table": "t"})
    with pytest.raises(ValidationError, match="exactly one of"):
        make_source(connector="sql", location="sqlite:///x.db", sql={"table": "t", "query": "SELECT 1"})
    src = make_source(
        connector="sql", location="postgresql://u@db/kb", sql={"table": "t", "password_env": "KB_PW"}
    )
    from charter.sources import ConnectorContext, SourceUnavailable, get_connector

    monkeypatch.delenv("KB_PW", raising=False)
    with pytest.raises(SourceUnavailable, match="KB_PW"):
        list(get_connector("sql").documents(ConnectorContext(source=src, base_dir=Path("."))))


def test_sql_unreachable_database_deletes_nothing(ws: Workspace, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'kb.db'}"
    create_kb(url).dispose()
    ws.configure([sql_source(url)])
    assert ws.sync()["kb"].added == 5
    (tmp_path / "kb.db").unlink()
    s = ws.sync()["kb"]
    assert s.status == "failed" and "not found" in (s.error or "")
    assert len(Index.for_runtime(ws.rt).document_states("kb")) == 5


def test_a_query_that_writes_fails_and_leaves_the_source_database_as_it_was(
    ws: Workspace, kb_url: str
) -> None:
    """The connector's sessions are read-only: a grants query that deletes what it returns (SQLite's
    ``DELETE … RETURNING``, PostgreSQL's data-modifying ``WITH``) fails the source instead of emptying the
    table. (A guard against mistakes; the permission is the database role, docs/sources.md.)"""
    engine = create_kb(kb_url)
    delete = (
        "DELETE FROM grants RETURNING article_id, principal"
        if kb_url.startswith("sqlite")
        else "WITH d AS (DELETE FROM grants RETURNING article_id, principal) SELECT * FROM d"
    )
    ws.configure([sql_source(kb_url, grants_query=delete)])
    s = ws.sync()["kb"]
    assert s.status == "failed" and "read" in (s.error or "").lower(), s.as_dict()
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM grants")).scalar() == sum(
            len(a) for _, a in CANARIES.values()
        )
    ws.configure([sql_source(kb_url)])  # the same database, an ordinary query: reads as before
    s = ws.sync()["kb"]
    assert (s.status, s.added) == ("succeeded", 5), s.as_dict()
    engine.dispose()
