"""The ``web`` connector: pages of a website, from its sitemap or by crawling from a start URL.

``location`` is the start URL; ``web.sitemap`` a sitemap (or sitemap index) URL to read instead of crawling.

Politeness and limits (all in the ``web`` section):

* only hosts in ``allowed_domains`` (default: the start URL's host) and paths matching ``allowed_paths``;
  links deeper than ``max_depth`` from the start page are not followed; at most ``max_pages`` per sync;
* ``robots.txt`` of each host is read first (``protego``) and respected for ``user_agent``, including its
  ``Crawl-delay`` when that is slower than ``per_host_rps``, as RFC 9309 says: redirects followed (up to
  five, within the site's scope), 4xx sets no rules, 401/403, 5xx and network errors disallow everything;
* ``concurrency`` requests in flight overall, at most ``per_host_rps`` request starts per second per host;
* redirects are followed by hand, at most ``max_redirects`` per page, each hop checked against the allowed
  domains, paths and robots.txt (a redirect loop or an off-domain redirect fails that page only);
* bodies larger than ``max_bytes`` are cut off while streaming and the page fails; content types outside
  ``content_types`` are skipped.

The document id is the **URL that served the page** (after redirects, without fragment), and its ACL is
that URL's. A page whose ``<link rel="canonical">`` names another allowed URL *with the same ACL* is a
duplicate: it is skipped and the canonical URL is fetched itself (so a duplicate never stands in for its
canonical page's content); a page whose canonical URL has another ACL is a document of its own (a
restricted page pointing at a public one must not become it). Incremental syncs send
``If-None-Match`` / ``If-Modified-Since`` with the validators saved in the cursor; a ``304`` page is
reported unchanged and its saved links are followed. ACLs come from the charter's ``acl_rules`` matched
against the URL path (last match wins); an unmatched page has no ACL (private under ``per-document``).
"""

from __future__ import annotations

import re
import threading
import time
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit, urlunsplit

from charter.sources._acl import glob_match, rule_acl
from charter.sources._connector import (
    AclEntry,
    ConnectorContext,
    Failed,
    Item,
    SourceUnavailable,
    Unchanged,
    connector,
)
from charter.sources._extract import HtmlText, decode_text, html_to_text
from charter.spec import WebOptions

MAX_SITEMAP_BYTES = 50_000_000
# The cursor's page records. 2: a document is the URL that served it (a same-ACL canonical link marks an
# alias). Records of version 1 named a page's canonical URL as its document, whatever its ACL: a page with
# such a record is read again in full once (no conditional request), never answered "unchanged" from it.
RECORD_VERSION = 2
MAX_LINKS_PER_PAGE = 2000
MAX_ROBOTS_BYTES = 512 * 1024  # RFC 9309 2.5: parse at least 500 KiB; the rest is ignored
MAX_ROBOTS_REDIRECTS = 5  # RFC 9309 2.3.1.2: follow at least five
DISALLOW_ALL = "User-agent: *\nDisallow: /\n"
#: what :func:`read_capped` can decode; asked for in every request (httpx would otherwise offer brotli too)
ACCEPT_ENCODING = "gzip, deflate"


class _PageError(Exception):
    pass


class _TooLarge(Exception):
    pass


def _decoder(encoding: str) -> Any:
    """A streaming decoder for a Content-Encoding (``None``: identity), or ValueError if not supported."""
    codings = [
        c.strip().lower() for c in encoding.split(",") if c.strip() and c.strip().lower() != "identity"
    ]
    if not codings:
        return None
    if codings in (["gzip"], ["x-gzip"]):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if codings == ["deflate"]:
        return zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib-wrapped (or gzip), as servers send it
    raise ValueError(f"unsupported Content-Encoding: {encoding}")


def read_capped(response: Any, limit: int, *, truncate: bool = False) -> bytes:
    """The body of a streamed httpx ``response``, decoded here (not by httpx, which expands each received
    chunk whole: 64 KB of gzip can become 64 MB) so that at most ``limit`` decoded bytes are ever held.
    Past the limit: :class:`_TooLarge`, or with ``truncate`` the first ``limit`` bytes."""
    return inflate(
        response.iter_raw(), response.headers.get("content-encoding", ""), limit, truncate=truncate
    )


