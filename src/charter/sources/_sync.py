"""Sync: keep the index true to the sources, incrementally, and record what happened.

For each source, the connector's documents are compared with what the index holds
(``Index.document_states``):

* same content hash, same effective ACL → **unchanged**, nothing is written or embedded;
* same content, different ACL → ``upsert_document`` updates the ACL only (**acl_changed**, no re-embedding);
* new or changed content → ``upsert_document`` (**added** / **updated**), with the ACL read together with
  that content, so a content change never brings back an older ACL;
* indexed but no longer in the source → ``delete_document`` (**deleted**) — only after the connector has
  listed the whole source; a source that cannot be read (``SourceUnavailable``) deletes nothing;
* a document the connector cannot read → **failed** with its reason; its previous version (if any) stays.

Incremental connectors (``sql``, ``git``, ``web``) also yield ``Unchanged`` (still there, with its current
ACL when the connector knows it), ``Deleted`` (a tombstone) and ``Moved`` (a rename: the indexed document
follows under its new id, its chunks and vectors are kept). Their cursor is saved only when the run
succeeds, so a crashed run resumes from the previous cursor and skips what it already indexed.

**Pipeline.** The connector runs in a reader thread that fills a bounded queue (``PIPELINE_DEPTH``
items): fetching and extraction overlap the embedding of the previous batch, and a slow source never
holds more than the queue in memory. Each batch is chunked once, its vectors looked up in one query and
the missing ones embedded in one call (``Index.prepare``), then written in one transaction
(``Index.upsert_documents``).

**ACL-only sync** (:meth:`Syncer.sync_acls`, ``charter sync --acl-only``) asks the connector for the
current ACL of every document (``acls(ctx)``, or a content read without embedding for connectors that
have no cheaper way), rewrites the ACL rows of the documents whose ACL changed and deletes the documents
that are gone — no chunking, no embedding. Both kinds of sync record ``source_state.acl_synced_at``; ACL
freshness (``freshness.acl_max_age``) is measured from it.

Every index write is one transaction (a batch of up to ``EMBED_BATCH`` documents is written in one), so a
sync killed at any point leaves each document either at its old or its new version; re-running the sync converges to the same index as a clean sync. The run's summary
goes to ``sync_runs``, the last successful sync per source to ``source_state`` (freshness is measured from
it), and an audit event ``sources.synced``.

**Several workers.** ``sync_sources(..., skip_busy=True)`` (``charter sync --worker``) skips a source
another live process is syncing instead of failing, so N workers started together on one PostgreSQL
store split the sources between them; a source's run is still taken under an advisory lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from charter.documents import LONE_SURROGATE, Document, acl_hash, printable_id, without_lone_surrogates
from charter.errors import CharterException, Conflict, UsageError
from charter.screening import forget_screened, screen_pending
from charter.sources._acl import EffectiveAcl, effective_acl
from charter.sources._connector import (
    AclEntry,
    ConnectorContext,
    Deleted,
    Failed,
    Moved,
    SourceUnavailable,
    Unchanged,
    get_connector,
)
from charter.spec import Source, section_hash
from charter.store import utcnow
from charter.store.tables import source_documents, source_state, sync_runs

if TYPE_CHECKING:
    from charter.context import RuntimeContext
    from charter.retrieval import DocState, DocumentWrite, Index, Prepared

MAX_REASON_CHARS = 300
MAX_LISTED = 200  # failures / private documents listed per summary (counts are always complete)
STALE_RUN_AFTER = timedelta(hours=12)  # a "running" run from another host older than this is interrupted
CATALOG_BATCH = 64
PIPELINE_DEPTH = 256  # items read ahead of the embedder


def source_config_hash(source: Source) -> str:
    """Hash of a source's configuration without its approval record (what an approval is bound to).

    Settings left at their defaults are not part of it, so a Charter upgrade that adds a setting (whose
    default keeps today's behaviour) does not invalidate every approval; setting any value, or changing
    one, does."""
    return section_hash(source.model_dump(mode="json", exclude={"approval"}, exclude_defaults=True))


def chunking_hash(source: Source) -> str:
    return section_hash(source.chunking.model_dump(mode="json"))


def storable(item: Any) -> Any:
    """What a connector yielded, made storable: the one rule for lone UTF-16 surrogates in source data
    (a file name that is not UTF-8, as ``os.walk`` and ``git`` decode it; ``"\\ud800"`` in JSON, a SQL row, a
    web page), which no database accepts — one such document used to stop the whole source's sync.

    * an id with one cannot be stored or matched: the item becomes a :class:`Failed` under the id with its
      surrogates escaped (``inv\\udcffalid.md``), saying what to do; the rest of the source syncs;
    * an ACL token with one fails closed: the document's ACL is treated as invalid (private to the
      source's owner), as for any unparseable ACL;
    * in text, title, URL, pages, version or a failure's reason each becomes U+FFFD."""
    if isinstance(item, Failed):
        if (item.doc_id and LONE_SURROGATE.search(item.doc_id)) or LONE_SURROGATE.search(item.reason):
            return replace(
                item,
                doc_id=printable_id(item.doc_id) if item.doc_id else None,
                reason=without_lone_surrogates(item.reason),
            )
        return item
    if isinstance(item, Moved):
        doc = storable(item.document)
        if isinstance(doc, Failed) or LONE_SURROGATE.search(item.old_id):
            return doc  # an old id that could never have been stored: nothing indexed to move
        return item if doc is item.document else replace(item, document=doc)
    doc_id = getattr(item, "doc_id", None)
    if isinstance(doc_id, str) and LONE_SURROGATE.search(doc_id):
        return Failed(
            printable_id(doc_id),
            "the document's id is not valid Unicode text (a file name that is not UTF-8, or a lone "
            "surrogate such as \\ud800 in the data): rename the file or fix the id",
        )
    acl = getattr(item, "acl", None)
    if acl and any(LONE_SURROGATE.search(token) for token in acl):
        bad = next(printable_id(t) for t in sorted(acl, key=printable_id) if LONE_SURROGATE.search(t))
        item = replace(item, acl=None, acl_error=f"ACL token {bad!r} is not valid Unicode text")
    if isinstance(item, Document):
        fields: dict[str, Any] = {
            name: without_lone_surrogates(value)
            for name in ("title", "text", "url", "acl_error", "version", "revision")
            if isinstance(value := getattr(item, name), str) and LONE_SURROGATE.search(value)
        }
        if item.pages and any(LONE_SURROGATE.search(page) for page in item.pages):
            fields["pages"] = tuple(without_lone_surrogates(page) for page in item.pages)
        if fields:
            item = replace(item, **fields)
    return item


class SyncProgress(Protocol):
    """Receives progress while a source syncs (the CLI draws a progress bar with it)."""

    def start(self, source_id: str, total: int | None) -> None: ...

    def advance(self, source_id: str) -> None: ...

    def finish(self, source_id: str) -> None: ...


@dataclass
class SyncSummary:
    """What one sync of one source did."""

    source_id: str
    status: str = "running"  # succeeded | partial (some documents failed) | failed | removed | skipped
    run_id: int | None = None
    mode: str = "full"  # full | acl-only
    added: int = 0
    updated: int = 0
    acl_changed: int = 0
    deleted: int = 0
    moved: int = 0
    unchanged: int = 0
    private_by_default: int = 0
    failed: int = 0
    quarantined: int = 0  # flagged documents kept out of the index (``screening: quarantine``)
    documents: int = 0  # documents the connector yielded (including failed ones)
    failures: list[dict[str, Any]] = field(default_factory=list)  # {doc_id, line, reason}
    private: list[dict[str, str]] = field(default_factory=list)  # {doc_id, reason}
    warnings: list[dict[str, str]] = field(default_factory=list)  # {doc_id, reason}: e.g. unknown groups
    error: str | None = None  # why the whole source failed
    rechunked: bool = False
    started_at: datetime | None = None
    finished_at: datetime | None = None

    COUNTS = (
        "added",
        "updated",
        "acl_changed",
        "deleted",
        "moved",
        "unchanged",
        "private_by_default",
        "failed",
    )

    def counts(self) -> dict[str, int]:
        return {name: int(getattr(self, name)) for name in self.COUNTS}

    @property
    def ok(self) -> bool:
        """The source was read completely (individual documents may still have failed)."""
        return self.status in ("succeeded", "partial", "removed", "skipped")

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source_id,
            "status": self.status,
            "mode": self.mode,
            "run_id": self.run_id,
            **self.counts(),
            "quarantined": self.quarantined,
            "documents": self.documents,
            "failures": self.failures,
            "private": self.private,
            "warnings": self.warnings,
            "error": self.error,
            "rechunked": self.rechunked,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


def _reason(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Catalog:
    """The per-document catalog of one source, written in small batches (it heals itself on re-sync)."""

    def __init__(self, rt: RuntimeContext, source_id: str, now: Callable[[], datetime]) -> None:
        self.rt, self.source_id, self.now = rt, source_id, now
        with rt.store.connect() as conn:
            rows = conn.execute(select(source_documents).where(source_documents.c.source_id == source_id))
            self.rows: dict[str, dict[str, Any]] = {r.doc_id: dict(r._mapping) for r in rows}
        self.pending: dict[str, dict[str, Any] | None] = {}

    def record(self, doc: Document, tokens: frozenset[str], private: bool, acl_error: str | None) -> None:
        row = {
            "source_id": self.source_id,
            "doc_id": doc.doc_id,
            "title": doc.title,
            "url": doc.url,
            "format": doc.format,
            "acl_tokens": sorted(tokens),
            "private_by_default": private,
            "acl_error": acl_error if private else None,
            "content_hash": doc.content_hash,
            "updated_at": doc.updated_at,
            "failed_reason": None,
            "version": (doc.version or "")[:200] or None,
            "revision": (doc.revision or "")[:200] or None,
        }
        self._put(doc.doc_id, row)

    def record_acl(self, doc_id: str, tokens: frozenset[str], private: bool, acl_error: str | None) -> None:
        old = self.rows.get(doc_id)
        if old is not None:
            self._put(
                doc_id,
                {
                    **old,
                    "acl_tokens": sorted(tokens),
                    "private_by_default": private,
                    "acl_error": acl_error if private else None,
                },
            )

    def move(self, old_id: str, new_id: str) -> None:
        old = self.rows.get(old_id)
        self.remove(old_id)
        if old is not None:
            self._put(new_id, {**old, "doc_id": new_id})

    def failed(self, doc_id: str, reason: str) -> None:
        old = self.rows.get(doc_id)
        if old is not None:  # keep the previous version's metadata, mark it failed
            self._put(doc_id, {**old, "failed_reason": reason})

    def remove(self, doc_id: str) -> None:
        if doc_id in self.rows:
            self.pending[doc_id] = None
            self.rows.pop(doc_id)
            self._maybe_flush()

    def _put(self, doc_id: str, row: dict[str, Any]) -> None:
        old = self.rows.get(doc_id)
        if old is not None and all(old.get(k) == v for k, v in row.items() if k != "recorded_at"):
            return
        row = {**row, "recorded_at": self.now()}
        self.rows[doc_id] = row
        self.pending[doc_id] = row
        self._maybe_flush()

    def _maybe_flush(self) -> None:
        if len(self.pending) >= CATALOG_BATCH:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        t = source_documents
        with self.rt.store.begin() as conn:
            for doc_id, row in self.pending.items():
                conn.execute(t.delete().where(t.c.source_id == self.source_id, t.c.doc_id == doc_id))
                if row is not None:
                    conn.execute(t.insert().values(**row))
        self.pending.clear()


EMBED_BATCH = 32  # documents read before their new chunks are embedded together


@dataclass
class _Pass:
    """One sync pass over a source: the index's document states, what the pass has seen, and the read
    documents waiting to be indexed (a batch)."""

    source: Source
    states: dict[str, DocState]
    rechunk: bool
    summary: SyncSummary
    catalog: _Catalog
    seen: set[str] = field(default_factory=set)
    pending: list[tuple[Document, datetime]] = field(default_factory=list)


class Syncer:
    """Syncs sources of one runtime into one index. Use :func:`sync_sources` unless you need the parts."""

    def __init__(
        self,
        rt: RuntimeContext,
        index: Index | None = None,
        *,
        actor: str = "system",
        progress: SyncProgress | None = None,
        now: Callable[[], datetime] = utcnow,
        skip_busy: bool = False,
        reembed: bool = False,
    ) -> None:
        self.skip_busy, self.reembed = skip_busy, reembed
        if index is None:
            from charter.retrieval import Index as _Index

            index = _Index.for_runtime(rt)
        self.rt, self.index, self.actor, self.progress, self.now = rt, index, actor, progress, now
        principals = rt.charter.principals
        self.known_tokens = frozenset(
            {"public"}
            | {f"user:{p}" for p in principals}
            | {f"group:{g.id}" for g in rt.charter.users.groups}
            | {f"group:{g}" for p in principals.values() for g in p.groups}
        )

    # ------------------------------------------------------------------------------------ runs
    def _begin_run(self, source: Source) -> int:
        host = socket.gethostname()
        now = self.now()
        with self.rt.store.begin(immediate=True) as conn:
            if conn.dialect.name == "postgresql":  # SQLite's BEGIN IMMEDIATE already serialises this
                key = int.from_bytes(
                    hashlib.sha256(f"charter.sync:{source.id}".encode()).digest()[:8], "big", signed=True
                )
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
            t = sync_runs
            running = conn.execute(
                select(t.c.id, t.c.pid, t.c.host, t.c.started_at).where(
                    t.c.source_id == source.id, t.c.status == "running"
                )
            )
            for run in running.all():
                same_host = run.host == host
                if (same_host and run.pid and not _pid_alive(run.pid)) or (
                    not same_host and now - run.started_at > STALE_RUN_AFTER
                ):
                    conn.execute(
                        sync_runs.update()
                        .where(sync_runs.c.id == run.id)
                        .values(status="interrupted", error="the process stopped before the run finished")
                    )
                else:
                    raise Conflict(
                        f"source {source.id!r} is already being synced (run {run.id}, "
                        f"pid {run.pid} on {run.host}); wait for it to finish"
                    )
            result = conn.execute(
                sync_runs.insert().values(
                    source_id=source.id,
                    actor=self.actor,
                    status="running",
                    started_at=now,
                    pid=os.getpid(),
                    host=host,
                    config_hash=source_config_hash(source),
                    summary={},
                )
            )
            pk = result.inserted_primary_key
            assert pk is not None
            return int(pk[0])

    def _end_run(self, source: Source, summary: SyncSummary, cursor: dict[str, Any] | None = None) -> None:
        summary.finished_at = self.now()
        with self.rt.store.begin(immediate=True) as conn:
            conn.execute(
                sync_runs.update()
                .where(sync_runs.c.id == summary.run_id)
                .values(
                    status=summary.status,
                    finished_at=summary.finished_at,
                    summary=summary.as_dict(),
                    error=summary.error,
                )
            )
            values: dict[str, Any] = {"last_run_at": summary.finished_at, "last_status": summary.status}
            if summary.ok:
                values["acl_synced_at"] = summary.finished_at
                if summary.mode == "full":
                    values |= {
                        "last_success_at": summary.finished_at,
                        "last_success_run": summary.run_id,
                        "config_hash": source_config_hash(source),
                        "chunking_hash": chunking_hash(source),
                        "cursor": cursor,
                    }
            _upsert_state(conn, source.id, values)

    # ------------------------------------------------------------------------------------ one source
    def sync(self, source: Source) -> SyncSummary:
        """A full (incremental where the connector can) sync of ``source``."""
        return self._run(source, "full")

    def sync_acls(self, source: Source) -> SyncSummary:
        """Only the ACLs of ``source``'s indexed documents (and deletions): no chunking, no embedding."""
        return self._run(source, "acl-only")

    def _run(self, source: Source, mode: str) -> SyncSummary:
        summary = SyncSummary(source_id=source.id, started_at=self.now(), mode=mode)
        try:
            summary.run_id = self._begin_run(source)
        except Conflict as exc:
            if not self.skip_busy:
                raise
            summary.status, summary.error = "skipped", _reason(str(exc))
            summary.finished_at = self.now()
            return summary
        cursor: dict[str, Any] | None = None
        try:
            if mode == "acl-only":
                self._sync_acls(source, summary)
            else:
                cursor = self._sync(source, summary)
        except (CharterException, OSError) as exc:
            summary.status, summary.error = "failed", _reason(str(exc))
        except Exception as exc:  # a connector bug must not leave the run "running"; nothing was deleted
            summary.status, summary.error = "failed", _reason(f"{type(exc).__name__}: {exc}")
            self._end_run(source, summary)
            self._audit(summary)
            raise
        except BaseException:  # Ctrl-C: every written document is whole; the next sync finishes the job
            summary.status, summary.error = "interrupted", "interrupted before the run finished"
            self._end_run(source, summary)
            raise
        finally:
            if self.progress is not None:
                self.progress.finish(source.id)
        self._end_run(source, summary, cursor)
        self._audit(summary)
        return summary

    def _saved_cursor(self, source: Source) -> dict[str, Any] | None:
        with self.rt.store.connect() as conn:
            row = conn.execute(
                select(source_state.c.cursor, source_state.c.config_hash).where(
                    source_state.c.source_id == source.id
                )
            ).first()
        if row is None or row.cursor is None or row.config_hash != source_config_hash(source):
            return None  # a changed configuration (query, branch, rules...) reads everything again
        return dict(row.cursor)

    def _sync(self, source: Source, summary: SyncSummary) -> dict[str, Any] | None:
        conn = get_connector(source.connector)
        self.index.check_embedder(allow_switch=self.reembed)
        states = self.index.document_states(source.id)
        rechunk = self.reembed or self._needs_rechunk(source, states)
        summary.rechunked = rechunk
        p = _Pass(source, states, rechunk, summary, _Catalog(self.rt, source.id, self.now))
        ctx = ConnectorContext(source=source, base_dir=self.rt.charter.base_dir)
        if not rechunk:
            ctx.cursor = self._saved_cursor(source)
            ctx.known = {k: r.get("version") for k, r in p.catalog.rows.items() if k in states}
        counter = getattr(conn, "count", None)
        total = counter(ctx) if callable(counter) else None
        if self.progress is not None:
            self.progress.start(source.id, total)
        for item, read_at in _read_ahead(conn.documents(ctx), PIPELINE_DEPTH):
            summary.documents += 1
            if self.progress is not None:
                self.progress.advance(source.id)
            doc = self._take(p, item, read_at)
            if doc is not None:
                p.seen.add(doc.doc_id)
                p.pending.append((doc, read_at))
                if len(p.pending) >= EMBED_BATCH:
                    self._process(p)
        self._process(p)
        self._finish_pass(p)
        return ctx.new_cursor

    def _take(self, p: _Pass, item: Any, read_at: datetime) -> Document | None:
        """Apply one item the connector yielded (a failure, an unchanged, deleted or moved document); the
        document to index, or ``None`` when there is nothing to index."""
        source, summary, catalog, states, seen = p.source, p.summary, p.catalog, p.states, p.seen
        item = storable(item)
        if isinstance(item, Failed):
            if item.refused and item.doc_id:  # never keep (or serve) an earlier version of a refused file
                if self.index.delete_document(source.id, item.doc_id):
                    summary.deleted += 1
                catalog.remove(item.doc_id)
            self._fail(summary, catalog, seen, item.doc_id, item.reason, item.line)
            return None
        if isinstance(item, Unchanged):
            if item.doc_id not in states and item.doc_id not in seen:
                # the connector believes it is indexed but it is not (e.g. removed by hand): read all again
                raise SourceUnavailable(
                    f"source {source.id!r}: document {item.doc_id!r} is missing from the index; "
                    "the next sync reads the whole source again"
                )
            seen.add(item.doc_id)
            if item.acl_known:
                entry = AclEntry(item.doc_id, item.acl, item.acl_error)
                self._apply_acl(source, entry, states, summary, catalog, read_at, count_unchanged=True)
            else:
                summary.unchanged += 1
            return None
        if isinstance(item, Deleted):
            if item.doc_id in seen:
                return None
            if self.index.delete_document(source.id, item.doc_id):
                summary.deleted += 1
            states.pop(item.doc_id, None)
            catalog.remove(item.doc_id)
            return None
        if isinstance(item, Moved):
            item = self._move(p, item)
        return self._accepted(p, item)

    def _move(self, p: _Pass, item: Moved) -> Document:
        """Move an indexed document to its new id (its chunks and vectors kept) when it can be moved."""
        doc = item.document
        if (
            item.old_id in p.states
            and doc.doc_id not in p.states
            and doc.doc_id not in p.seen
            and self.index.move_document(p.source.id, item.old_id, doc.doc_id)
        ):
            p.states[doc.doc_id] = p.states.pop(item.old_id)
            p.catalog.move(item.old_id, doc.doc_id)
            p.summary.moved += 1
        return doc

    def _accepted(self, p: _Pass, item: Any) -> Document | None:
        """``item`` when it is a document of this source with an id not seen before in this pass."""
        if not isinstance(item, Document) or item.source_id != p.source.id or not item.doc_id:
            self._fail(
                p.summary,
                p.catalog,
                p.seen,
                getattr(item, "doc_id", None),
                "connector returned a document of another source or without an id",
            )
            return None
        if item.doc_id in p.seen:
            p.summary.failed += 1
            self._list(
                p.summary.failures,
                {
                    "doc_id": item.doc_id,
                    "line": None,
                    "reason": "duplicate document id (the first one was kept)",
                },
            )
            return None
        return item

    def _finish_pass(self, p: _Pass) -> None:
        """Delete what the source no longer has, unless nothing could be read (then the sync fails)."""
        source, summary, catalog, seen = p.source, p.summary, p.catalog, p.seen
        if summary.failed and summary.failed == summary.documents:
            catalog.flush()  # nothing could be read: not a successful sync, and no grounds to delete anything
            raise SourceUnavailable(f"source {source.id!r}: every document failed (see failures)")
        for doc_id in sorted(set(p.states) - seen):
            if self.index.delete_document(source.id, doc_id):
                summary.deleted += 1
            catalog.remove(doc_id)
        for doc_id in sorted(set(catalog.rows) - seen):
            catalog.remove(doc_id)
        catalog.flush()
        forget_screened(self.rt, source.id, seen)
        summary.status = "partial" if summary.failed else "succeeded"

    def _sync_acls(self, source: Source, summary: SyncSummary) -> None:
        conn = get_connector(source.connector)
        states = self.index.document_states(source.id)
        catalog = _Catalog(self.rt, source.id, self.now)
        ctx = ConnectorContext(source=source, base_dir=self.rt.charter.base_dir)
        ctx.cursor = self._saved_cursor(source)
        ctx.known = {k: r.get("version") for k, r in catalog.rows.items() if k in states}
        lister = getattr(conn, "acls", None)
        entries: Iterable[Any]
        if callable(lister):
            entries = lister(ctx)
        else:  # no cheaper way: read the content, but never chunk or embed it
            entries = (
                AclEntry(d.doc_id, d.acl, d.acl_error) if isinstance(d, Document) else d
                for d in conn.documents(ctx)
            )
        if self.progress is not None:
            self.progress.start(source.id, len(states) or None)
        seen: set[str] = set()
        for entry, read_at in _read_ahead(entries, PIPELINE_DEPTH):
            entry = storable(entry)
            if isinstance(entry, Failed):
                summary.documents += 1
                self._fail(summary, catalog, seen, entry.doc_id, entry.reason, entry.line)
                continue
            if not isinstance(entry, AclEntry):
                continue
            summary.documents += 1
            seen.add(entry.doc_id)
            if entry.doc_id not in states:
                continue  # new at the source: the next full sync indexes it
            if self.progress is not None:
                self.progress.advance(source.id)
            self._apply_acl(source, entry, states, summary, catalog, read_at, count_unchanged=True)
        if summary.failed and summary.failed == summary.documents:
            catalog.flush()
            raise SourceUnavailable(f"source {source.id!r}: every document failed (see failures)")
        for doc_id in sorted(set(states) - seen):  # gone from the source: revoke by deleting
            if self.index.delete_document(source.id, doc_id):
                summary.deleted += 1
            catalog.remove(doc_id)
        catalog.flush()
        summary.status = "partial" if summary.failed else "succeeded"

    def _apply_acl(
        self,
        source: Source,
        entry: AclEntry,
        states: dict[str, DocState],
        summary: SyncSummary,
        catalog: _Catalog,
        read_at: datetime,
        *,
        count_unchanged: bool,
    ) -> None:
        """Bring one indexed document's ACL up to date (the ACL rows only)."""
        state = states.get(entry.doc_id)
        if state is None:
            return
        eff = effective_acl(source, entry.acl, entry.acl_error)
        if eff.private_by_default:
            summary.private_by_default += 1
            self._list(summary.private, {"doc_id": entry.doc_id, "reason": _reason(eff.reason or "no ACL")})
        if state.acl_hash == acl_hash(eff.tokens) and state.private_by_default == eff.private_by_default:
            if count_unchanged:
                summary.unchanged += 1
        else:
            self.index.update_acl(
                source.id,
                entry.doc_id,
                eff.tokens,
                seen_at=read_at,
                private_by_default=eff.private_by_default,
            )
            summary.acl_changed += 1
        catalog.record_acl(entry.doc_id, eff.tokens, eff.private_by_default, eff.reason)

    def _process(self, p: _Pass) -> None:
        """Index a batch of read documents: chunk and embed the new or changed ones once, in one pass
        (:meth:`Index.prepare`), then write the batch in one transaction (every document is still whole
        after an interruption). If that batch write fails for a reason other than the store or the index
        setup, the documents are written one by one so that only the bad one fails, with its reason."""
        if not p.pending:
            return
        self._screen(p)
        states, rechunk = p.states, p.rechunk
        changed = [
            d
            for d, _ in p.pending
            if rechunk or states.get(d.doc_id) is None or states[d.doc_id].content_hash != d.content_hash
        ]
        prepared = self._prepare(p.source, changed)
        self._write(p, self._plan(p, prepared))
        p.pending.clear()

    def _screen(self, p: _Pass) -> None:
        """Instruction screening: a quarantined document is not retrievable until its owner approves it,
        and no earlier version of it is either."""
        p.pending[:], quarantined = screen_pending(self.rt, p.source, p.pending, p.summary, actor=self.actor)
        for doc_id in quarantined:
            self.index.delete_document(p.source.id, doc_id)
            p.states.pop(doc_id, None)
            p.catalog.remove(doc_id)
            p.summary.quarantined += 1

    def _prepare(self, source: Source, changed: list[Document]) -> dict[str, Prepared]:
        """The changed documents' chunks and vectors (empty when that fails: each then fails on its own,
        with its reason, when written); the extractive drafter's sentence vectors prefetched."""
        prepared: dict[str, Prepared] = {}
        if not changed:
            return prepared
        with contextlib.suppress(Exception):
            prepared = dict(
                zip((d.doc_id for d in changed), self.index.prepare(changed, source.chunking), strict=True)
            )
        if self._drafts_extractively():
            # the extractive drafter's sentence vectors, embedded now rather than while someone waits
            with contextlib.suppress(Exception):
                from charter.models import ExtractiveModel
                from charter.retrieval import chunk_document

                if len(prepared) == len(changed):
                    texts = [c.text for pr in prepared.values() for c in pr.chunks]
                else:
                    texts = [c.text for d in changed for c in chunk_document(d, source.chunking)]
                ExtractiveModel.prefetch(self.index, texts)
        return prepared

    def _plan(
        self, p: _Pass, prepared: dict[str, Prepared]
    ) -> list[tuple[Document, EffectiveAcl, DocumentWrite | None]]:
        """Each pending document with its effective ACL and its write (``None``: nothing changed)."""
        from charter.retrieval import DocumentWrite

        planned: list[tuple[Document, EffectiveAcl, DocumentWrite | None]] = []
        for doc, read_at in p.pending:
            eff = self._check_acl(p.source, doc, p.summary)
            state = p.states.get(doc.doc_id)
            write: DocumentWrite | None = None
            if not (
                state is not None
                and not p.rechunk
                and state.content_hash == doc.content_hash
                and state.acl_hash == acl_hash(eff.tokens)
                and state.private_by_default == eff.private_by_default
            ):  # the index re-chunks when the chunking settings differ, and re-embeds only new chunk texts
                write = DocumentWrite(
                    doc, eff.tokens, eff.private_by_default, read_at, prepared.get(doc.doc_id)
                )
            planned.append((doc, eff, write))
        return planned

    def _write(self, p: _Pass, planned: list[tuple[Document, EffectiveAcl, DocumentWrite | None]]) -> None:
        """Write the batch in one transaction, or one by one when that fails (only the bad one fails)."""
        source, summary = p.source, p.summary
        writes = [w for _, _, w in planned if w is not None]
        results: dict[str, str] | None = None
        try:
            done = self.index.upsert_documents(writes, source.chunking, force=self.reembed)
            results = {w.doc.doc_id: r for w, r in zip(writes, done, strict=True)}
        except (SQLAlchemyError, CharterException):
            raise  # the store or the index setup (e.g. the embedder) is failing: stop, delete nothing
        except Exception:  # noqa: S110 - one bad document: write them one by one below to find it
            pass
        for doc, eff, write in planned:
            if write is None:
                result = "unchanged"
            elif results is not None:
                result = results[doc.doc_id]
            else:
                try:
                    result = self.index.upsert_documents([write], source.chunking, force=self.reembed)[0]
                except (SQLAlchemyError, CharterException):
                    raise
                except Exception as exc:
                    self._fail(
                        summary,
                        p.catalog,
                        p.seen,
                        doc.doc_id,
                        f"indexing failed: {type(exc).__name__}: {exc}",
                    )
                    continue
            setattr(summary, result, getattr(summary, result) + 1)
            p.catalog.record(doc, eff.tokens, eff.private_by_default, eff.reason)

    def _drafts_extractively(self) -> bool:
        """Whether the workflow's model or its fallback is the extractive drafter (which scores passage
        sentences by embedding: their vectors are then computed at sync time)."""
        model = self.rt.spec.model
        return "extractive" in {model.provider, getattr(model.fallback, "provider", None)}

    def _check_acl(self, source: Source, doc: Document, summary: SyncSummary) -> EffectiveAcl:
        """The document's effective ACL; lists it when it is private by default, and warns about ACL
        tokens that no user or group holds."""
        eff = effective_acl(source, doc.acl, doc.acl_error)
        if eff.private_by_default:
            summary.private_by_default += 1
            self._list(summary.private, {"doc_id": doc.doc_id, "reason": _reason(eff.reason or "no ACL")})
        unknown = sorted(eff.tokens - self.known_tokens)
        if unknown:  # still fail closed (nobody holds the token), but the author probably made a typo
            self._list(
                summary.warnings,
                {
                    "doc_id": doc.doc_id,
                    "reason": _reason(
                        f"ACL names {', '.join(unknown)}, which no user or group in the users file has"
                    ),
                },
            )
        return eff

    def _fail(
        self,
        summary: SyncSummary,
        catalog: _Catalog,
        seen: set[str],
        doc_id: str | None,
        reason: str,
        line: int | None = None,
    ) -> None:
        summary.failed += 1
        reason = _reason(reason)
        self._list(summary.failures, {"doc_id": doc_id, "line": line, "reason": reason})
        if doc_id:
            seen.add(doc_id)  # keep the previously indexed version: a bad read is not a deletion
            catalog.failed(doc_id, reason)

    @staticmethod
    def _list(items: list[Any], item: Any) -> None:
        if len(items) < MAX_LISTED:
            items.append(item)

    def _needs_rechunk(self, source: Source, states: dict[str, DocState]) -> bool:
        """Whether the source's chunking settings changed since the index was built."""
        current = chunking_hash(source)
        with self.rt.store.connect() as conn:
            built = conn.execute(
                select(source_state.c.chunking_hash).where(source_state.c.source_id == source.id)
            ).scalar()
        if built is None and not states:
            # A first build: record the chunking now, so a crashed first sync resumes without re-chunking.
            with self.rt.store.begin() as conn:
                _upsert_state(conn, source.id, {"chunking_hash": current})
            return False
        return built is not None and built != current

    def _audit(self, summary: SyncSummary) -> None:
        self.rt.audit.append(
            actor=self.actor,
            action="sources.synced",
            resource=f"source:{summary.source_id}",
            outcome={"succeeded": "success", "partial": "partial", "removed": "success"}.get(
                summary.status, "failure"
            ),
            details={
                "run_id": summary.run_id,
                "status": summary.status,
                **summary.counts(),
                "quarantined": summary.quarantined,
                "documents": summary.documents,
                "error": summary.error,
                "failures": summary.failures[:20],
                "private": summary.private[:20],
                "warnings": summary.warnings[:20],
            },
        )

    # ------------------------------------------------------------------------------------ removed sources
    def prune(self, keep: Iterable[str]) -> list[SyncSummary]:
        """Remove from the index every source that is no longer in the charter."""
        keep = set(keep)
        with self.rt.store.connect() as conn:
            known = set(conn.execute(select(source_state.c.source_id)).scalars())
            known |= set(conn.execute(select(source_documents.c.source_id).distinct()).scalars())
        out = []
        for source_id in sorted((set(self.index.counts()) | known) - keep):
            summary = SyncSummary(source_id=source_id, started_at=self.now())
            for doc_id in sorted(self.index.document_states(source_id)):
                if self.index.delete_document(source_id, doc_id):
                    summary.deleted += 1
            with self.rt.store.begin() as conn:
                conn.execute(source_documents.delete().where(source_documents.c.source_id == source_id))
                conn.execute(source_state.delete().where(source_state.c.source_id == source_id))
            forget_screened(self.rt, source_id)
            summary.status, summary.finished_at = "removed", self.now()
            self.rt.audit.append(
                actor=self.actor,
                action="sources.removed",
                resource=f"source:{source_id}",
                outcome="success",
                details={"deleted": summary.deleted, "reason": "source no longer in the charter"},
            )
            out.append(summary)
        return out


_DONE = object()


def _read_ahead(items: Iterable[Any], depth: int) -> Iterator[tuple[Any, datetime]]:
    """Iterate ``items`` in a reader thread, up to ``depth`` items ahead of the consumer; yields
    ``(item, read_at)``. An exception of the reader is raised in the consumer; when the consumer stops
    early (an error, Ctrl-C), the reader is told to stop and its iterator is closed."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(value: Any) -> bool:
        while not stop.is_set():
            try:
                q.put(value, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        it = iter(items)
        try:
            while not stop.is_set():
                try:
                    read_at = utcnow()  # real time: the index orders writes by when their data was read
                    item = next(it)
                except StopIteration:
                    break
                if not put((item, read_at)):
                    break
        except BaseException as exc:  # handed to the consumer, raised there
            put(("__error__", exc))
            return
        finally:
            close = getattr(it, "close", None)
            if callable(close) and stop.is_set():
                with contextlib.suppress(Exception):
                    close()
        put(_DONE)

    thread = threading.Thread(target=reader, name="charter-sync-reader", daemon=True)
    thread.start()
    try:
        while True:
            value = q.get()
            if value is _DONE:
                return
            if isinstance(value, tuple) and len(value) == 2 and value[0] == "__error__":
                raise value[1]
            yield value
    finally:
        stop.set()
        thread.join(timeout=5)


def _upsert_state(conn: Any, source_id: str, values: dict[str, Any]) -> None:
    t = source_state
    updated = conn.execute(t.update().where(t.c.source_id == source_id).values(**values))
    if updated.rowcount == 0:
        conn.execute(source_state.insert().values(source_id=source_id, **values))


def sync_sources(
    rt: RuntimeContext,
    source_id: str | None = None,
    *,
    index: Index | None = None,
    actor: str = "system",
    progress: SyncProgress | None = None,
    now: Callable[[], datetime] = utcnow,
    prune: bool | None = None,
    acl_only: bool = False,
    skip_busy: bool = False,
    reembed: bool = False,
) -> list[SyncSummary]:
    """Sync one source (``source_id``) or all of the charter's sources; returns one summary per source.

    A full sync (no ``source_id``) also removes from the index any source that is no longer in the charter
    (``prune`` overrides). Per-document problems never raise; a source that cannot be read is reported with
    ``status="failed"`` and the others still sync.

    ``acl_only``: only ACLs and deletions (:meth:`Syncer.sync_acls`), never pruning. ``skip_busy``: a source
    another process is syncing is reported ``skipped`` (several workers split the sources). ``reembed``:
    re-embed every document with the charter's embedder (after changing ``retrieval.embedder``).
    """
    sources = list(rt.spec.sources)
    if source_id is not None:
        sources = [s for s in sources if s.id == source_id]
        if not sources:
            known = ", ".join(s.id for s in rt.spec.sources) or "none"
            raise UsageError(f"unknown source {source_id!r} (known: {known})")
    syncer = Syncer(rt, index, actor=actor, progress=progress, now=now, skip_busy=skip_busy, reembed=reembed)
    if acl_only:
        return [syncer.sync_acls(s) for s in sources]
    summaries = [syncer.sync(s) for s in sources]
    if reembed and source_id is None and all(s.ok for s in summaries):
        syncer.index.record_embedder()
    if prune if prune is not None else source_id is None:
        summaries += syncer.prune(s.id for s in rt.spec.sources)
    return summaries
