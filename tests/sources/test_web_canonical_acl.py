"""A canonical link must not move content across ACLs, nor replace a page's content. A restricted page whose
``<link rel="canonical">`` points at a public page (login walls and paywalls often do) used to be indexed
*as* that public page, with its ACL: board-only text readable by everyone; and whichever duplicate was
crawled first stood in for its canonical page. Now a document is what its own URL serves, with that URL's
ACL: a page whose canonical URL has the same ACL is a duplicate (skipped; the canonical page is fetched
itself, in sitemap mode too), one whose canonical URL has another ACL is a document of its own — checked with
the permission matrix (every principal against every page) in both crawl orders, after a re-sync of
unchanged pages (304) and after an ACL-only sync."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from charter.retrieval import Index
from charter.sources import sync_sources
from tests.sources._matrix import check_matrix
from tests.sources._site import static_site
from tests.sources.conftest import Workspace
from tests.sources.test_web import web_source

RULES = [
    {"path": "/**", "acl": ["public"]},
    {"path": "/board/**", "acl": ["group:pricing-committee"]},
]


def _page(word: str, canonical: str | None = None) -> bytes:
    link = f'<link rel="canonical" href="{canonical}">' if canonical else ""
    return f"<html><head><title>{word}</title>{link}</head><body><p>word {word}</p></body></html>".encode()


CONDITIONAL: list[str] = []  # paths requested with If-None-Match, in order


@contextmanager
def site(order: list[str]) -> Iterator[str]:
    pages = {
        "/index.html": _page("fennigal"),
        "/board/pricing.html": _page(
            "drisseth", canonical="/index.html"
        ),  # restricted, claims the public page
        "/board/minutes.html": _page("glimbart", canonical="/board/pricing.html"),  # same ACL: a duplicate
        "/board/notes.html": _page(
            "hovrack", canonical="/board/archive.html"
        ),  # duplicate of an unlisted page
        "/board/archive.html": _page("snorkwell"),
        "/help.html": _page("quillet", canonical="/help.html"),
    }
    with static_site(pages, sitemap=order, conditional=CONDITIONAL) as base:
        yield base


@pytest.mark.parametrize(
    "order",
    [
        ["/board/pricing.html", "/index.html", "/board/minutes.html", "/board/notes.html", "/help.html"],
        ["/index.html", "/board/minutes.html", "/board/notes.html", "/board/pricing.html", "/help.html"],
    ],
)
def test_a_canonical_link_never_moves_content_to_a_wider_acl(ws: Workspace, order: list[str]) -> None:
    with site(order) as base:
        ws.configure([web_source(base, RULES, sitemap=f"{base}/sitemap.xml", content_types=["text/html"])])
        s = ws.sync()["pgdocs"]
        assert s.status == "succeeded", s.as_dict()
        board = {"group:pricing-committee"}
        canaries = {
            f"{base}/index.html": ("fennigal", {"public"}),
            f"{base}/board/pricing.html": ("drisseth", board),  # its own document, its own ACL
            f"{base}/board/archive.html": ("snorkwell", board),  # fetched because notes names it canonical
            f"{base}/help.html": ("quillet", {"public"}),
        }
        index = Index.for_runtime(ws.rt)
        assert _ids(ws) == set(canaries)  # the duplicates (minutes, notes) are not documents
        check_matrix(ws.rt, index, "pgdocs", canaries)
        assert _visible_to_anyone(ws, "glimbart") == set() and _visible_to_anyone(ws, "hovrack") == set()
        public = ["public", "group:support", "user:ana"]
        hits = {h.doc_id for h in index.search(public, "drisseth", k=20, mode="bm25")}
        assert hits == set()  # the board's text under no document anyone else can read
        for again in ("full", "acl-only"):  # 304s keep it; so does an ACL-only pass
            [s] = sync_sources(ws.rt, acl_only=again == "acl-only")
            assert s.status == "succeeded", s.as_dict()
            check_matrix(ws.rt, index, "pgdocs", canaries)


def _ids(ws: Workspace) -> set[str]:
    return set(Index.for_runtime(ws.rt).document_states("pgdocs"))


def _visible_to_anyone(ws: Workspace, word: str) -> set[str]:
    tokens = ["public", "group:pricing-committee", "user:omar"]
    return {h.doc_id for h in Index.for_runtime(ws.rt).search(tokens, word, k=20, mode="bm25")}


SPELLINGS = [
    "/%62oard/secret.html",  # an unreserved character escaped
    "/public/%2E%2E/board/secret.html",  # escaped dot segments
    "/BOARD/secret.html",  # a server that ignores case
    "/board%2Fsecret.html",  # a server that decodes %2F
    "/public/..%2Fboard/secret.html",
]


@contextmanager
def lenient_site(links: list[str]) -> Iterator[str]:
    """A server that, like many, decodes every escape, ignores case and resolves dot segments before it
    looks a path up: every spelling above serves the board's page."""
    import posixpath
    from urllib.parse import unquote

    anchors = "".join(f'<a href="{u}">x</a>' for u in links)
    pages = {
        "/index.html": f"<html><body><p>word fennigal</p>{anchors}</body></html>".encode(),
        "/board/secret.html": _page("drisseth"),
    }
    with static_site(pages, lookup=lambda path: posixpath.normpath(unquote(path)).lower()) as base:
        yield base