def inflate(chunks: Iterable[bytes], encoding: str, limit: int, *, truncate: bool = False) -> bytes:
    """``chunks`` decoded from ``encoding`` (a Content-Encoding; ``gzip`` for a ``.gz`` file, every member
    read as ``gzip.decompress`` does), never more than ``limit`` decoded bytes held: a few kilobytes of gzip
    can expand to gigabytes. Past the limit: :class:`_TooLarge`, or with ``truncate`` the first ``limit``
    bytes; an encoding that is not supported or not valid: ValueError."""
    decoder = _decoder(encoding)
    out: list[bytes] = []
    size = 0
    for raw in chunks:
        data = raw
        while data:
            if decoder is None:
                part, data = data, b""
            else:
                try:
                    part = decoder.decompress(data, limit + 1 - size)
                except zlib.error as exc:
                    raise ValueError(f"the body is not valid {encoding}: {exc}") from None
                data = decoder.unconsumed_tail
                if decoder.eof and decoder.unused_data:  # another gzip member follows
                    data = decoder.unused_data + data
                    decoder = _decoder(encoding)
            size += len(part)
            out.append(part)
            if size > limit:
                if truncate:
                    return b"".join(out)[:limit]
                raise _TooLarge(f"over {limit:,} bytes")
    if decoder is not None and not decoder.eof:
        raise ValueError(f"the body is not valid {encoding}: it ends before its end marker")
    return b"".join(out)


@dataclass(frozen=True)
class _Rule:
    path: str
    acl: tuple[str, ...]


def _url_acl(ctx: ConnectorContext, url: str) -> frozenset[str] | None:
    """The ACL the charter's ``acl_rules`` give ``url``'s path (``None``: no rule matches) — the same however
    the server reads the path. Servers differ: some decode every escape (``/board%2Fx`` is ``/board/x``),
    some ignore case (``/BOARD/x``). The path is matched as it is, fully decoded, and both case-folded (rules
    too); if these disagree the document gets what *all* of them allow (their intersection: possibly no one
    but the source's owner), so no spelling of a URL reaches a restricted page under a wider rule."""
    rules = ctx.source.acl_rules
    path = urlsplit(url).path
    decoded = decoded_path(path)
    folded = [_Rule(r.path.lower(), tuple(r.acl)) for r in rules]
    found = {
        rule_acl(rules, path),
        rule_acl(rules, decoded),
        rule_acl(folded, path.lower()),
        rule_acl(folded, decoded.lower()),
    }
    if len(found) == 1:
        return found.pop()
    if None in found:
        return None
    return frozenset.intersection(*(a for a in found if a is not None))


def _too_large(url: str) -> str:
    return f"the sitemap {url} is larger than {MAX_SITEMAP_BYTES:,} bytes (the sitemap protocol's limit)"


