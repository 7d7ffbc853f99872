"""The unit connectors produce and the index consumes: :class:`Document`, and :func:`acl_hash`.

It sits below both :mod:`charter.sources` (connectors yield it; re-exported there as
``charter.sources.Document``) and :mod:`charter.retrieval` (the index chunks and stores it), so neither
imports the other for it."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property


@dataclass(frozen=True)
class Document:
    """One document read from a source, before chunking.

    ``acl`` is the document's own ACL tokens (``public``, ``group:<id>``, ``user:<id>``) as the connector
    found them; ``None`` means missing or unparseable (``acl_error`` says why), which the sync treats as
    **private** — readable only by the source owner (fail closed). The *effective* tokens stored in the
    index are computed by the sync from the source's permission model (see ``charter.sources``).
    """

    source_id: str
    doc_id: str  # stable within the source, e.g. the path relative to the folder
    title: str
    text: str  # extracted text; Markdown headings ("#", "##") are kept so chunking can follow structure
    format: str  # "markdown" | "text" | "html" | "pdf" | "jsonl"
    url: str | None = None
    acl: frozenset[str] | None = None
    acl_error: str | None = None
    updated_at: datetime | None = None
    pages: tuple[str, ...] | None = None  # PDF: text per page; ``text`` is their concatenation
    version: str | None = None  # the version at the source (Git blob hash, HTTP ETag); not in content_hash
    revision: str | None = None  # the revision it was read at (Git commit id): recorded for citations

    @cached_property
    def content_hash(self) -> str:
        """SHA-256 of what the index stores for the document (title, format, url, text, page count);
        computed once per instance (the sync compares it several times; the fields are frozen)."""
        h = hashlib.sha256()
        for part in (self.title, self.format, self.url or "", self.text):
            h.update(part.encode("utf-8", "surrogatepass"))
            h.update(b"\x00")
        if self.pages:
            h.update(str(len(self.pages)).encode())
        return h.hexdigest()


#: A lone UTF-16 surrogate: what JSON's ``"\\ud800"`` decodes to, and what ``surrogateescape`` leaves for the
#: bytes of a file name that is not UTF-8. No database, tokenizer or encoder accepts one; the one rule for
#: them is here (questions and tasks: replaced by U+FFFD; sources: :func:`charter.sources` sync).
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def without_lone_surrogates(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD (as a decoder with ``errors="replace"`` does)."""
    return LONE_SURROGATE.sub("\ufffd", text) if LONE_SURROGATE.search(text) else text


def printable_id(value: str) -> str:
    """An id that may hold lone surrogates, shown so it can be stored and recognised: each one as its
    escape (a non-UTF-8 byte 0xff of a file name reads ``\\udcff``)."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def acl_hash(tokens: frozenset[str] | set[str]) -> str:
    """A stable hash of a set of ACL tokens."""
    return hashlib.sha256("\n".join(sorted(tokens)).encode()).hexdigest()


__all__ = ["LONE_SURROGATE", "Document", "acl_hash", "printable_id", "without_lone_surrogates"]
