"""Text no database can store, from every kind of source: a file name that is not UTF-8 (``os.walk`` and
``git`` decode it with ``surrogateescape``) or a lone surrogate such as ``"\\ud800"`` in JSON. One such
document used to stop the whole source's sync with a ``UnicodeEncodeError``; now the rule in
``charter.sources._sync.storable`` applies to every connector: an id that cannot be stored fails that
document alone (reported, escaped), an ACL token fails closed, text keeps U+FFFD in place of each surrogate.
SQLite TEXT that is not UTF-8, and a Git ACL file that is not text, are covered here too.
"""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from charter.documents import Document
from charter.retrieval import Index
from charter.sources import Failed, sync_sources
from charter.sources._sync import storable
from tests.sources.conftest import DOCS_SOURCE, Workspace, md
from tests.sources.test_git import commit, git, git_source, write

BAD_NAME = os.fsdecode(b"caf\xe9-menu.md")  # Latin-1 "café": not UTF-8


def _escaped(value: str) -> str:
    """Independent oracle for the stored form of an id: each lone surrogate as ``\\udXXX``."""
    return "".join(f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)


def _hits(ws: Workspace, word: str, tokens: list[str]) -> set[str]:
    return {h.doc_id for h in Index.for_runtime(ws.rt).search(tokens, word, k=20, mode="bm25")}


def test_a_file_name_that_is_not_utf8_fails_alone_in_a_folder_source(ws: Workspace) -> None:
    ws.write("ok.md", md("# Fine\n\nOrdinary help text with the word quillet."))
    (ws.docs / BAD_NAME).write_text(md("# Menu\n\nThe word morrowby."), encoding="utf-8")
    for _ in range(2):  # and again: the next sync is not stuck on it either
        s = ws.sync()["docs"]
        assert (s.status, s.added + s.unchanged, s.failed) == ("partial", 1, 1), s.as_dict()
        [failure] = s.failures
        assert failure["doc_id"] == _escaped(BAD_NAME) == "caf\\udce9-menu.md"
        assert "not valid Unicode" in failure["reason"] and "rename" in failure["reason"]
    assert _hits(ws, "quillet", ["group:support"]) == {"ok.md"}
    assert _hits(ws, "morrowby", ["group:support"]) == set()
    [s] = sync_sources(ws.rt, acl_only=True)  # the ACL-only pass meets the same file
    assert s.failed == 1 and s.failures[0]["doc_id"] == "caf\\udce9-menu.md", s.as_dict()


def test_a_git_path_that_is_not_utf8_fails_alone(ws: Workspace, tmp_path: Path) -> None:
    repo = tmp_path / "kb-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo, "runbooks/general/intro.md", "# Welcome\n\nRunbook word glimbart.\n")
    (repo / "runbooks" / "general" / BAD_NAME).write_text("# Menu\n\nword morrowby\n", encoding="utf-8")
    commit(repo, "first")
    ws.configure([git_source(str(repo))])
    s = ws.sync()["runbooks"]
    assert (s.status, s.added, s.failed) == ("partial", 1, 1), s.as_dict()
    assert s.failures[0]["doc_id"] == "runbooks/general/caf\\udce9-menu.md"
    assert _hits(ws, "glimbart", ["group:support"]) == {"runbooks/general/intro.md"}
    [s] = sync_sources(ws.rt, acl_only=True)
    assert s.status == "partial" and s.failed == 1, s.as_dict()


def test_lone_surrogates_in_jsonl_ids_acls_and_text(ws: Workspace) -> None:
    ws.configure([{**DOCS_SOURCE, "id": "kb", "connector": "jsonl", "location": "testdocs/kb.jsonl"}])
    ws.write(
        "kb.jsonl",
        "\n".join(
            [
                '{"id": "ok", "title": "Refunds", "text": "word quillet", "acl": ["group:support"]}',
                '{"id": "bad\\ud800id", "title": "T", "text": "word morrowby", "acl": ["group:support"]}',
                '{"id": "txt", "title": "T\\udfff", "text": "word \\ud83d fennigal", "acl": ["group:support"]}',
                '{"id": "acl", "title": "T", "text": "word drisseth", "acl": ["group:supp\\udc00ort"]}',
            ]
        )
        + "\n",
    )
    s = ws.sync()["kb"]
    assert (s.status, s.added, s.failed) == ("partial", 3, 1), s.as_dict()
    assert s.failures[0]["doc_id"] == "bad\\ud800id"
    assert [p["doc_id"] for p in s.private] == ["acl"]  # fails closed: the source owner only
    support = ["group:support", "user:ana"]
    assert _hits(ws, "fennigal", support) == {"txt"}
    [hit] = Index.for_runtime(ws.rt).search(support, "fennigal", k=1, mode="bm25")
    assert "word \ufffd fennigal" in hit.text
    assert _hits(ws, "drisseth", support) == set()
    assert _hits(ws, "drisseth", ["user:omar"]) == {"acl"}
    assert _hits(ws, "morrowby", support) == set()


SURROGATE = st.integers(0xD800, 0xDFFF).map(chr)
TEXT = st.lists(st.one_of(st.text(max_size=8), SURROGATE), max_size=8).map("".join)


def _strings(item: object) -> list[str]:
    fields = ("doc_id", "title", "text", "url", "acl_error", "version", "revision", "reason")
    out = [v for f in fields if isinstance(v := getattr(item, f, None), str)]
    out += list(getattr(item, "acl", None) or ())
    out += list(getattr(item, "pages", None) or ())
    return out


