"""The ``web`` connector against a local server with a real documentation set (Debian's PostgreSQL 15
manual, ``postgresql-doc-15``): robots.txt, depth and page limits, ETag 304s on re-sync, a redirect loop,
an off-domain redirect, an oversized page, canonical URLs, ACL per URL pattern and ``--acl-only``."""

from __future__ import annotations

from typing import Any

import pytest

from charter.retrieval import Index
from charter.sources import sync_sources
from tests.sources._embedder import CountingEmbedder
from tests.sources._matrix import check_matrix
from tests.sources._site import serve
from tests.sources.conftest import Workspace


def web_source(base: str, rules: list[dict[str, Any]], **web: Any) -> dict[str, Any]:
    return {
        "id": "pgdocs",
        "connector": "web",
        "location": f"{base}/index.html",
        "owner": "omar",
        "sensitivity": "internal",
        "permissions": {"model": "per-document"},
        "freshness": {"max_age": "7d"},
        "chunking": {"max_tokens": 256, "overlap": 16},
        "acl_rules": rules,
        "web": {
            "max_depth": 1,
            "max_pages": 40,
            "max_bytes": 1_000_000,
            "concurrency": 4,
            "per_host_rps": 200,
            "max_redirects": 4,
            **web,
        },
    }


RULES = [
    {"path": "/**", "acl": ["group:support"]},
    {"path": "/tutorial*.html", "acl": ["group:finance"]},
    {"path": "/index.html", "acl": ["public"]},
    # its canonical page's ACL: a duplicate of it (with another ACL it would be a document of its own,
    # tests/sources/test_web_canonical_acl.py)
    {"path": "/index-copy.html", "acl": ["public"]},
]


def failures(s: Any) -> str:
    return " | ".join(f["reason"] for f in s.failures)


@pytest.mark.slow  # crawls 1,171 pages from a local HTTP server: integration, full suite only
def test_crawl_of_the_postgresql_manual(ws: Workspace) -> None:
    with serve() as site:
        ws.configure([web_source(site.base, RULES)])
        s = ws.sync()["pgdocs"]
        assert s.status == "partial", s.as_dict()
        reasons = failures(s)
        assert "too many redirects" in reasons  # loop-a <-> loop-b
        assert "outside the allowed domains: localhost" in reasons  # never followed off the domain
        assert "page too large" in reasons  # big.html
        assert site.hits["/private/secret.html"] == 0  # robots.txt respected
        assert site.hits["/robots.txt"] == 1
        assert site.hits["/index.html"] == 1 and site.hits["/index-copy.html"] == 1
        index = Index.for_runtime(ws.rt)
        states = index.document_states("pgdocs")
        assert (
            f"{site.base}/index.html" in states and f"{site.base}/index-copy.html" not in states
        )  # canonical
        assert 20 <= len(states) <= 40
        tutorial = f"{site.base}/tutorial.html"
        preface = f"{site.base}/preface.html"
        assert tutorial in states and preface in states
        canaries = {
            tutorial: ("tutorial", {"group:finance"}),
            preface: ("preface", {"group:support"}),
        }
        check_matrix(ws.rt, index, "pgdocs", canaries)

        # re-sync: conditional requests, every page answers 304, nothing is embedded
        before, hits_before = CountingEmbedder.texts, sum(site.hits.values())
        s = ws.sync()["pgdocs"]
        assert s.unchanged == len(states) and s.added == s.updated == s.deleted == 0, s.as_dict()
        assert site.not_modified >= len(states) - 1
        assert CountingEmbedder.texts == before

        # one page changes at the source: only it is re-read and re-embedded
        site.overrides["preface.html"] = (
            b"<html><head><title>Preface</title></head><body><h1>Preface</h1><p>rewritten preface</p></body></html>"
        )
        s = ws.sync()["pgdocs"]
        assert (s.updated, s.unchanged) == (1, len(states) - 1), s.as_dict()
        assert sum(site.hits.values()) > hits_before

        # ACL change in the charter: --acl-only, no request to the site, no embedding
        ws.configure(
            [web_source(site.base, [*RULES, {"path": "/tutorial*.html", "acl": ["group:platform"]}])]
        )
        hits, before = sum(site.hits.values()), CountingEmbedder.texts
        [s] = sync_sources(ws.rt, acl_only=True)
        assert s.acl_changed >= 1 and sum(site.hits.values()) == hits and CountingEmbedder.texts == before
        canaries[tutorial] = ("tutorial", {"group:platform"})
        check_matrix(ws.rt, Index.for_runtime(ws.rt), "pgdocs", canaries)


def test_sitemap_mode_and_limits(ws: Workspace, tmp_path: Any) -> None:
    pages = ["tutorial.html", "preface.html", "intro-whatis.html", "history.html"]
    with serve(pages) as site:
        urls = "".join(
            f"<url><loc>{site.base}/{p}</loc></url>" for p in [*pages, "big.html", "private/secret.html"]
        )
        site.overrides["sitemap.xml"] = (
            '<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
            + urls
            + "</urlset>"
        ).encode()
        ws.configure(
            [web_source(site.base, RULES, sitemap=f"{site.base}/sitemap.xml", content_types=["text/html"])]
        )
        s = ws.sync()["pgdocs"]
        assert s.added == 4 and s.failed == 2, s.as_dict()  # big.html too large, secret disallowed by robots
        assert "robots.txt" in failures(s) and site.hits["/private/secret.html"] == 0
