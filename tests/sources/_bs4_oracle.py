"""The earlier bs4-based HTML extraction, kept as an independent oracle for ``html_to_text`` (lxml).

Verbatim copy of ``charter.sources._extract.html_to_text`` before it moved to lxml (commit 0df911b);
only the name and docstring changed.
"""

from __future__ import annotations

from typing import Any

from charter.sources._extract import _BLOCK, _HEADINGS, _SKIP, _WS, ExtractionError, HtmlText


def bs4_html_to_text(data: bytes) -> HtmlText:
    """The bs4 (``html.parser``) extraction that ``html_to_text`` replaced, kept verbatim as the oracle."""
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
