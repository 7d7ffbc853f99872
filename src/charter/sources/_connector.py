"""The connector protocol and its registry.

A connector turns a source's ``location`` into :class:`~charter.sources.Document` objects, lazily, one at
a time. A document that cannot be read is yielded as :class:`Failed` (that document fails, never the
sync); a source that cannot be read at all (missing folder, unreadable file) raises
:class:`SourceUnavailable`, and then the sync deletes nothing.

Built-in connectors (``folder``, ``jsonl``, ``sql``, ``git``, ``web``) register through the same decorator as yours::

    @connector("notes")
    def notes(ctx: ConnectorContext) -> Iterator[Document | Failed]:
        \"\"\"One document per line of a text file.\"\"\"
        ...

A class with a ``documents(ctx)`` method (and optionally ``count(ctx)`` for the progress bar) works too.
Third-party packages can also expose connectors through the ``charter.connectors`` entry-point group.

Incremental connectors (``sql``, ``git``, ``web``) read ``ctx.cursor`` (what they saved after the last
successful sync) and ``ctx.known`` (doc id -> version recorded then), and besides documents yield
:class:`Unchanged` (still there, not re-read), :class:`Deleted` (gone, e.g. a tombstone) and
:class:`Moved` (renamed: the indexed chunks follow, nothing is re-embedded). After the iteration they set
``ctx.new_cursor``; the sync stores it only when the run succeeds, so a crashed run starts again from the
previous cursor. A connector that can list ACLs without reading content implements ``acls(ctx)``
(yielding :class:`AclEntry`): ``charter sync --acl-only`` uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from charter.documents import Document
from charter.errors import CharterRuntimeError, UsageError
from charter.plugins import Registry, origin_of
from charter.spec import Source

DEFAULT_MAX_BYTES = 20_000_000  # per file / per line; bigger ones are skipped and reported
DEFAULT_MAX_SECONDS = 30.0  # per document: extraction that takes longer fails that document
DEFAULT_MAX_PDF_PAGES = 2_000  # a PDF with more pages fails (split it, or raise the limit)


class SourceUnavailable(CharterRuntimeError):
    """The source as a whole cannot be read (e.g. its folder is missing); nothing is deleted."""


@dataclass(frozen=True)
class Failed:
    """A document the connector could not read. ``doc_id`` is None when even its id is unknown."""

    doc_id: str | None
    reason: str
    line: int | None = None  # for line-based sources such as ``jsonl``
    #: refused by the safe-read rule (symlink out of the source, not a regular file): the sync reports it
    #: and removes any version of it indexed earlier, instead of keeping that version as for a read error
    refused: bool = False

    def describe(self) -> str:
        where = self.doc_id or (f"line {self.line}" if self.line else "?")
        if self.doc_id and self.line:
            where += f" (line {self.line})"
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class Unchanged:
    """A document that is still at the source and unchanged since the last sync (not re-read). With
    ``acl_known``, ``acl``/``acl_error`` are its current ACL (the sync updates it if it changed)."""

    doc_id: str
    acl: frozenset[str] | None = None
    acl_error: str | None = None
    acl_known: bool = False


@dataclass(frozen=True)
class Deleted:
    """A document the source reports as deleted (e.g. a tombstone row)."""

    doc_id: str


@dataclass(frozen=True)
class Moved:
    """A document renamed at the source; ``document`` is its content under the new id."""

    old_id: str
    document: Document


@dataclass(frozen=True)
class AclEntry:
    """One document's ACL as the source says now (``acl=None``: missing or invalid, ``acl_error`` why)."""

    doc_id: str
    acl: frozenset[str] | None
    acl_error: str | None = None


Item = Document | Failed | Unchanged | Deleted | Moved


@dataclass
class ConnectorContext:
    """What a connector gets: the source's charter entry and the folder the charter lives in; incremental
    connectors also get their saved ``cursor`` and the ``known`` versions, and set ``new_cursor``."""

    source: Source
    base_dir: Path
    max_bytes: int = DEFAULT_MAX_BYTES
    max_seconds: float = DEFAULT_MAX_SECONDS
    max_pdf_pages: int = DEFAULT_MAX_PDF_PAGES
    cursor: dict[str, Any] | None = None
    known: dict[str, str | None] = field(default_factory=dict)  # doc_id -> version at the last sync
    new_cursor: dict[str, Any] | None = None

    @property
    def location(self) -> Path:
        """``source.location`` resolved against the charter's folder (for file-based connectors)."""
        if "://" in self.source.location:
            raise SourceUnavailable(
                f"source {self.source.id!r}: connector {self.source.connector!r} reads "
                f"local paths, not URLs ({self.source.location})"
            )
        p = Path(self.source.location)
        return p if p.is_absolute() else self.base_dir / p

    def document(
        self,
        *,
        doc_id: str,
        title: str,
        text: str,
        format: str,
        url: str | None = None,
        acl: frozenset[str] | None = None,
        acl_error: str | None = None,
        updated_at: datetime | None = None,
        pages: tuple[str, ...] | None = None,
        version: str | None = None,
        revision: str | None = None,
    ) -> Document:
        """Build a :class:`Document` of this source (``source_id`` filled in)."""
        return Document(
            source_id=self.source.id,
            doc_id=doc_id,
            title=title,
            text=text,
            format=format,
            url=url,
            acl=acl,
            acl_error=acl_error,
            updated_at=updated_at,
            pages=pages,
            version=version,
            revision=revision,
        )


@runtime_checkable
class Connector(Protocol):
    """Reads one source. ``documents`` must be lazy: yield each document as soon as it is read."""

    def documents(self, ctx: ConnectorContext) -> Iterable[Item]: ...


class _FunctionConnector:
    def __init__(self, fn: Callable[[ConnectorContext], Iterable[Document | Failed]]) -> None:
        self.fn = fn
        self.__doc__ = fn.__doc__

    def documents(self, ctx: ConnectorContext) -> Iterable[Document | Failed]:
        return self.fn(ctx)


def _as_factory(name: str, obj: Any) -> Callable[[], Connector]:
    if isinstance(obj, type):
        cls: Callable[[], Connector] = obj
        return cls
    if callable(obj):
        return lambda: _FunctionConnector(obj)
    raise TypeError(f"@connector({name!r}) needs a function or a class")


ENTRY_POINT_GROUP = "charter.connectors"
connectors: Registry[Callable[[], Connector]] = Registry(
    "connector",
    group=ENTRY_POINT_GROUP,
    adapt=_as_factory,
    # the built-in connectors register on import; loaded on the first lookup
    builtins=(
        "charter.sources._folder",
        "charter.sources._git",
        "charter.sources._jsonl",
        "charter.sources._sql",
        "charter.sources._web",
    ),
)


def connector(name: str) -> Callable[[Any], Any]:
    """Register a connector under ``name`` (the value of ``connector:`` in the charter).

    Decorates either a function ``(ctx) -> Iterable[Document | Failed]`` or a class whose instances
    have ``documents(ctx)``. A name another definition already holds is refused (:class:`charter.plugins.PluginError`);
    installed packages can add connectors through the ``charter.connectors`` entry-point group.
    """

    def register(obj: Any) -> Any:
        connectors.add(name, _as_factory(name, obj), origin=origin_of(obj))
        return obj

    return register


def get_connector(name: str) -> Connector:
    """A fresh instance of the connector registered as ``name``."""
    instance = connectors.get(name)()
    if not isinstance(instance, Connector):
        raise UsageError(f"connector {name!r} has no documents(ctx) method")
    return instance


def connector_names() -> list[str]:
    """Names of every registered connector."""
    return connectors.names()
