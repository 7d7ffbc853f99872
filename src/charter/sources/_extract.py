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
    """``yaml.safe_load`` with the C loader when PyYAML has it."""
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a safe loader


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
    """A front-matter or JSON timestamp as an aware UTC datetime; naive values are taken as UTC."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if isinstance(value, str) and value.strip():
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
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
    url: str | None


def html_to_text(data: bytes) -> HtmlText:
    """Parse HTML bytes (encoding from the document or detected) into Markdown-like text."""
    from bs4 import BeautifulSoup
    from bs4.element import NavigableString, Tag

    if b"\x00" in data:
        raise ExtractionError("binary content (NUL bytes) in an HTML file")
    soup = BeautifulSoup(data, "html.parser")
    title_tag = soup.find("title")
    title = _WS.sub(" ", title_tag.get_text()).strip() if isinstance(title_tag, Tag) else None
    canonical = soup.find("link", rel="canonical")
    url = canonical.get("href") if isinstance(canonical, Tag) else None
    root = soup.body if isinstance(soup.body, Tag) else soup

    blocks: list[str] = []
    inline: list[str] = []

    def flush(prefix: str = "") -> None:
        line = _WS.sub(" ", "".join(inline)).strip()
        inline.clear()
        if line:
            blocks.append(prefix + line)

    def walk(node: Any) -> None:
        if isinstance(node, NavigableString):
            if type(node) is NavigableString:  # not a Comment, Doctype, CData, ...
                inline.append(str(node))
            return
        if not isinstance(node, Tag):
            return
        name = node.name.lower()
        if name in _SKIP:
            return
        if name in _HEADINGS:
            flush()
            text = _WS.sub(" ", node.get_text(" ")).strip()
            if text:
                blocks.append("#" * _HEADINGS[name] + " " + text)
            return
        if name == "pre":
            flush()
            text = node.get_text().strip("\n")
            if text.strip():
                blocks.append(text)
            return
        if name == "tr":
            flush()
            cells = [
                _WS.sub(" ", c.get_text(" ")).strip() for c in node.find_all(["td", "th"], recursive=False)
            ]
            if any(cells):
                blocks.append(" | ".join(cells))
            return
        if name == "br":
            inline.append("\n")
            return
        if name == "li":
            flush()
            for child in node.children:
                walk(child)
            flush("- ")
            return
        if name in _BLOCK:
            flush()
            for child in node.children:
                walk(child)
            flush()
            return
        for child in node.children:
            walk(child)

    try:
        walk(root)
        flush()
    except RecursionError:
        raise ExtractionError("HTML is nested too deeply to extract") from None
    if not title:
        title = next((b.lstrip("# ") for b in blocks if b.startswith("# ")), None)
    return HtmlText(title=title or None, text="\n\n".join(blocks), url=str(url) if url else None)


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
