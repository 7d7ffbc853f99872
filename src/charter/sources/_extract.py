"""Text extraction for the file formats the ``folder`` connector reads: front matter, HTML and PDF.

HTML becomes Markdown-like text — headings as ``#`` lines, list items as ``- `` lines, table rows as
``a | b`` lines — so the chunker can follow the document's structure. PDFs give one text per page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

_FM_OPEN = re.compile(r"\A(?:\ufeff)?---[ \t]*\r?\n")
_FM_CLOSE = re.compile(r"^(?:---|\.\.\.)[ \t]*\r?$", re.MULTILINE)
_ATX_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


_SafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: ~10x faster


def load_yaml(text: str) -> Any:
    """``yaml.safe_load`` with the C loader when PyYAML has it. A value YAML accepts but Python cannot build
    (an integer of more than 4,300 digits, a date like 2026-02-30) or nesting too deep to build is raised as
    :class:`yaml.YAMLError`, like any other invalid YAML (callers fail that document or its ACL closed)."""
    try:
        return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a safe loader
    except (ValueError, OverflowError, RecursionError) as exc:
        raise yaml.YAMLError(f"a value cannot be read: {str(exc).split(';')[0]}") from None


class ExtractionError(Exception):
    """The file cannot be turned into text (internal: the connector reports it as a failed document)."""


@dataclass
class FrontMatter:
    """Metadata at the top of a Markdown/text file, and the body after it."""

    meta: dict[str, Any] = field(default_factory=dict)
    body: str = ""
    error: str | None = None  # set when the block exists but is not a YAML mapping


def split_front_matter(text: str) -> FrontMatter:
    """Split ``---``-delimited YAML front matter from ``text``.

    A block that does not parse, is not a mapping, or is never closed is reported in ``error`` (the
    caller then treats the ACL as unparseable: fail closed); the body is what follows the block.
    """
    m = _FM_OPEN.match(text)
    if not m:
        return FrontMatter(body=text.lstrip("\ufeff"))
    close = _FM_CLOSE.search(text, m.end())
    if close is None:
        return FrontMatter(body=text[m.end() :], error="front matter is not closed with '---'")
    raw = text[m.end() : close.start()]
    body = text[close.end() :].lstrip("\r\n")
    try:
        meta = load_yaml(raw) if raw.strip() else {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 2}" if mark is not None else ""
        return FrontMatter(body=body, error=f"front matter is not valid YAML{where}")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        return FrontMatter(body=body, error="front matter is not a mapping of keys to values")
    return FrontMatter(meta={str(k): v for k, v in meta.items()}, body=body)


def first_heading(markdown: str) -> str | None:
    m = _ATX_HEADING.search(markdown)
    return m.group(1).strip() if m else None


def title_from_filename(path: Path) -> str:
    stem = path.name.split(".", 1)[0]
    words = re.sub(r"[-_]+", " ", stem).strip()
    return (words[:1].upper() + words[1:]) if words else path.name


def parse_timestamp(value: Any) -> datetime | None:
    """A front-matter or JSON timestamp as an aware UTC datetime; naive values are taken as UTC. ``None`` when
    it is not one — including one at the edge of the calendar that has no UTC time (``9999-12-31 23:59:59
    -12:00`` is in the year 10000)."""
    try:
        if isinstance(value, datetime):
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        if isinstance(value, str) and value.strip():
            parsed = datetime.fromisoformat(value.strip())
            return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
    return None


def decode_text(data: bytes) -> str:
    """UTF-8 text, or :class:`ExtractionError` for binary junk."""
    if b"\x00" in data:
        raise ExtractionError("binary content (NUL bytes) in a text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ExtractionError(f"not UTF-8 text (invalid byte at offset {exc.start})") from None


# ------------------------------------------------------------------------------------------------ HTML
_SKIP = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object", "button", "select"}
_HEADINGS = {f"h{i}": i for i in range(1, 7)}
_BLOCK = {
    "p",
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "aside",
    "nav",
    "ul",
    "ol",
    "table",
    "thead",
    "tbody",
    "tfoot",
    "blockquote",
    "dl",
    "dt",
    "dd",
    "figure",
    "figcaption",
    "form",
    "hr",
    "details",
    "summary",
    "address",
    "body",
    "html",
    "caption",
}
_WS = re.compile(r"\s+")


@dataclass
class HtmlText:
    title: str | None
    text: str
    url: str | None  # the canonical link's href, as written
    base: str | None = None  # the first ``<base href>``, as written
    links: list[tuple[str, str]] = field(default_factory=list)  # (href, rel) of every ``<a href>``


# Strings inside these elements are not page text (bs4 keeps them as Script/Stylesheet/TemplateString/ruby
# strings); the extraction below skips them wherever they appear, as the bs4-based extraction did.
_NOT_TEXT = frozenset({"script", "style", "template", "rt", "rp"})
_BODY_TAG = re.compile(rb"<body[\s/>]", re.IGNORECASE)
_HEAD_TAG = re.compile(rb"<head[\s/>]", re.IGNORECASE)


def decode_html(data: bytes) -> str:
    """HTML bytes as text: a byte-order mark, then the document's declared encoding (``<meta charset>``,
    an XML declaration), then UTF-8, then Windows-1252 (bs4's ``UnicodeDammit``, as before)."""
    from bs4.dammit import UnicodeDammit

    text = UnicodeDammit(data, is_html=True).unicode_markup
    return text if text is not None else data.decode("utf-8", "replace")


def _strings(el: Any, out: list[str]) -> list[str]:
    """The text strings under ``el`` in document order (bs4's ``get_text`` strings)."""
    if not isinstance(el.tag, str) or el.tag in _NOT_TEXT:
        return out
    if el.text:
        out.append(el.text)
    for child in el:
        _strings(child, out)
        if child.tail:
            out.append(child.tail)
    return out


def _head_fields(doc: Any) -> tuple[str | None, str | None, str | None, list[tuple[str, str]]]:
    """The first ``<title>``, canonical link and ``<base href>``, and every ``<a href>`` as (href, rel)."""
    title = url = base = None
    links: list[tuple[str, str]] = []
    for el in doc.iter("title", "link", "base", "a"):
        tag = el.tag
        if tag == "title":
            if title is None:
                title = _WS.sub(" ", "".join(_strings(el, []))).strip()
        elif tag == "link":
            if url is None and el.get("href") is not None and "canonical" in (el.get("rel") or "").split():
                url = el.get("href")
        elif tag == "base":
            if base is None and el.get("href") is not None:
                base = el.get("href")
        elif el.get("href") is not None:
            links.append((str(el.get("href")), el.get("rel") or ""))
    return title, url, base, links


class _Blocks:
    """The Markdown-like blocks of a page, built by one walk in document order (see :func:`html_to_text`)."""

    def __init__(self, skip: frozenset[str] | set[str]) -> None:
        self.skip = skip
        self.blocks: list[str] = []
        self.inline: list[str] = []

    def flush(self, prefix: str = "") -> None:
        if not self.inline:
            return
        line = _WS.sub(" ", "".join(self.inline)).strip()
        self.inline.clear()
        if line:
            self.blocks.append(prefix + line)

    def _whole(self, el: Any, name: str, text_ok: bool) -> bool:
        """A heading, ``<pre>`` or table row, taken whole as one block; ``False`` for any other element."""
        if name in _HEADINGS:
            self.flush()
            text = _WS.sub(" ", " ".join(_strings(el, []) if text_ok else [])).strip()
            if text:
                self.blocks.append("#" * _HEADINGS[name] + " " + text)
            return True
        if name == "pre":
            self.flush()
            text = "".join(_strings(el, []) if text_ok else []).strip("\n")
            if text.strip():
                self.blocks.append(text)
            return True
        if name == "tr":
            self.flush()
            cells = [
                _WS.sub(" ", " ".join(_strings(c, []) if text_ok else [])).strip()
                for c in el
                if isinstance(c.tag, str) and c.tag in ("td", "th")
            ]
            if any(cells):
                self.blocks.append(" | ".join(cells))
            return True
        return False

    def walk(self, el: Any, text_ok: bool) -> None:
        name = el.tag
        if not isinstance(name, str) or name in self.skip:
            return
        if self._whole(el, name, text_ok):
            return
        inline = self.inline
        if name == "br":
            inline.append("\n")
            return
        text_ok = text_ok and name not in _NOT_TEXT
        block = name in _BLOCK or name == "li"
        if block:
            self.flush()
        if text_ok and el.text:
            inline.append(el.text)
        for child in el:
            self.walk(child, text_ok)
            if text_ok and child.tail:
                inline.append(child.tail)
        if block:
            self.flush("- " if name == "li" else "")


def html_to_text(data: bytes) -> HtmlText:
    """Parse HTML bytes (encoding from the document or detected) into Markdown-like text.

    The page is parsed once, by libxml2 (``lxml``; about 30x faster than bs4's tree), and walked in
    document order: headings become ``#`` lines, list items ``- `` lines, table rows ``a | b`` lines,
    ``<pre>`` keeps its line breaks, every other block element (``_BLOCK``) ends a paragraph; the text of
    scripts, styles, templates, ruby annotations, comments and ``_SKIP`` elements is never taken. On
    well-formed HTML the result equals the earlier bs4 (``html.parser``) extraction exactly
    (``tests/sources/test_html_extract.py`` checks it on generated pages and the PostgreSQL manual); on
    malformed HTML libxml2's recovery applies (browser-like implied end tags: an unclosed ``<li>`` or
    ``<p>`` ends at the next one)."""
    import lxml.etree

    if b"\x00" in data:
        raise ExtractionError("binary content (NUL bytes) in an HTML file")
    markup = decode_html(data).encode("utf-8", "surrogatepass")
    parser = lxml.etree.HTMLParser(encoding="utf-8", remove_blank_text=False, huge_tree=True)
    try:
        doc = lxml.etree.fromstring(markup, parser=parser)
    except (lxml.etree.ParserError, lxml.etree.XMLSyntaxError, ValueError):
        doc = None
    if doc is None:  # nothing but whitespace, comments or a doctype
        return HtmlText(title=None, text="", url=None)

    title, url, base, links = _head_fields(doc)
    # bs4 walked the <body> when the page has one, else everything, skipping a <head> the page wrote;
    # libxml2 also makes an implied <head> for leading <style>/<script>/<title>: walked like bs4 did.
    body = doc.find("body") if _BODY_TAG.search(markup) else None
    root = body if body is not None else doc
    blocks = _Blocks(_SKIP if _HEAD_TAG.search(markup) else _SKIP - {"head"})
    try:
        blocks.walk(root, True)
        blocks.flush()
    except RecursionError:
        raise ExtractionError("HTML is nested too deeply to extract") from None
    if not title:
        title = next((b.lstrip("# ") for b in blocks.blocks if b.startswith("# ")), None)
    return HtmlText(
        title=title or None,
        text="\n\n".join(blocks.blocks),
        url=str(url) if url else None,
        base=base,
        links=links,
    )


# ------------------------------------------------------------------------------------------------ PDF
@dataclass
class PdfText:
    title: str | None
    pages: tuple[str, ...]


def pdf_pages(data: bytes | Path, *, max_pages: int | None = None, deadline: float | None = None) -> PdfText:
    """Text per page with pypdf; encrypted (with a password), broken or text-less PDFs raise.

    ``data``: the file's bytes (read by the safe-read rule) or, for tools, a path. ``max_pages``: a PDF
    with more pages raises before any text is extracted; ``deadline`` (a ``time.monotonic()`` value):
    extraction stops with :class:`ExtractionError` once it is passed, checked between pages.
    """
    import io
    import time

    from pypdf import PdfReader
    from pypdf.errors import PdfReadError, PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data) if isinstance(data, bytes) else data, strict=False)
        if reader.is_encrypted:
            try:
                opened = bool(reader.decrypt(""))
            except Exception:  # pypdf raises several types for unsupported encryption
                opened = False
            if not opened:
                raise ExtractionError("encrypted PDF (needs a password)")
        count = _declared_pages(reader)  # the page tree's /Count: cheap, unlike flattening the tree
        if max_pages is not None and count > max_pages:
            raise ExtractionError(f"PDF has {count} pages (limit {max_pages}): split it into smaller files")
        texts: list[str] = []
        for page in reader.pages:
            if deadline is not None and time.monotonic() > deadline:
                raise ExtractionError(
                    f"PDF text extraction ran out of time after {len(texts)} of {count} pages"
                )
            texts.append((page.extract_text() or "").strip())
            if max_pages is not None and len(texts) > max_pages:  # a /Count that lied
                raise ExtractionError(f"PDF has more than {max_pages} pages: split it into smaller files")
        pages = tuple(texts)
        meta_title = None
        if reader.metadata is not None:
            meta_title = reader.metadata.title
    except ExtractionError:
        raise
    except (
        PdfReadError,
        PyPdfError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        OSError,
        RecursionError,
        IndexError,
        AssertionError,
        ZeroDivisionError,
    ) as exc:
        raise ExtractionError(f"unreadable PDF ({type(exc).__name__}: {str(exc)[:160]})") from None
    if not pages:
        raise ExtractionError("PDF has no pages")
    if not any(pages):
        raise ExtractionError("PDF has no extractable text (a scanned PDF needs OCR first)")
    title = str(meta_title).strip() if meta_title else None
    return PdfText(title=title or None, pages=pages)


def _declared_pages(reader: Any) -> int:
    try:
        count = reader.trailer["/Root"]["/Pages"]["/Count"]
        return int(count)
    except (KeyError, TypeError, ValueError, AttributeError):
        return len(reader.pages)
