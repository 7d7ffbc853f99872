"""The ``jsonl`` connector: one JSON object per line of a file.

Each line: ``{"id": ..., "title": ..., "text": ..., "url": ..., "acl": [...], "updated_at": ...}``; ``id``
and ``text`` are required, ``acl`` is a list of tokens (or one comma-separated string). A line that is
not valid JSON, or lacks a field, fails that document only and is reported with its line number; when
the id can still be recognised, the previously indexed version of that document is kept. Blank lines
are ignored. The file is read line by line, never as a whole, through the safe-read rule
(:func:`charter.sources._files.open_source_file`): it must be a regular file (a FIFO or a device makes the
source unavailable instead of hanging the sync).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

from charter.documents import Document
from charter.sources._acl import AclParseError, parse_acl
from charter.sources._connector import ConnectorContext, Failed, SourceUnavailable, connector
from charter.sources._extract import ExtractionError, parse_timestamp
from charter.sources._files import open_source_file

MAX_ID_CHARS = 500
_ID_HINT = re.compile(rb'"id"\s*:\s*"([^"\\]{1,500})"')
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _BadLine(Exception):
    def __init__(self, reason: str, doc_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason, self.doc_id = reason, doc_id


@connector("jsonl")
class JsonlConnector:
    """One document per line of a JSON Lines file (id, title, text, url, acl, updated_at)."""

    def _lines(self, ctx: ConnectorContext) -> Iterator[tuple[int, bytes | None]]:
        """(line number, raw bytes) per non-blank line; ``None`` for a line over the size limit."""
        path = ctx.location
        if not os.path.lexists(path):
            raise SourceUnavailable(f"source {ctx.source.id!r}: file not found: {path}")
        try:
            with open_source_file(path, None) as (f, _):
                number = 0
                while True:
                    raw = f.readline(ctx.max_bytes + 1)
                    if not raw:
                        return
                    number += 1
                    if len(raw) > ctx.max_bytes and not raw.endswith(b"\n"):
                        while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                            pass
                        yield number, None
                        continue
                    if raw.strip():
                        yield number, raw
        except ExtractionError as exc:
            raise SourceUnavailable(f"source {ctx.source.id!r}: {path}: {exc}") from None
        except FileNotFoundError:
            raise SourceUnavailable(f"source {ctx.source.id!r}: file not found: {path}") from None
        except OSError as exc:
            raise SourceUnavailable(f"source {ctx.source.id!r}: cannot read {path}: {exc.strerror}") from None

    def count(self, ctx: ConnectorContext) -> int:
        return sum(1 for _ in self._lines(ctx))

    def documents(self, ctx: ConnectorContext) -> Iterator[Document | Failed]:
        for number, raw in self._lines(ctx):
            if raw is None:
                yield Failed(None, f"line longer than {ctx.max_bytes} bytes", line=number)
                continue
            try:
                yield self.parse(ctx, raw)
            except _BadLine as exc:
                yield Failed(exc.doc_id, exc.reason, line=number)

    def parse(self, ctx: ConnectorContext, raw: bytes) -> Document:
        hint = _ID_HINT.search(raw)
        guessed = hint.group(1).decode("utf-8", "replace") if hint else None
        try:
            obj: Any = json.loads(raw)
        except ValueError as exc:  # also: not UTF-8, an integer of more than 4,300 digits
            msg = (
                exc.msg
                if isinstance(exc, json.JSONDecodeError)
                else "not UTF-8"
                if isinstance(exc, UnicodeDecodeError)
                else str(exc).split(";")[0]
            )
            raise _BadLine(f"not valid JSON ({msg})", guessed) from None
        except RecursionError:
            raise _BadLine("JSON nested too deeply", guessed) from None
        if not isinstance(obj, dict):
            raise _BadLine("expected a JSON object")
        doc_id = obj.get("id")
        if isinstance(doc_id, int) and not isinstance(doc_id, bool):
            doc_id = str(doc_id)
        if not isinstance(doc_id, str) or not doc_id.strip():
            raise _BadLine("missing 'id' (a non-empty string)")
        if len(doc_id) > MAX_ID_CHARS or _CONTROL.search(doc_id):
            raise _BadLine(f"'id' must be at most {MAX_ID_CHARS} printable characters")
        text = obj.get("text")
        if not isinstance(text, str):
            raise _BadLine("missing 'text' (a string)", doc_id)
        title = obj.get("title")
        if title is not None and not isinstance(title, str):
            raise _BadLine("'title' must be a string", doc_id)
        url = obj.get("url")
        if url is not None and not isinstance(url, str):
            raise _BadLine("'url' must be a string", doc_id)
        acl: frozenset[str] | None = None
        acl_error: str | None = None
        try:
            acl = parse_acl(obj.get("acl"))
        except AclParseError as exc:
            acl_error = str(exc)
        return ctx.document(
            doc_id=doc_id,
            title=(title or "").strip() or doc_id,
            text=text,
            format="jsonl",
            url=url or None,
            acl=acl,
            acl_error=acl_error,
            updated_at=parse_timestamp(obj.get("updated_at")),
        )