@settings(max_examples=300, deadline=None)
@given(
    doc_id=TEXT.filter(bool),
    title=TEXT,
    text=TEXT,
    url=st.none() | TEXT,
    acl=st.none() | st.frozensets(TEXT, max_size=3),
    pages=st.none() | st.lists(TEXT, max_size=3).map(tuple),
)
def test_whatever_a_connector_yields_comes_out_storable(
    doc_id: str,
    title: str,
    text: str,
    url: str | None,
    acl: frozenset[str] | None,
    pages: tuple[str, ...] | None,
) -> None:
    doc = Document("s", doc_id, title, text, "text", url=url, acl=acl, pages=pages)
    out = storable(doc)
    for value in _strings(out):
        value.encode("utf-8")  # what SQLite and PostgreSQL need; raises on a lone surrogate
    if any(0xD800 <= ord(c) <= 0xDFFF for c in doc_id):
        assert isinstance(out, Failed) and out.doc_id == _escaped(doc_id)
        return
    assert isinstance(out, Document) and out.doc_id == doc_id
    assert out.text == "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)
    clean_acl = acl is None or not any(0xD800 <= ord(c) <= 0xDFFF for t in acl for c in t)
    assert out.acl == (acl if clean_acl else None)  # a bad token: no ACL, i.e. private (fail closed)
    if clean_acl and not any(
        0xD800 <= ord(c) <= 0xDFFF for c in title + text + (url or "") + "".join(pages or ())
    ):
        assert out is doc  # nothing to change: the same object


@settings(max_examples=200, deadline=None)
@given(doc_id=st.none() | TEXT.filter(bool), reason=TEXT)
def test_a_failure_with_unstorable_text_is_reported_storable(doc_id: str | None, reason: str) -> None:
    out = storable(Failed(doc_id, reason))
    assert isinstance(out, Failed)
    for value in _strings(out):
        value.encode("utf-8")
    assert out.doc_id == (None if doc_id is None else _escaped(doc_id))


def test_bytes_that_are_not_utf8_in_a_sqlite_source(ws: Workspace) -> None:
    """SQLite keeps any bytes as TEXT and ``sqlite3`` refuses to decode them: one such value used to fail the
    whole query. Now: in a body, U+FFFD; in an id, that row fails alone; in a grant, that row is private."""
    import sqlalchemy as sa

    from tests.sources.test_sql import sql_source

    engine = sa.create_engine(f"sqlite:///{ws.base / 'kb.db'}")
    with engine.begin() as c:
        c.execute(sa.text("CREATE TABLE faq (n TEXT, q TEXT, a TEXT, rev INTEGER)"))
        c.execute(sa.text("CREATE TABLE grants (n TEXT, principal TEXT)"))
        rows = [
            ("'1'", "'gribbon refunds'", "'group:support'"),
            (
                "'2'",
                "CAST(x'74617a7a6c65ff20726566756e6473' AS TEXT)",
                "'group:support'",
            ),  # "tazzle\\xff refunds"
            ("CAST(x'33ff' AS TEXT)", "'mivvle refunds'", "'group:support'"),  # id "3\\xff"
            ("'4'", "'drisseth refunds'", "CAST(x'67726f75703a737570ff' AS TEXT)"),  # "group:sup\\xff"
        ]
        for n, a, grant in rows:
            c.execute(sa.text(f"INSERT INTO faq VALUES ({n}, 'Q', {a}, 1)"))
            c.execute(sa.text(f"INSERT INTO grants VALUES ({n}, {grant})"))
    engine.dispose()
    src = sql_source("sqlite:///kb.db")
    src["sql"] = {
        "table": "faq",
        "id_column": "n",
        "title_column": "q",
        "body_column": "a",
        "updated_column": "rev",
        "grants_query": "SELECT n, principal FROM grants",
    }
    ws.configure([src])
    s = ws.sync()["kb"]
    assert (s.status, s.added, s.failed) == ("partial", 3, 1), s.as_dict()
    assert s.failures[0]["doc_id"] == "3\\udcff"
    assert [p["doc_id"] for p in s.private] == ["4"]
    support = ["group:support", "user:ana"]
    assert _hits(ws, "gribbon", support) == {"1"}
    assert _hits(ws, "tazzle", support) == {"2"}
    [hit] = Index.for_runtime(ws.rt).search(support, "tazzle", k=1, mode="bm25")
    assert "tazzle\ufffd refunds" in hit.text
    assert _hits(ws, "drisseth", support) == set() and _hits(ws, "drisseth", ["user:omar"]) == {"4"}


def test_a_git_acl_file_that_is_not_text_fails_closed_for_its_folder(ws: Workspace, tmp_path: Path) -> None:
    repo = tmp_path / "kb-repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    write(repo, "runbooks/general/intro.md", "# Welcome\n\nRunbook word glimbart.\n")
    write(repo, "runbooks/board/pricing.md", "# Pricing\n\nBoard word drisseth.\n")
    (repo / "runbooks" / "board" / ".acl").write_bytes(b"group:pricing-committee\n\xff\xfe\x00junk\n")
    commit(repo, "first")
    ws.configure([git_source(str(repo))])
    s = ws.sync()["runbooks"]
    assert s.status in ("succeeded", "partial") and s.added == 2, s.as_dict()
    assert [p["doc_id"] for p in s.private] == ["runbooks/board/pricing.md"]  # its folder's ACL is unreadable
    assert _hits(ws, "drisseth", ["group:support", "group:pricing-committee"]) == set()
    assert _hits(ws, "drisseth", ["user:omar"]) == {"runbooks/board/pricing.md"}
    assert _hits(ws, "glimbart", ["group:support"]) == {"runbooks/general/intro.md"}