def test_no_spelling_of_a_url_reaches_a_restricted_page_under_a_wider_rule(ws: Workspace) -> None:
    """The ACL rule for ``/board/**`` holds however a link spells the path: escaped letters, escaped dots,
    capitals, an escaped slash. Each spelling the server serves the board's page under is indexed with the
    board's ACL or, where the spellings' rules disagree, with what all of them allow (owner only) — never
    with the public rule's."""
    with lenient_site(SPELLINGS) as base:
        ws.configure([web_source(base, RULES, max_depth=1, content_types=["text/html"])])
        s = ws.sync()["pgdocs"]
        assert s.status == "succeeded", s.as_dict()
        index = Index.for_runtime(ws.rt)
        public = ["public", "group:support", "user:ana"]
        assert {h.doc_id for h in index.search(public, "fennigal", k=20, mode="bm25")} == {
            f"{base}/index.html"
        }
        assert {h.doc_id for h in index.search(public, "drisseth", k=20, mode="bm25")} == set()
        board = {h.doc_id for h in index.search(["group:pricing-committee"], "drisseth", k=20, mode="bm25")}
        assert f"{base}/board/secret.html" in board  # the escaped spellings normalise to the page itself
        [s] = sync_sources(ws.rt, acl_only=True)
        assert {h.doc_id for h in index.search(public, "drisseth", k=20, mode="bm25")} == set()


def test_an_escaped_slash_does_not_leave_the_allowed_paths(ws: Workspace) -> None:
    with lenient_site(["/public/..%2Fboard/secret.html", "/public/%2E%2E/board/secret.html"]) as base:
        src = web_source(
            base, RULES, max_depth=1, content_types=["text/html"], allowed_paths=["/index.html", "/public/**"]
        )
        ws.configure([src])
        s = ws.sync()["pgdocs"]
        assert set(Index.for_runtime(ws.rt).document_states("pgdocs")) == {f"{base}/index.html"}, s.as_dict()


def test_pages_recorded_by_the_earlier_cursor_format_are_read_again_in_full(ws: Workspace) -> None:
    """Cursors of the earlier format named a page's canonical URL as its document whatever its ACL, so a
    "304 unchanged" answered from such a record would keep a leaked document as it was. Those records get
    no conditional request: the page is read in full once, and conditional requests resume after."""
    from sqlalchemy import select, update

    from charter.store.tables import source_state

    order = ["/board/pricing.html", "/index.html", "/help.html"]
    with site(order) as base:
        ws.configure([web_source(base, RULES, sitemap=f"{base}/sitemap.xml", content_types=["text/html"])])
        ws.sync()
        CONDITIONAL.clear()
        ws.sync()
        assert sorted(CONDITIONAL) == sorted(order)  # the current format: conditional requests
        with ws.rt.store.begin() as conn:  # rewrite the saved cursor as the earlier format had it
            cursor = conn.execute(
                select(source_state.c.cursor).where(source_state.c.source_id == "pgdocs")
            ).scalar()
            for record in cursor["pages"].values():
                record.pop("v", None)
            conn.execute(
                update(source_state).where(source_state.c.source_id == "pgdocs").values(cursor=cursor)
            )
        CONDITIONAL.clear()
        s = ws.sync()["pgdocs"]
        assert CONDITIONAL == [] and s.status == "succeeded", s.as_dict()
        ws.sync()
        assert sorted(CONDITIONAL) == sorted(order)


@contextmanager
def looping_site() -> Iterator[str]:
    """Canonical links that lead back: ``/guide/`` names ``/guide``, which the server redirects to
    ``/guide/`` (a common misconfiguration); ``/a.html`` and ``/b.html`` name each other."""
    pages = {
        "/guide/": _page("glimbart", canonical="/guide"),
        "/a.html": _page("fennigal", canonical="/b.html"),
        "/b.html": _page("quillet", canonical="/a.html"),
    }
    with static_site(pages, redirects={"/guide": "/guide/"}, sitemap=list(pages)) as base:
        yield base


def test_canonical_links_that_lead_back_never_leave_content_unindexed(ws: Workspace) -> None:
    with looping_site() as base:
        ws.configure([web_source(base, RULES, sitemap=f"{base}/sitemap.xml", content_types=["text/html"])])
        for _ in range(2):  # and again, with conditional requests
            s = ws.sync()["pgdocs"]
            assert s.status == "succeeded", s.as_dict()
            index = Index.for_runtime(ws.rt)
            found = {
                w: {h.doc_id for h in index.search(["public"], w, k=5, mode="bm25")}
                for w in ("glimbart", "fennigal", "quillet")
            }
            assert found["glimbart"] == {f"{base}/guide/"}, found
            # a and b name each other: the one named canonical is indexed as itself; the other is its duplicate
            assert len(found["fennigal"] | found["quillet"]) == 1, found
