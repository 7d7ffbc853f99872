"""Responses that expand: a few hundred kilobytes of gzip (a ``.xml.gz`` sitemap, or ``Content-Encoding:
gzip`` on a sitemap, a page or robots.txt) that uncompress to hundreds of megabytes. The web connector
decodes every body itself with an output cap (``charter.sources._web.inflate``; httpx would expand each
received 64 KB chunk whole), so such a response fails with a clear reason — or, for robots.txt, is read up
to RFC 9309's 500 KiB — and never lands in memory whole (measured with ``tracemalloc``); a real,
multi-member ``.xml.gz`` still works.
"""

from __future__ import annotations

import tracemalloc
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

from charter.sources._web import MAX_SITEMAP_BYTES
from tests.sources._site import http_server, reply
from tests.sources.conftest import Workspace
from tests.sources.test_web import RULES, web_source

BOMB_BYTES = 400_000_000  # uncompressed; ~400 KB of gzip


def _gzip_member(chunks: Iterator[bytes]) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return b"".join(c.compress(chunk) for chunk in chunks) + c.flush()


def _bomb() -> bytes:
    zeros = bytes(1_000_000)
    return _gzip_member(zeros for _ in range(BOMB_BYTES // len(zeros)))


PAGE = b"<html><head><title>Refunds</title></head><body><h1>Refunds</h1><p>word quillet</p></body></html>"


@contextmanager
def site(*, robots_bomb: bool = False) -> Iterator[str]:
    bomb = _bomb()
    zeros = bytes(1_000_000)
    rules = b"User-agent: *\nDisallow: /private/\n"
    robots = _gzip_member(iter([rules] + [zeros] * (BOMB_BYTES // len(zeros)))) if robots_bomb else None
    base: dict[str, str] = {}
    sitemap = (
        '<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        "<url><loc>{base}/index.html</loc></url><url><loc>{base}/refunds.html</loc></url>"
        "<url><loc>{base}/private/x.html</loc></url></urlset>"
    )

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            headers = {"Content-Type": "text/html"}
            if self.path == "/robots.txt" and robots is not None:
                data, headers = robots, {"Content-Type": "text/plain", "Content-Encoding": "gzip"}
            elif self.path == "/robots.txt":
                data, headers = b"User-agent: *\nAllow: /\n", {"Content-Type": "text/plain"}
            elif self.path in ("/index.html", "/refunds.html", "/private/x.html"):
                data = PAGE.replace(b"quillet", self.path.encode())  # distinct pages (no duplicates)
            elif self.path == "/bomb.xml.gz":
                data, headers = bomb, {"Content-Type": "application/gzip"}
            elif self.path == "/bomb.xml":
                data, headers = bomb, {"Content-Type": "application/xml", "Content-Encoding": "gzip"}
            elif self.path == "/bomb.html":
                data, headers = bomb, {"Content-Type": "text/html", "Content-Encoding": "gzip"}
            elif self.path == "/good.xml.gz":  # two gzip members, as `cat a.gz b.gz` makes
                text = sitemap.replace("{base}", base["url"]).encode()
                half = len(text) // 2
                data = _gzip_member(iter([text[:half]])) + _gzip_member(iter([text[half:]]))
                headers = {"Content-Type": "application/gzip"}
            else:
                reply(self, 404, b"not here", {"Content-Type": "text/plain"})
                return
            reply(self, 200, data, headers)

    with http_server(Handler) as port:
        base["url"] = f"http://127.0.0.1:{port}"
        yield base["url"]


def _sync_peak(ws: Workspace) -> tuple[object, int]:
    tracemalloc.start()
    try:
        s = ws.sync()["pgdocs"]
        return s, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_sitemap_bomb_fails_the_source_without_landing_in_memory(ws: Workspace) -> None:
    assert BOMB_BYTES > 4 * MAX_SITEMAP_BYTES
    with site() as base:
        for path in ("bomb.xml.gz", "bomb.xml"):  # a .gz file; Content-Encoding: gzip
            ws.configure([web_source(base, RULES, sitemap=f"{base}/{path}", content_types=["text/html"])])
            s, peak = _sync_peak(ws)
            assert s.status == "failed" and "larger than" in (s.error or ""), s.as_dict()  # type: ignore[attr-defined]
            # what was held is bounded by the cap (plus one decoded chunk), not by what the gzip expands to
            assert peak < 2.5 * MAX_SITEMAP_BYTES, f"{path}: {peak:,} bytes traced at the peak"


def test_a_multi_member_gzip_sitemap_is_read(ws: Workspace) -> None:
    with site() as base:
        ws.configure([web_source(base, RULES, sitemap=f"{base}/good.xml.gz", content_types=["text/html"])])
        s = ws.sync()["pgdocs"]
        assert s.status == "succeeded" and s.added == 3, s.as_dict()


def test_a_page_bomb_fails_that_page_without_landing_in_memory(ws: Workspace) -> None:
    with site() as base:
        src = web_source(base, RULES, content_types=["text/html"], max_bytes=1_000_000)
        ws.configure([{**src, "location": f"{base}/bomb.html"}])
        s, peak = _sync_peak(ws)
        reasons = " ".join(f["reason"] for f in s.failures)  # type: ignore[attr-defined]
        assert "page too large" in reasons, s.as_dict()  # type: ignore[attr-defined]
        assert peak < 20_000_000, f"{peak:,} bytes traced at the peak"


def test_a_robots_txt_bomb_is_read_up_to_its_limit_and_still_obeyed(ws: Workspace) -> None:
    with site(robots_bomb=True) as base:
        ws.configure([web_source(base, RULES, sitemap=f"{base}/good.xml.gz", content_types=["text/html"])])
        s, peak = _sync_peak(ws)
        assert s.added == 2 and s.failed == 1, s.as_dict()  # type: ignore[attr-defined]
        assert "disallowed by robots.txt" in s.failures[0]["reason"]  # type: ignore[attr-defined]  # its first line
        assert peak < 20_000_000, f"{peak:,} bytes traced at the peak"
