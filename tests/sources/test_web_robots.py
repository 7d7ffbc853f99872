"""robots.txt as RFC 9309 reads it, against real servers: a redirect is followed (the rules it leads to
apply), a server error or a network error means "disallow everything" (the crawler used to treat both as no
rules, and crawl), a 404 sets no rules."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from charter.retrieval import Index
from tests.sources._site import static_site
from tests.sources.conftest import Workspace
from tests.sources.test_web import web_source

RULES = [{"path": "/**", "acl": ["public"]}]
PAGES = {
    "/index.html": b'<html><body><p>word fennigal</p><a href="/private/x.html">x</a></body></html>',
    "/private/x.html": b"<html><body><p>word drisseth</p></body></html>",
    "/moved-robots.txt": b"User-agent: *\nDisallow: /private/\n",
}


def _sync(ws: Workspace, **site: object) -> tuple[object, set[str]]:
    with static_site(PAGES, **site) as base:  # type: ignore[arg-type]
        ws.configure([web_source(base, RULES, max_depth=1, content_types=["text/html", "text/plain"])])
        s = ws.sync()["pgdocs"]
        ids = {urlsplit(d).path.lstrip("/") for d in Index.for_runtime(ws.rt).document_states("pgdocs")}
        return s, ids


def test_a_redirected_robots_txt_is_followed(ws: Workspace) -> None:
    s, ids = _sync(ws, redirects={"/robots.txt": "/moved-robots.txt"})
    assert ids == {"index.html"}, s.as_dict()  # type: ignore[attr-defined]
    assert "disallowed by robots.txt" in " ".join(f["reason"] for f in s.failures)  # type: ignore[attr-defined]


@pytest.mark.parametrize("robots", [500, 503, None], ids=["500", "503", "no response"])
def test_an_unreachable_robots_txt_disallows_everything(ws: Workspace, robots: int | None) -> None:
    s, ids = _sync(ws, robots=robots)
    assert ids == set(), s.as_dict()  # type: ignore[attr-defined]


def test_a_missing_robots_txt_sets_no_rules(ws: Workspace) -> None:
    s, ids = _sync(ws, robots=404)
    assert ids == {"index.html", "private/x.html"}, s.as_dict()  # type: ignore[attr-defined]