def normalise_url(url: str) -> str:
    """Scheme and host lower-cased, default port dropped, fragment removed, empty path as ``/``, and the path
    normalised as RFC 3986 6.2.2 says (see :func:`normal_path`)."""
    url, _ = urldefrag(url.strip())
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port
    if port and not ((parts.scheme == "http" and port == 80) or (parts.scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    return urlunsplit((parts.scheme.lower(), host, normal_path(parts.path or "/"), parts.query, ""))


def resolve(base: str, href: str) -> str | None:
    """``href`` resolved against ``base`` and normalised, or ``None`` when it is not a valid URL (a port out
    of range or not a number, a broken IPv6 literal): such a link is skipped, never a failed sync."""
    try:
        return normalise_url(urljoin(base, href))
    except ValueError:
        return None


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")


def normal_path(path: str) -> str:
    """A URL path as RFC 3986 6.2.2 normalises it: percent-encoded unreserved characters decoded (``%62`` is
    ``b``), other escapes upper-cased, dot segments removed (``/a/../b`` is ``/b``)."""

    def escape(m: re.Match[str]) -> str:
        ch = chr(int(m.group(1), 16))
        return ch if ch in _UNRESERVED else "%" + m.group(1).upper()

    return remove_dot_segments(_PERCENT.sub(escape, path)) or "/"


def decoded_path(path: str) -> str:
    """``path`` as a server that decodes every escape reads it (``%2F`` as ``/``), dot segments resolved."""
    return remove_dot_segments(unquote(path))


def remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4: ``.`` and ``..`` segments resolved (never above the root)."""
    absolute = path.startswith("/")
    out: list[str] = []
    for segment in (path[1:] if absolute else path).split("/"):
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    result = ("/" if absolute else "") + "/".join(out)
    if path.endswith(("/.", "/..")) and not result.endswith("/"):
        result += "/"
    return result


class _HostLimiter:
    """Request starts per host no closer than ``interval`` seconds (thread-safe)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.next_at: dict[str, float] = {}
        self.delays: dict[str, float] = {}
        self.lock = threading.Lock()

    def wait(self, host: str) -> None:
        with self.lock:
            now = time.monotonic()
            gap = max(self.interval, self.delays.get(host, 0.0))
            at = max(now, self.next_at.get(host, 0.0))
            self.next_at[host] = at + gap
        if at > now:
            time.sleep(at - now)


@dataclass
class _Page:
    url: str  # as requested
    final: str = ""
    status: int = 0
    body: bytes = b""
    content_type: str = ""
    etag: str | None = None
    last_modified: str | None = None
    error: str | None = None
    links: list[str] = field(default_factory=list)


@connector("web")
class WebConnector:
    """Pages of a website (sitemap or crawl), politely, with conditional requests; ACL per URL pattern."""

    def _opts(self, ctx: ConnectorContext) -> WebOptions:
        return ctx.source.web or WebOptions()

    def _setup(self, ctx: ConnectorContext) -> None:
        import httpx

        opts = self._opts(ctx)
        start = normalise_url(ctx.source.location)
        parts = urlsplit(start)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise SourceUnavailable(f"source {ctx.source.id!r}: location must be an http(s) URL: {start}")
        self.opts = opts
        self.start = start
        # Hosts, and the ports other than 80/443 that may be reached on them: the start URL's, and any
        # ``host:port`` listed in allowed_domains. Another service on an allowed host (``:8080``, ``:6379``)
        # is not part of the site.
        self.domains: set[str] = set()
        self.ports: set[tuple[str, int]] = set()
        for entry in opts.allowed_domains or [parts.netloc]:
            try:
                d = urlsplit("//" + entry.strip().lower())
                host, port = d.hostname, d.port
            except ValueError:
                raise SourceUnavailable(
                    f"source {ctx.source.id!r}: allowed_domains entry {entry!r} is not a host"
                ) from None
            if host:
                self.domains.add(host)
                if port is not None:
                    self.ports.add((host, port))
        if parts.port is not None:
            self.ports.add((parts.hostname.lower(), parts.port))
        self.limiter = _HostLimiter(1.0 / opts.per_host_rps)
        self.robots: dict[str, Any] = {}
        self.robots_lock = threading.Lock()
        self.client = httpx.Client(
            timeout=opts.timeout.total_seconds(),
            follow_redirects=False,
            headers={"User-Agent": opts.user_agent, "Accept-Encoding": ACCEPT_ENCODING},
            limits=httpx.Limits(max_connections=opts.concurrency),
        )

    # ------------------------------------------------------------------------------------ rules
    def allowed(self, url: str) -> str | None:
        """``None`` if ``url`` may be fetched, else why not."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            return f"not http(s): {url}"
        host = (parts.hostname or "").lower()
        if host not in self.domains:
            return f"outside the allowed domains: {parts.hostname}"
        try:
            port = parts.port
        except ValueError:
            return f"not a valid port: {url[:200]}"
        if port is not None and port not in (80, 443) and (host, port) not in self.ports:
            return f"outside the allowed ports: {host}:{port} (list it in allowed_domains as host:port)"
        # as written and fully decoded: a server that decodes ``%2F`` serves ``/docs/..%2Fadmin`` as ``/admin``
        for path in {parts.path or "/", decoded_path(parts.path or "/")}:
            if not any(glob_match(p, path) for p in self.opts.allowed_paths):
                return f"outside the allowed paths: {parts.path}"
        return None

    def _robots_for(self, url: str) -> Any:
        from protego import Protego

        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        with self.robots_lock:
            if origin in self.robots:
                return self.robots[origin]
        text = ""  # RFC 9309: a robots.txt that is "unavailable" (4xx, e.g. 404) sets no rules
        target = origin + "/robots.txt"
        try:
            for _hop in range(MAX_ROBOTS_REDIRECTS + 1):
                self.limiter.wait(f"{urlsplit(target).scheme}://{urlsplit(target).netloc}")
                with self.client.stream("GET", target) as r:
                    if r.status_code in (301, 302, 303, 307, 308):
                        # followed (RFC 9309 2.3.1.2), within the site's scope only; the rules are the origin's
                        nxt = resolve(target, r.headers.get("location", ""))
                        if nxt is None or self.allowed(nxt) is not None:
                            break
                        target = nxt
                        continue
                    if r.status_code == 200:
                        body = read_capped(r, MAX_ROBOTS_BYTES, truncate=True)
                        text = body.decode("utf-8", "replace")
                    elif r.status_code in (401, 403) or r.status_code >= 500:
                        text = DISALLOW_ALL  # unauthorised, or "unreachable" (RFC 9309 2.3.1.4)
                    break
        except Exception:  # a network error: robots.txt "unreachable", so complete disallow
            text = DISALLOW_ALL
        rules = Protego.parse(text)
        delay = rules.crawl_delay(self.opts.user_agent)
        if delay:
            self.limiter.delays[origin] = min(float(delay), 60.0)
        with self.robots_lock:
            self.robots[origin] = rules
        return rules

    def robots_allow(self, url: str) -> bool:
        return bool(self._robots_for(url).can_fetch(url, self.opts.user_agent))

    # ------------------------------------------------------------------------------------ fetch
    def fetch(self, url: str, validators: dict[str, str] | None) -> _Page:
        page = _Page(url)
        current = url
        for _hop in range(self.opts.max_redirects + 1):
            why = self.allowed(current)
            if why is not None:
                page.error = f"redirected {why}" if current != url else why
                return page
            if not self.robots_allow(current):
                page.error = f"disallowed by robots.txt: {current}"
                return page
            headers = {}
            if validators and current == url:
                if validators.get("etag"):
                    headers["If-None-Match"] = validators["etag"]
                if validators.get("last_modified"):
                    headers["If-Modified-Since"] = validators["last_modified"]
            host = urlsplit(current).netloc
            self.limiter.wait(f"{urlsplit(current).scheme}://{host}")
            with self.client.stream("GET", current, headers=headers) as r:
                if r.status_code in (301, 302, 303, 307, 308):
                    loc = r.headers.get("location")
                    if not loc:
                        page.error = f"redirect without a Location ({r.status_code})"
                        return page
                    target = resolve(current, loc)
                    if target is None:
                        page.error = f"redirect to an invalid URL: {loc[:200]}"
                        return page
                    current = target
                    continue
                page.final, page.status = current, r.status_code
                if r.status_code == 304:
                    return page
                if r.status_code != 200:
                    page.error = f"HTTP {r.status_code}"
                    return page
                ctype = r.headers.get("content-type", "").split(";")[0].strip().lower()
                page.content_type = ctype
                if ctype not in self.opts.content_types:
                    page.error = f"content type {ctype or 'unknown'} is not accepted"
                    return page
                declared = r.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self.opts.max_bytes:
                    page.error = f"page too large: {declared} bytes (limit {self.opts.max_bytes})"
                    return page
                try:
                    page.body = read_capped(r, self.opts.max_bytes)
                except _TooLarge:
                    page.error = f"page too large: over {self.opts.max_bytes} bytes"
                    return page
                except ValueError as exc:  # an encoding it cannot be, or a broken one
                    page.error = str(exc)
                    return page
                page.etag = r.headers.get("etag")
                page.last_modified = r.headers.get("last-modified")
                return page
        page.error = f"too many redirects (more than {self.opts.max_redirects}; a loop?)"
        return page

    # ------------------------------------------------------------------------------------ sitemap
    def _sitemap_urls(self, url: str, depth: int = 0) -> list[str]:
        import httpx

        if depth > 3:
            return []
        try:
            if self.allowed(url) is not None or not self.robots_allow(url):
                raise SourceUnavailable(f"sitemap not allowed: {url}")
            self.limiter.wait(f"{urlsplit(url).scheme}://{urlsplit(url).netloc}")
            with self.client.stream("GET", url) as r:
                if r.status_code != 200:
                    raise SourceUnavailable(f"cannot read the sitemap {url}: HTTP {r.status_code}")
                data = read_capped(r, MAX_SITEMAP_BYTES)  # a Content-Encoding bomb is never held whole
        except _TooLarge:
            raise SourceUnavailable(_too_large(url)) from None
        except (httpx.HTTPError, ValueError) as exc:
            raise SourceUnavailable(f"cannot read the sitemap {url}: {exc}") from None
        if data[:2] == b"\x1f\x8b":  # a .xml.gz sitemap
            try:
                data = inflate([data], "gzip", MAX_SITEMAP_BYTES)
            except _TooLarge:
                raise SourceUnavailable(_too_large(url)) from None
            except ValueError as exc:
                raise SourceUnavailable(f"cannot read the sitemap {url}: {exc}") from None
        try:
            root = ET.fromstring(data)  # noqa: S314 - stdlib parser: no external entities are resolved
        except ET.ParseError as exc:
            raise SourceUnavailable(f"the sitemap {url} is not valid XML: {exc}") from None
        urls: list[str] = []
        for el in root.iter():
            if el.tag.endswith("loc") and el.text:
                loc = resolve(url, el.text.strip())
                if loc is None:
                    continue
                if root.tag.endswith("sitemapindex"):
                    urls += self._sitemap_urls(loc, depth + 1)
                else:
                    urls.append(loc)
        return urls

    # ------------------------------------------------------------------------------------ sync
    def documents(self, ctx: ConnectorContext) -> Iterator[Item]:
        self._setup(ctx)
        opts = self.opts
        saved: dict[str, Any] = dict((ctx.cursor or {}).get("pages", {}))
        new_pages: dict[str, Any] = {}
        emitted: set[str] = set()
        try:
            if opts.sitemap:
                frontier = [(u, 0) for u in self._sitemap_urls(normalise_url(opts.sitemap))]
                follow = False
            else:
                frontier = [(self.start, 0)]
                follow = True
            queued = {u for u, _ in frontier}
            # URLs some page named as its canonical page: fetched as such, each is a document of its own
            # whatever its own canonical link says (so a loop — /a/ says /a, /a redirects to /a/ — or a
            # chain never leaves the content unindexed)
            named: set[str] = set()
            handled: set[str] = set()  # URLs whose response was handled
            in_flight: dict[Future[_Page], tuple[str, int]] = {}
            fetched = 0
            with ThreadPoolExecutor(max_workers=opts.concurrency, thread_name_prefix="charter-web") as pool:
                while frontier or in_flight:
                    while frontier and len(in_flight) < opts.concurrency and fetched < opts.max_pages:
                        url, depth = frontier.pop(0)
                        prev = saved.get(url)
                        validators = (
                            prev
                            if prev
                            and prev.get("doc") in ctx.known
                            and prev.get("v") == RECORD_VERSION
                            and not (url in named and prev.get("alias_of"))  # now wanted as a document
                            else None
                        )
                        in_flight[pool.submit(self._safe_fetch, url, validators)] = (url, depth)
                        fetched += 1
                    if not in_flight:
                        break
                    done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                    for fut in done:
                        url, depth = in_flight.pop(fut)
                        page = fut.result()
                        items, links, record = self._handle(
                            ctx, page, saved.get(url), emitted, named=url in named
                        )
                        if record is not None:
                            new_pages[url] = record
                            alias_of = record.get("alias_of")
                            if alias_of and alias_of not in named:  # the canonical page, in any mode
                                named.add(alias_of)  # a fetch still to be handled is handled as named
                                if alias_of not in queued:
                                    queued.add(alias_of)
                                    frontier.append((alias_of, depth))
                                elif alias_of in handled and alias_of not in emitted:
                                    # handled already as an ordinary page that was itself a duplicate:
                                    # fetched once more, as the canonical page (not counted as a new page)
                                    frontier.append((alias_of, depth))
                                    fetched -= 1
                        handled.add(url)
                        yield from items
                        if follow and depth < opts.max_depth:
                            for link in links:
                                if link not in queued and self.allowed(link) is None:
                                    queued.add(link)
                                    frontier.append((link, depth + 1))
        finally:
            self.client.close()
        ctx.new_cursor = {"pages": new_pages}

    def _safe_fetch(self, url: str, validators: dict[str, str] | None) -> _Page:
        try:
            return self.fetch(url, validators)
        except Exception as exc:  # network errors fail that page only
            return _Page(url, error=f"{type(exc).__name__}: {exc}"[:300])

    def _handle(
        self,
        ctx: ConnectorContext,
        page: _Page,
        prev: dict[str, Any] | None,
        emitted: set[str],
        *,
        named: bool = False,
    ) -> tuple[list[Item], list[str], dict[str, Any] | None]:
        if page.error is not None:
            doc_id = prev.get("doc") if prev else None
            return [Failed(doc_id if doc_id in ctx.known else None, f"{page.url}: {page.error}")], [], prev
        if page.status == 304 and prev is not None:
            doc_id = prev["doc"]
            if prev.get("alias_of") and not named:  # still a duplicate of its canonical page (fetched itself)
                return [], list(prev.get("links", [])), prev
            if doc_id in emitted:
                return [], list(prev.get("links", [])), prev
            emitted.add(doc_id)
            acl = _url_acl(ctx, doc_id)
            err = None if acl is not None else "no acl_rules entry matches this URL"
            return [Unchanged(doc_id, acl, err, acl_known=True)], list(prev.get("links", [])), prev
        final = page.final or page.url
        if page.content_type == "text/html":
            html = html_to_text(page.body)  # one parse: text, title, links and canonical URL
            text, title = html.text, html.title
            links, canonical = _links(html, final)
        else:
            text, title, links, canonical = decode_text(page.body), None, [], None
        doc_id = normalise_url(final)
        # A document is what its own URL serves, with that URL's ACL. A page whose canonical link names
        # another allowed URL with the same ACL is a duplicate of it: skipped, and the canonical URL is
        # fetched itself (never replaced by a duplicate's content, whichever comes first). One whose
        # canonical URL has another ACL is a document of its own: a restricted page whose canonical link
        # points at a public one (a login wall or paywall often does) must not be indexed as that page.
        acl = _url_acl(ctx, doc_id)
        record = {
            "doc": doc_id,
            "etag": page.etag,
            "last_modified": page.last_modified,
            "links": links[:MAX_LINKS_PER_PAGE],
            "v": RECORD_VERSION,
        }
        if (
            not named
            and canonical
            and canonical != doc_id
            and self.allowed(canonical) is None
            and _url_acl(ctx, canonical) == acl
        ):
            return [], links, {**record, "doc": canonical, "alias_of": canonical}
        if doc_id in emitted:
            return [], links, record  # another URL of the same canonical page
        emitted.add(doc_id)
        err = None if acl is not None else "no acl_rules entry matches this URL"
        fmt = "html" if page.content_type == "text/html" else "text"
        doc = ctx.document(
            doc_id=doc_id,
            title=(title or urlsplit(doc_id).path.rstrip("/").rsplit("/", 1)[-1] or doc_id),
            text=text,
            format=fmt,
            url=doc_id,
            acl=acl,
            acl_error=err,
            version=(page.etag or page.last_modified or "")[:200] or None,
        )
        return [doc], links, record

    def acls(self, ctx: ConnectorContext) -> Iterator[AclEntry]:
        """ACLs come from the charter's URL patterns: every indexed page (its id is the URL that served
        it), no request at all."""
        for doc_id in ctx.known or self._known_ids(ctx):
            acl = _url_acl(ctx, doc_id)
            yield AclEntry(doc_id, acl, None if acl is not None else "no acl_rules entry matches this URL")

    @staticmethod
    def _known_ids(ctx: ConnectorContext) -> list[str]:
        pages = (ctx.cursor or {}).get("pages", {})
        return sorted(
            {
                p["doc"]
                for p in pages.values()
                if isinstance(p, dict) and p.get("doc") and not p.get("alias_of")
            }
        )


def _links(html: HtmlText, base: str) -> tuple[list[str], str | None]:
    """The page's links to follow (``<a href>`` without ``rel=nofollow``, resolved against ``<base
    href>``; no mailto/javascript/tel/fragment links) and its canonical URL, from the one parse."""
    if html.base is not None:
        base = resolve(base, html.base) or base
    canonical = resolve(base, html.url) if html.url is not None else None
    out: list[str] = []
    seen: set[str] = set()
    for href, rel in html.links:
        if "nofollow" in rel.split():
            continue
        href = href.strip()
        if not href or href.startswith(("mailto:", "javascript:", "tel:", "#")):
            continue
        u = resolve(base, href)
        if u is not None and u not in seen:
            seen.add(u)
            out.append(u)
    return out, canonical
