"""The ``folder`` connector: Markdown, plain text, HTML and PDF files under a folder, recursively.

* Document id: the path relative to the folder, with ``/`` separators (``handbook/leave.md``) — stable
  across machines and re-syncs; renaming a file is a delete plus an add.
* ACL, title, url, updated_at: from YAML front matter (Markdown and text), and/or a sidecar file next to
  the document: ``<file>.acl`` (tokens, one per line) or ``<file>.meta.yaml`` (a mapping with ``acl``,
  ``title``, ``url``, ``updated_at``); ``<file>`` may be the full file name (``prices.pdf.acl``) or its stem
  (``prices.acl``). An ACL given in two places, or unparseable anywhere, is an ACL error (fail closed).
* Title fallbacks: front matter / sidecar → first ``#`` heading → HTML ``<title>`` → PDF metadata →
  file name. ``updated_at`` falls back to the file's modification time.
* Hidden files and folders (``.name``) are ignored, symlinked folders are not followed, files over the
  size limit and binary junk in text files fail that document only.
* Every file (documents and sidecars) is read through :func:`charter.sources._files.read_source_file`:
  regular files only, a symlink only when it resolves inside the source folder, sizes counted on the bytes
  actually read. A refused file is reported (``Failed(refused=True)``) and any earlier version of it is
  removed from the index. PDFs over ``ctx.max_pdf_pages`` pages, and documents whose extraction takes
  longer than ``ctx.max_seconds``, fail alone.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from charter.documents import Document
from charter.sources._acl import AclParseError, parse_acl, parse_acl_file
from charter.sources._connector import ConnectorContext, Failed, SourceUnavailable, connector
from charter.sources._extract import (
    ExtractionError,
    decode_text,
    first_heading,
    html_to_text,
    load_yaml,
    parse_timestamp,
    pdf_pages,
    split_front_matter,
    title_from_filename,
)
from charter.sources._files import FileRefused, check_source_file, read_source_file

FORMATS = {
    ".md": "markdown",
    ".markdown": "markdown",
    ".txt": "text",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
}
SIDECAR_SUFFIXES = (".acl", ".meta.yaml")
MAX_SIDECAR_BYTES = 1_000_000


@dataclass
class _Meta:
    """Metadata gathered from front matter and sidecars."""

    values: dict[str, Any]
    acl: frozenset[str] | None = None
    acl_error: str | None = None
    acl_sources: list[str] = field(default_factory=list)  # files the ACL was read from


@connector("folder")
class FolderConnector:
    """Markdown, text, HTML and PDF files in a folder (recursively); ACLs from front matter or sidecars."""

    def files(self, ctx: ConnectorContext) -> Iterator[Path]:
        """Candidate document files in a stable order (sorted, depth first)."""
        root = ctx.location
        if not root.is_dir():
            raise SourceUnavailable(f"source {ctx.source.id!r}: folder not found: {root}")

        def on_error(exc: OSError) -> None:
            raise SourceUnavailable(f"source {ctx.source.id!r}: cannot read {exc.filename}: {exc.strerror}")

        for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if name.startswith(".") or name.endswith(SIDECAR_SUFFIXES):
                    continue
                if Path(name).suffix.lower() in FORMATS:
                    yield Path(dirpath) / name

    def count(self, ctx: ConnectorContext) -> int:
        return sum(1 for _ in self.files(ctx))

    def documents(self, ctx: ConnectorContext) -> Iterator[Document | Failed]:
        root = ctx.location
        for path in self.files(ctx):
            doc_id = path.relative_to(root).as_posix()
            try:
                yield self.read(ctx, path, doc_id)
            except FileRefused as exc:
                yield Failed(doc_id, str(exc), refused=True)
            except ExtractionError as exc:
                yield Failed(doc_id, str(exc))
            except FileNotFoundError:
                continue  # removed while we were listing: it is gone, like a deleted file
            except OSError as exc:
                yield Failed(doc_id, f"cannot read file: {exc.strerror or exc}")

    # ---------------------------------------------------------------------------------- one file
    def read(self, ctx: ConnectorContext, path: Path, doc_id: str) -> Document:
        root = ctx.location
        started = time.monotonic()
        deadline = started + ctx.max_seconds
        _real, st = check_source_file(path, root)  # refuse before reading anything, sidecars included
        if st.st_size > ctx.max_bytes:
            raise ExtractionError(f"file too large: {st.st_size} bytes (limit {ctx.max_bytes})")
        fmt = FORMATS[path.suffix.lower()]
        meta = _sidecars(path, root)
        data, st = read_source_file(path, root, ctx.max_bytes)
        title: str | None = None
        url: str | None = None
        pages: tuple[str, ...] | None = None
        if fmt in ("markdown", "text"):
            fm = split_front_matter(decode_text(data))
            _merge_front_matter(meta, fm.meta, fm.error)
            text = fm.body
            title = first_heading(text) if fmt == "markdown" else None
        elif fmt == "html":
            html = html_to_text(data)
            text, title, url = html.text, html.title, html.url
        else:
            pdf = pdf_pages(data, max_pages=ctx.max_pdf_pages, deadline=deadline)
            pages, title = pdf.pages, pdf.title
            text = "\n\n".join(pages)
        if time.monotonic() > deadline:
            raise ExtractionError(
                f"extraction took {time.monotonic() - started:.1f} s (limit {ctx.max_seconds:g} s per document)"
            )
        title = _string(meta.values.get("title")) or title or title_from_filename(path)
        url = _string(meta.values.get("url")) or url
        updated = parse_timestamp(meta.values.get("updated_at")) or datetime.fromtimestamp(st.st_mtime, UTC)
        return ctx.document(
            doc_id=doc_id,
            title=title,
            text=text,
            format=fmt,
            url=url,
            acl=meta.acl,
            acl_error=meta.acl_error,
            updated_at=updated,
            pages=pages,
        )


def _string(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


def _sidecars(path: Path, root: Path) -> _Meta:
    """Read ``<file>.acl`` / ``<file>.meta.yaml`` (full name or stem) next to ``path``.

    A sidecar that exists but is refused by the safe-read rule (a FIFO, a symlink out of the folder) is an
    ACL error: the document fails closed instead of silently losing its ACL."""
    meta = _Meta(values={})
    stem = path.stem  # "q3.prices.pdf" -> "q3.prices": only the format suffix is dropped
    acl_sources = meta.acl_sources
    for base in dict.fromkeys((path.name, stem)):
        acl_path = path.with_name(base + ".acl")
        if os.path.lexists(acl_path):
            acl_sources.append(acl_path.name)
            try:
                meta.acl = parse_acl_file(_read_small(acl_path, root))
            except (AclParseError, ExtractionError, OSError) as exc:
                meta.acl_error = f"{acl_path.name}: {exc}"
        yaml_path = path.with_name(base + ".meta.yaml")
        if os.path.lexists(yaml_path):
            try:
                loaded = load_yaml(_read_small(yaml_path, root))
            except FileRefused as exc:
                meta.acl_error = f"{yaml_path.name}: {exc}"
                acl_sources.append(yaml_path.name)
                continue
            except (yaml.YAMLError, ExtractionError, OSError):
                meta.acl_error = f"{yaml_path.name}: not valid YAML"
                acl_sources.append(yaml_path.name)
                continue
            if not isinstance(loaded, dict):
                meta.acl_error = f"{yaml_path.name}: not a mapping of keys to values"
                acl_sources.append(yaml_path.name)
                continue
            for key, value in loaded.items():
                if key == "acl":
                    acl_sources.append(yaml_path.name)
                    try:
                        meta.acl = parse_acl(value)
                    except AclParseError as exc:
                        meta.acl_error = f"{yaml_path.name}: {exc}"
                else:
                    meta.values.setdefault(str(key), value)
    if len(acl_sources) > 1:
        meta.acl, meta.acl_error = None, f"ACL given in more than one place ({', '.join(acl_sources)})"
    elif meta.acl_error:
        meta.acl = None
    return meta


def _merge_front_matter(meta: _Meta, fm: dict[str, Any], error: str | None) -> None:
    sources = meta.acl_sources
    if error:
        meta.acl, meta.acl_error = None, error
        return
    for key, value in fm.items():
        if key != "acl":
            meta.values[key] = value  # front matter wins over a .meta.yaml for title/url/updated_at
    if "acl" in fm:
        if sources:
            where = ", ".join(["front matter", *sources])
            meta.acl, meta.acl_error = None, f"ACL given in more than one place ({where})"
            return
        if meta.acl_error:
            return
        try:
            meta.acl = parse_acl(fm["acl"])
        except AclParseError as exc:
            meta.acl, meta.acl_error = None, f"front matter: {exc}"


def _read_small(path: Path, root: Path) -> str:
    try:
        data, _ = read_source_file(path, root, MAX_SIDECAR_BYTES)
    except FileRefused:
        raise
    except ExtractionError:
        raise ExtractionError(f"sidecar too large (limit {MAX_SIDECAR_BYTES} bytes)") from None
    return decode_text(data)
