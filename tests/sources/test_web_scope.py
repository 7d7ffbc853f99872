"""The web connector's scope is the site, not the host: another service on an allowed host (``:8080``, an
admin UI, ``:6379``) is reached only when ``allowed_domains`` names it as ``host:port``. And links that are
not valid URLs (a port out of range, a broken IPv6 literal, a redirect to one) are skipped or fail their
page; they used to raise ``ValueError`` out of the crawl and stop the whole source's sync. Real HTTP servers
on loopback ports."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from charter.retrieval import Index
from tests.sources._site import static_site
from tests.sources.conftest import Workspace
from tests.sources.test_web import web_source

RULES = [{"path": "/**", "acl": ["public"]}]


@contextmanager
def server(pages: dict[str, bytes], redirects: dict[str, str] | None = None) -> Iterator[str]:
    with static_site(pages, redirects=redirects) as base:
        yield base


def _html(word: str, links: tuple[str, ...] | list[str] = ()) -> bytes:
    anchors = "".join(f'<a href="{u}">x</a>' for u in links)
    return f"<html><body><p>word {word}</p>{anchors}</body></html>".encode()


def _ids(ws: Workspace) -> set[str]:
    return set(Index.for_runtime(ws.rt).document_states("pgdocs"))


def test_another_port_of_an_allowed_host_is_outside_the_site_unless_listed(ws: Workspace) -> None:
    with server({"/admin.html": _html("drisseth")}) as admin:
        bad = [
            f"{admin}/admin.html",  # the same host, another service
            "http://127.0.0.1:99999/x.html",  # a port out of range
            "http://[::1/x.html",  # a broken IPv6 literal
            "/jump.html",
        ]
        with server(
            {"/index.html": _html("fennigal", bad)}, {"/jump.html": "http://127.0.0.1:99999/y"}
        ) as site:
            ws.configure([web_source(site, RULES, content_types=["text/html"])])
            s = ws.sync()["pgdocs"]
            assert s.status in ("succeeded", "partial"), s.as_dict()
            assert _ids(ws) == {f"{site}/index.html"}
            reasons = " | ".join(f["reason"] for f in s.failures)
            assert "invalid URL" in reasons or "not a valid port" in reasons, s.as_dict()
            # listed as host:port, the other service is part of the site
            host, port = admin.rsplit(":", 1)
            site_host = site.removeprefix("http://")
            listed = [site_host, f"{host.removeprefix('http://')}:{port}"]
            ws.configure([web_source(site, RULES, content_types=["text/html"], allowed_domains=listed)])
            ws.sync()
            assert _ids(ws) == {f"{site}/index.html", f"{admin}/admin.html"}
