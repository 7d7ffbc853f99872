"""A local HTTP server serving Debian's PostgreSQL 15 HTML manual (``postgresql-doc-15``, installed by
scripts/setup) plus the traps a crawler must survive: robots.txt, ETags / Last-Modified with 304s, a
redirect loop, an off-domain redirect, an oversized page, a duplicate page with a canonical link."""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

DOC_DIR = Path("/usr/share/doc/postgresql-doc-15/html")
INSTALL = "the PostgreSQL manual is missing: apt-get install postgresql-doc-15 (scripts/setup does it)"


def require_docs() -> Path:
    if not (DOC_DIR / "index.html").is_file():
        pytest.fail(INSTALL, pytrace=False)
    return DOC_DIR


class Site:
    def __init__(self, root: Path, pages: list[str] | None) -> None:
        self.root = root
        self.pages = pages  # None: every file; else only these (and the traps)
        self.hits: Counter[str] = Counter()
        self.not_modified = 0
        self.robots = "User-agent: *\nDisallow: /private/\n"
        self.overrides: dict[str, bytes] = {}
        self.port = 0
        self.lock = threading.Lock()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def body(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        if path == "/robots.txt":
            return 200, self.robots.encode(), {"Content-Type": "text/plain"}
        if path == "/loop-a.html":
            return 302, b"", {"Location": "/loop-b.html"}
        if path == "/loop-b.html":
            return 302, b"", {"Location": "/loop-a.html"}
        if path == "/away.html":
            return 301, b"", {"Location": f"http://localhost:{self.port}/index.html"}  # another host name
        if path == "/big.html":
            return 200, b"<html><body>" + b"x" * 3_000_000 + b"</body></html>", {"Content-Type": "text/html"}
        if path == "/private/secret.html":
            return 200, b"<html><body>robots say no</body></html>", {"Content-Type": "text/html"}
        if path == "/index-copy.html":
            data = (self.root / "index.html").read_bytes()
            data = data.replace(b"<head>", b'<head><link rel="canonical" href="/index.html">', 1)
            return 200, data, {"Content-Type": "text/html"}
        name = path.lstrip("/") or "index.html"
        if name in self.overrides:
            return 200, self.overrides[name], {"Content-Type": "text/html"}
        if self.pages is not None and name not in self.pages:
            return 404, b"not here", {"Content-Type": "text/plain"}
        f = self.root / name
        if "/" in name or not f.is_file():
            return 404, b"not here", {"Content-Type": "text/plain"}
        ctype = (
            "text/html"
            if name.endswith(".html")
            else "text/css"
            if name.endswith(".css")
            else "image/svg+xml"
        )
        data = f.read_bytes()
        if name == "index.html":  # the traps are linked from the start page
            at = data.index(b">", data.index(b"<body")) + 1
            data = (
                data[:at]
                + b'<a href="loop-a.html">loop</a> <a href="away.html">away</a> <a href="big.html">big</a> '
                b'<a href="private/secret.html">private</a> <a href="index-copy.html">copy</a> '
                b'<a href="tutorial.html">tutorial</a> <a href="preface.html">preface</a>' + data[at:]
            )
        return 200, data, {"Content-Type": ctype}


@contextmanager
def serve(pages: list[str] | None = None) -> Iterator[Site]:
    site = Site(require_docs(), pages)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            with site.lock:
                site.hits[path] += 1
            status, data, headers = site.body(path)
            if status == 200 and path != "/robots.txt":
                etag = '"' + hashlib.sha256(data).hexdigest()[:20] + '"'
                headers["ETag"] = etag
                headers["Last-Modified"] = formatdate(1_700_000_000, usegmt=True)
                if self.headers.get("If-None-Match") == etag:
                    with site.lock:
                        site.not_modified += 1
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
            reply(self, status, data, headers)

    with http_server(Handler) as port:
        site.port = port
        yield site


def reply(handler: BaseHTTPRequestHandler, status: int, data: bytes, headers: dict[str, str]) -> None:
    """Send one whole response (with its Content-Length)."""
    handler.send_response(status)
    for k, v in headers.items():
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


@contextmanager
def http_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """A threaded HTTP server on a free loopback port (yielded), stopped on exit."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def static_site(
    pages: dict[str, bytes],
    *,
    redirects: dict[str, str] | None = None,
    sitemap: list[str] | None = None,
    lookup: Callable[[str], str] = lambda path: path,
    conditional: list[str] | None = None,
    robots: bytes | int | None = b"User-agent: *\nAllow: /\n",
) -> Iterator[str]:
    """A small site on a loopback port (its base URL yielded): ``pages`` (path -> HTML) with ETags and 304s,
    ``redirects`` (path -> Location, 302), ``/sitemap.xml`` listing ``sitemap`` paths, a robots.txt that
    allows everything (``robots``: another body, an HTTP status to answer it with, or ``None`` to drop the
    connection). ``lookup`` maps a request path to a key of ``pages`` (a server that decodes escapes or
    ignores case); ``conditional`` collects the paths requested with ``If-None-Match``."""
    base: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            raw = self.path.split("?", 1)[0]
            path = lookup(raw)
            if raw in (redirects or {}):
                reply(self, 302, b"", {"Location": (redirects or {})[raw]})
            elif raw == "/robots.txt" and robots is None:
                self.close_connection = True  # no response at all: a network error for the client
            elif raw == "/robots.txt" and isinstance(robots, int):
                reply(self, robots, b"", {"Content-Type": "text/plain"})
            elif raw == "/robots.txt":
                reply(self, 200, robots or b"", {"Content-Type": "text/plain"})
            elif raw == "/sitemap.xml" and sitemap is not None:
                urls = "".join(f"<url><loc>{base['url']}{p}</loc></url>" for p in sitemap)
                body = f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>'
                reply(self, 200, body.encode(), {"Content-Type": "application/xml"})
            elif path in pages:
                etag = '"' + hashlib.sha256(pages[path]).hexdigest()[:20] + '"'
                if self.headers.get("If-None-Match") and conditional is not None:
                    conditional.append(raw)
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.end_headers()
                    return
                reply(self, 200, pages[path], {"Content-Type": "text/html", "ETag": etag})
            else:
                reply(self, 404, b"not here", {"Content-Type": "text/plain"})

    with http_server(Handler) as port:
        base["url"] = f"http://127.0.0.1:{port}"
        yield base["url"]
