"""The index: documents, chunks, ACLs and embeddings in the store; permission-filtered hybrid search.

Writes and ordering
-------------------
Every document is written in **one** transaction (``BEGIN IMMEDIATE`` on SQLite; ``upsert_documents``
writes several in one), so a sync killed at any point leaves each document either wholly old or wholly new;
re-running the sync repairs the rest. Chunking
and embedding happen *before* that transaction (embeddings go to the cache first, which is idempotent).

A document row remembers when the sync read its content (``content_seen_at``) and its ACL
(``acl_seen_at``). A write carries the time its data was read (``seen_at``, default: when the call started)
and never replaces data that was read later: a slow content update that started before a concurrent ACL
change keeps the newer ACL, and an older content write never replaces newer content. Callers that read a
document at time T should pass ``seen_at=T``.

Every change bumps a counter in ``retrieval_versions`` (``content`` or ``acl``) in the same transaction.
Searches compare the counters with their in-memory snapshot (one small query) and reload what changed, so a
sync by another process is visible on the very next query.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from sqlalchemy import Connection, Integer, bindparam, cast, delete, func, insert, select, update

from charter.documents import acl_hash as _acl_hash
from charter.errors import Conflict, UsageError
from charter.retrieval._chunking import chunk_document
from charter.retrieval._embedding import (
    Embedder,
    Vectors,
    embed_queries,
    get_embedder,
    require_precision,
)
from charter.retrieval._lexical import Postings, analyse, identifier_terms
from charter.retrieval._search import DocMeta, Scored, Snapshot, score
from charter.retrieval._types import Chunk, DocState, Hit, chunk_key
from charter.store import utcnow
from charter.store.tables import acl, chunks, documents, embeddings, meta, versions

if TYPE_CHECKING:
    from charter.documents import Document
    from charter.spec import Chunking, Fusion
    from charter.store import Store

UpsertResult = Literal["added", "updated", "acl_changed", "unchanged"]
MAX_QUERY_CHARS = 4000


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _chunking_key(chunking: Chunking) -> str:
    return f"{chunking.max_tokens}/{chunking.overlap}"


@dataclass(frozen=True)
class Prepared:
    """A document's chunks with their embed texts, text hashes and vectors (:meth:`Index.prepare`), valid
    for the content hash and chunking settings it was made from."""

    content_hash: str
    chunking: str  # "max_tokens/overlap"
    chunks: list[Chunk]
    texts: list[str]  # ``Chunk.embed_text`` of each chunk
    hashes: list[str]
    vectors: Vectors


@dataclass(frozen=True)
class DocumentWrite:
    """One document for :meth:`Index.upsert_documents`: its effective ACL tokens, whether it is private by
    default, when its data was read, and optionally its :meth:`Index.prepare` result."""

    doc: Document
    acl_tokens: frozenset[str]
    private_by_default: bool
    seen_at: datetime
    prepared: Prepared | None = None


_VERSIONS = select(versions.c.name, versions.c.counter, versions.c.stamp)
_BUILT_WITH = select(meta.c.value).where(meta.c.key == "embedder")


class EmbedderMismatch(UsageError):
    """The index was built with another embedder than the one asked to query or extend it."""

    def __init__(self, built: str, current: str) -> None:
        super().__init__(
            f"the index was built with the embedder {built!r} but the charter's embedder is {current!r}; "
            "query and document embeddings must come from the same model. Either set retrieval.embedder "
            "back, or re-embed everything with: charter sync --reembed"
        )
        self.built, self.current = built, current


@dataclass
class _BatchPlan:
    """:meth:`Index.upsert_documents`' reading of a batch: a result per write where nothing is to be written,
    the writes whose ACL alone changed, and the writes whose content is to be (re)written with its chunks."""

    results: list[UpsertResult | None]
    acl_only: list[int] = field(default_factory=list)
    content: list[tuple[int, Prepared]] = field(
        default_factory=list
    )  # (index in the writes, chunks, vectors)
    new_vectors: list[dict[str, Any]] = field(default_factory=list)  # cache rows of newly embedded texts


class Index:
    """The retrieval index of one store. Thread-safe for searches; writes serialise in the database."""

    def __init__(
        self, store: Store, embedder: Embedder | None = None, *, question_precision: str = "float32"
    ) -> None:
        self.store = store
        self._embedder = embedder
        #: the precision questions are embedded in (``retrieval.question_precision``; documents: float32)
        self.question_precision = question_precision
        self._snapshot: Snapshot | None = None
        self._lock = threading.RLock()
        self._query_vectors: OrderedDict[str, Vectors] = OrderedDict()  # small LRU of query embeddings
        self.default_fusion: Fusion | None = None
        self._embedder_checked = False

    @classmethod
    def for_runtime(cls, rt: Any) -> Index:
        """The runtime's index, built once (cached on the runtime) with the charter's embedder and fusion."""
        existing = rt.services.index
        if existing is not None:
            return existing  # type: ignore[no-any-return]
        retrieval = rt.spec.retrieval
        if retrieval.embedder == "openai" and retrieval.embeddings is not None:
            from charter.retrieval._embedding import OpenAIEmbedder

            emb: Embedder = OpenAIEmbedder.from_settings(retrieval.embeddings)
        else:
            emb = get_embedder(retrieval.embedder)
        require_precision(emb, retrieval.question_precision, repr(retrieval.embedder))
        index = cls(rt.store, emb, question_precision=retrieval.question_precision)
        index.default_fusion = retrieval.fusion
        rt.services.index = index
        return index

    def question_precision_used(self) -> str:
        """The precision questions are actually embedded in: :attr:`question_precision`, or ``float32`` where
        the embedder's check of it failed on this machine (recorded in each request's trace)."""
        check = getattr(self.embedder, "query_precision", None)
        if self.question_precision == "float32" or not callable(check):
            return self.question_precision
        return str(check(self.question_precision))

    def on_store(self, store: Store) -> Index:
        """An index over another store (a copy of this one's database: the gate's drills, the eval probes)
        that searches exactly as this one does — the same loaded embedder (no second model load), default
        fusion and question precision."""
        index = Index(store, self.embedder, question_precision=self.question_precision)
        index.default_fusion = self.default_fusion
        return index

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder("minilm")
        return self._embedder

    # ------------------------------------------------------------------------------------------ embedder
    def built_with(self) -> str | None:
        """The embedder (``Embedder.name``) that built the index; ``None`` for an index never written."""
        with self.store.connect() as conn:
            value = conn.execute(_BUILT_WITH).scalar()
        return None if value is None else str(value)

    def check_embedder(self, *, allow_switch: bool = False) -> None:
        """Raise :class:`EmbedderMismatch` if the index was built with another embedder. ``allow_switch``
        records this index's embedder instead (the caller re-embeds every document)."""
        built = self.built_with()
        if built is not None and built != self.embedder.name:
            if not allow_switch:
                raise EmbedderMismatch(built, self.embedder.name)
            self.record_embedder()
        self._embedder_checked = True

    def record_embedder(self) -> None:
        """Record this index's embedder as the one that built it."""
        with self.store.begin(immediate=True) as conn:
            self._record_embedder(conn, replace=True)

    def _record_embedder(self, conn: Connection, *, replace: bool = False) -> None:
        name = self.embedder.name
        built = conn.execute(_BUILT_WITH).scalar()
        if built is None:  # two first writers may race (PostgreSQL): the first insert wins, then compare
            if self.store.is_sqlite:
                conn.execute(insert(meta).prefix_with("OR IGNORE").values(key="embedder", value=name))
            else:
                from sqlalchemy.dialects.postgresql import insert as pg_insert

                conn.execute(pg_insert(meta).values(key="embedder", value=name).on_conflict_do_nothing())
            built = conn.execute(_BUILT_WITH).scalar()
        if built != name:
            if not replace:
                raise EmbedderMismatch(str(built), name)
            conn.execute(update(meta).where(meta.c.key == "embedder").values(value=name))

    # ------------------------------------------------------------------------------------------ reads
    def document_states(self, source_id: str) -> dict[str, DocState]:
        """doc_id -> what is indexed for it, for one source."""
        d = documents.c
        with self.store.connect() as conn:
            rows = conn.execute(
                select(
                    d.doc_id, d.content_hash, d.acl_hash, d.private_by_default, d.chunk_count, d.synced_at
                ).where(d.source_id == source_id)
            ).all()
        return {
            r.doc_id: DocState(
                r.content_hash, r.acl_hash, bool(r.private_by_default), r.chunk_count, r.synced_at
            )
            for r in rows
        }

    def counts(self) -> dict[str, dict[str, int]]:
        """Per source: documents, chunks and documents indexed private by default."""
        d = documents.c
        with self.store.connect() as conn:
            rows = conn.execute(
                select(
                    d.source_id,
                    func.count(),
                    func.coalesce(func.sum(d.chunk_count), 0),
                    func.coalesce(func.sum(cast(d.private_by_default, Integer)), 0),
                ).group_by(d.source_id)
            ).all()
        return {
            r[0]: {"documents": int(r[1]), "chunks": int(r[2]), "private_by_default": int(r[3])} for r in rows
        }

    def current_acl(self, source_id: str, doc_id: str) -> frozenset[str] | None:
        """The document's ACL tokens as stored now (``None`` if the document is not indexed)."""
        with self.store.connect() as conn:
            pk = conn.execute(
                select(documents.c.id).where(documents.c.source_id == source_id, documents.c.doc_id == doc_id)
            ).scalar()
            if pk is None:
                return None
            return frozenset(conn.execute(select(acl.c.token).where(acl.c.doc_pk == pk)).scalars())

    @property
    def version(self) -> str:
        """Changes whenever indexed content or ACLs change (never repeats across databases)."""
        with self.store.connect() as conn:
            return self.version_on(conn)

    @staticmethod
    def version_on(conn: Connection) -> str:
        """:attr:`version`, read on an open connection."""
        rows = {name: (counter, stamp) for name, counter, stamp in conn.execute(_VERSIONS).tuples()}
        return Index.format_version(rows.get("content"), rows.get("acl"))

    @staticmethod
    def format_version(content: tuple[int, str] | None, acl: tuple[int, str] | None) -> str:
        """The version string from the (counter, stamp) rows of ``retrieval_versions``."""
        if content is None or acl is None:
            return "empty"
        return f"c{content[0]}.a{acl[0]}-{content[1][:8]}{acl[1][:8]}"

    # ------------------------------------------------------------------------------------------ writes
    @staticmethod
    def _bump(conn: Connection, name: str) -> None:
        conn.execute(
            update(versions)
            .where(versions.c.name == name)
            .values(counter=versions.c.counter + 1, stamp=uuid.uuid4().hex)
        )

    @staticmethod
    def _write_acl(conn: Connection, doc_pk: int, tokens: frozenset[str]) -> None:
        conn.execute(delete(acl).where(acl.c.doc_pk == doc_pk))
        if tokens:
            conn.execute(insert(acl), [{"doc_pk": doc_pk, "token": t} for t in sorted(tokens)])

    def _vectors_for(self, texts: list[str]) -> tuple[list[str], Vectors, list[dict[str, Any]]]:
        """Hashes and vectors of ``texts`` from the cache, embedding what is missing.

        Returns the cache rows to insert for the new vectors; the caller writes them in its transaction.
        """
        model = self.embedder.name
        hashes = [_text_hash(t) for t in texts]
        found: dict[str, Vectors] = {}
        wanted = sorted(set(hashes))
        with self.store.connect() as conn:
            for i in range(0, len(wanted), 500):
                part = wanted[i : i + 500]
                for r in conn.execute(
                    select(embeddings.c.text_hash, embeddings.c.vector).where(
                        embeddings.c.model == model, embeddings.c.text_hash.in_(part)
                    )
                ):
                    found[r.text_hash] = np.frombuffer(r.vector, dtype="<f4")
        missing = [h for h in wanted if h not in found]
        new_rows: list[dict[str, Any]] = []
        if missing:
            first = dict(zip(hashes, texts, strict=True))
            vecs = self.embedder.embed([first[h] for h in missing])
            for h, v in zip(missing, vecs, strict=True):
                found[h] = v
                new_rows.append(
                    {
                        "model": model,
                        "text_hash": h,
                        "dim": int(v.shape[0]),
                        "vector": np.asarray(v, dtype="<f4").tobytes(),
                    }
                )
        out = np.zeros((len(texts), self.embedder.dim), dtype=np.float32)
        for i, h in enumerate(hashes):
            out[i] = found[h]
        return hashes, out, new_rows

    def _cache_vectors(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        stmt = insert(embeddings)
        if self.store.is_sqlite:
            stmt = stmt.prefix_with("OR IGNORE")
        else:  # pragma: no cover - PostgreSQL
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            stmt = pg_insert(embeddings).on_conflict_do_nothing()
        conn.execute(stmt, rows)

    def prepare(self, docs: list[Document], chunking: Chunking) -> list[Prepared]:
        """Chunk ``docs`` and get every chunk's vector (one cache lookup, one embedding call for what is
        missing, in large length-sorted batches), before their writes; the new vectors are cached now
        (idempotent). Pass each result to :meth:`upsert_document` / :meth:`upsert_documents` so a document
        is chunked, hashed and looked up once. Raises on the first document that cannot be chunked or an
        embedder failure: the caller then writes the documents one by one, and the bad one fails alone."""
        key = _chunking_key(chunking)
        per_doc = [chunk_document(doc, chunking) for doc in docs]
        texts = [c.embed_text for pieces in per_doc for c in pieces]
        hashes, vecs, rows = self._vectors_for(texts)
        if rows:
            with self.store.begin() as conn:
                self._cache_vectors(conn, rows)
        out: list[Prepared] = []
        start = 0
        for doc, pieces in zip(docs, per_doc, strict=True):
            end = start + len(pieces)
            out.append(
                Prepared(doc.content_hash, key, pieces, texts[start:end], hashes[start:end], vecs[start:end])
            )
            start = end
        return out

    def prefetch_embeddings(self, docs: list[Document], chunking: Chunking) -> int:
        """Embed and cache the chunks of many documents at once (large, length-sorted batches).

        Optional: call it on a batch of new or changed documents before their :meth:`upsert_document` calls,
        which then find every vector in the cache. Returns the number of newly embedded texts.
        """
        texts = [c.embed_text for doc in docs for c in chunk_document(doc, chunking)]
        if not texts:
            return 0
        _, _, rows = self._vectors_for(texts)
        with self.store.begin() as conn:
            self._cache_vectors(conn, rows)
        return len(rows)

    def upsert_document(
        self,
        doc: Document,
        acl_tokens: frozenset[str],
        chunking: Chunking,
        *,
        private_by_default: bool = False,
        seen_at: datetime | None = None,
        force: bool = False,
        prepared: Prepared | None = None,
    ) -> UpsertResult:
        """Index ``doc`` with its effective ``acl_tokens``; see the module docstring for ordering.

        ``force`` re-chunks and re-embeds (through the cache) even when nothing changed: used after a
        change of embedder. ``prepared``: the document's :meth:`prepare` result (ignored unless it was made
        from this content with these chunking settings). Raises :class:`EmbedderMismatch` when the index
        was built with another embedder."""
        write = DocumentWrite(doc, frozenset(acl_tokens), private_by_default, seen_at or utcnow(), prepared)
        return self.upsert_documents([write], chunking, force=force)[0]

    def upsert_documents(
        self, writes: list[DocumentWrite], chunking: Chunking, *, force: bool = False
    ) -> list[UpsertResult]:
        """:meth:`upsert_document` for several documents, written in **one** transaction.

        Each document is still all-or-nothing (the batch is: an interruption leaves every document wholly
        old or wholly new), and the ordering rules (``seen_at``) apply per document exactly as for single
        writes. Chunking and embedding of documents without a valid ``prepared`` happen before the
        transaction; an exception there raises before anything is written (write the documents one by one
        to find the bad one)."""
        if not writes:
            return []
        if len({(w.doc.source_id, w.doc.doc_id) for w in writes}) != len(writes):
            raise UsageError("upsert_documents: a document appears twice in one batch")
        plan = self._plan_batch(writes, chunking, force)
        results = plan.results
        if not plan.content and not plan.acl_only:
            return [r or "unchanged" for r in results]
        now = utcnow()
        bumped: set[str] = set()
        with self.store.begin(immediate=True) as conn:
            if plan.content:
                self._record_embedder(conn)
                self._cache_vectors(conn, plan.new_vectors)
            current = {(r.source_id, r.doc_id): r for r in self._rows(conn, [w.doc for w in writes])}
            for (
                i
            ) in plan.acl_only:  # same content: the ACL only, unless a newer one is stored (or it is gone)
                w = writes[i]
                results[i] = self._write_acl_only(conn, w, current.get((w.doc.source_id, w.doc.doc_id)), now)
                if results[i] == "acl_changed":
                    bumped.add("acl")
            chunk_rows: list[dict[str, Any]] = []
            for i, p in plan.content:
                w = writes[i]
                results[i] = self._write_content(
                    conn, w, p, current.get((w.doc.source_id, w.doc.doc_id)), force, now, bumped, chunk_rows
                )
            if chunk_rows:
                conn.execute(insert(chunks), chunk_rows)
            for name in sorted(bumped):
                self._bump(conn, name)
        return [r or "unchanged" for r in results]

    def _plan_batch(self, writes: list[DocumentWrite], chunking: Chunking, force: bool) -> _BatchPlan:
        """What each write needs (nothing, its ACL only, or its content), read before the transaction; the
        content's chunks and vectors are computed here (embedding happens outside the transaction)."""
        key = _chunking_key(chunking)
        rows: dict[tuple[str, str], Any] = {}
        with self.store.connect() as conn:
            for row in self._rows(conn, [w.doc for w in writes]):
                rows[(row.source_id, row.doc_id)] = row
        plan = _BatchPlan(results=[None] * len(writes))
        for i, w in enumerate(writes):
            row = rows.get((w.doc.source_id, w.doc.doc_id))
            if (
                not force
                and row is not None
                and row.content_hash == w.doc.content_hash
                and row.chunking == key
            ):
                if (
                    row.acl_hash == _acl_hash(w.acl_tokens)
                    and bool(row.private_by_default) == w.private_by_default
                ):
                    plan.results[i] = "unchanged"
                else:
                    plan.acl_only.append(i)
                continue
            p = w.prepared
            if p is None or p.content_hash != w.doc.content_hash or p.chunking != key:
                pieces = chunk_document(w.doc, chunking)
                texts = [c.embed_text for c in pieces]
                hashes, vecs, rows_new = self._vectors_for(texts)
                plan.new_vectors += rows_new
                p = Prepared(w.doc.content_hash, key, pieces, texts, hashes, vecs)
            plan.content.append((i, p))
        return plan

    def _write_acl_only(self, conn: Connection, w: DocumentWrite, cur: Any, now: datetime) -> UpsertResult:
        """Write a document's new ACL (its content is unchanged), unless a newer one is stored or it is gone."""
        if cur is None or cur.acl_seen_at > w.seen_at:
            return "unchanged"
        self._write_acl(conn, cur.id, w.acl_tokens)
        conn.execute(
            update(documents)
            .where(documents.c.id == cur.id)
            .values(
                acl_hash=_acl_hash(w.acl_tokens),
                private_by_default=w.private_by_default,
                acl_seen_at=w.seen_at,
                synced_at=now,
            )
        )
        return "acl_changed"

    def _rows(self, conn: Connection, docs: list[Document]) -> list[Any]:
        """The ``documents`` rows of ``docs`` (those indexed)."""
        d = documents.c
        by_source: dict[str, list[str]] = {}
        for doc in docs:
            by_source.setdefault(doc.source_id, []).append(doc.doc_id)
        out: list[Any] = []
        for source_id, ids in by_source.items():
            for start in range(0, len(ids), 500):
                out += conn.execute(
                    select(documents).where(d.source_id == source_id, d.doc_id.in_(ids[start : start + 500]))
                ).all()
        return out

    def _write_content(
        self,
        conn: Connection,
        w: DocumentWrite,
        p: Prepared,
        cur: Any,
        force: bool,
        now: datetime,
        bumped: set[str],
        chunk_rows: list[dict[str, Any]],
    ) -> UpsertResult:
        """Write one document's new content (inside the caller's transaction); chunk rows are appended to
        ``chunk_rows`` for one insert per transaction (SQLite) — on PostgreSQL they are written here,
        with their vector and postings rows."""
        d = documents.c
        doc, seen, tokens = w.doc, w.seen_at, w.acl_tokens
        new_acl_hash = _acl_hash(tokens)
        if cur is not None and cur.content_seen_at > seen and not force:
            # newer content was indexed while we were embedding: keep it; the ACL only if ours is newer
            if cur.acl_seen_at <= seen and cur.acl_hash != new_acl_hash:
                self._write_acl(conn, cur.id, tokens)
                conn.execute(
                    update(documents)
                    .where(d.id == cur.id)
                    .values(acl_hash=new_acl_hash, private_by_default=w.private_by_default, acl_seen_at=seen)
                )
                bumped.add("acl")
                return "acl_changed"
            return "unchanged"
        values = {
            "title": doc.title,
            "url": doc.url,
            "format": doc.format,
            "chunking": p.chunking,
            "content_hash": p.content_hash,
            "chunk_count": len(p.chunks),
            "content_seen_at": seen,
            "synced_at": now,
        }
        keep_newer_acl = cur is not None and cur.acl_seen_at > seen
        if not keep_newer_acl:
            values.update(acl_hash=new_acl_hash, private_by_default=w.private_by_default, acl_seen_at=seen)
        if cur is None:
            inserted = conn.execute(
                insert(documents).values(source_id=doc.source_id, doc_id=doc.doc_id, **values)
            ).inserted_primary_key
            assert inserted is not None
            pk = int(inserted[0])
        else:
            pk = int(cur.id)
            conn.execute(update(documents).where(d.id == pk).values(**values))
            conn.execute(delete(chunks).where(chunks.c.doc_pk == pk))
        if not keep_newer_acl:
            self._write_acl(conn, pk, tokens)
            bumped.add("acl")
        bumped.add("content")
        if p.chunks:
            self._write_chunks(conn, pk, p, chunk_rows)
        return "added" if cur is None else "updated"

    def _write_chunks(self, conn: Connection, pk: int, p: Prepared, chunk_rows: list[dict[str, Any]]) -> None:
        """A document's chunk rows: appended to ``chunk_rows`` on SQLite (one insert per transaction); on
        PostgreSQL written now, with their vector and postings rows."""
        terms = [analyse(t) for t in p.texts]
        rows = [
            {
                "doc_pk": pk,
                "position": c.position,
                "heading": c.heading,
                "page": c.page,
                "text": c.text,
                "tokens": c.tokens,
                "text_hash": h,
                "terms": " ".join(ts),
            }
            for c, h, ts in zip(p.chunks, p.hashes, terms, strict=True)
        ]
        if self.store.is_sqlite:
            chunk_rows += rows
            return
        from charter.retrieval import _pg  # PostgreSQL: the chunks' vector and postings rows

        conn.execute(insert(chunks), rows)
        positions = [c.position for c in p.chunks]
        _pg.write_chunks(conn, pk, self.embedder.name, positions, p.vectors, terms)

    def update_acl(
        self,
        source_id: str,
        doc_id: str,
        acl_tokens: frozenset[str],
        *,
        seen_at: datetime | None = None,
        private_by_default: bool | None = None,
    ) -> bool:
        """Replace a document's ACL (no re-embedding). False if the document is not indexed."""
        seen = seen_at or utcnow()
        tokens = frozenset(acl_tokens)
        d = documents.c
        with self.store.begin(immediate=True) as conn:
            cur = conn.execute(select(documents).where(d.source_id == source_id, d.doc_id == doc_id)).first()
            if cur is None:
                return False
            if cur.acl_seen_at > seen:
                return True  # a newer ACL is already stored
            self._write_acl(conn, cur.id, tokens)
            values: dict[str, Any] = {"acl_hash": _acl_hash(tokens), "acl_seen_at": seen}
            if private_by_default is not None:
                values["private_by_default"] = private_by_default
            conn.execute(update(documents).where(d.id == cur.id).values(**values))
            self._bump(conn, "acl")
        return True

    def move_document(self, source_id: str, old_id: str, new_id: str) -> bool:
        """Rename a document (its chunks, vectors and ACL stay). False if ``old_id`` is not indexed or
        ``new_id`` already is."""
        d = documents.c
        with self.store.begin(immediate=True) as conn:
            pk = conn.execute(select(d.id).where(d.source_id == source_id, d.doc_id == old_id)).scalar()
            taken = conn.execute(select(d.id).where(d.source_id == source_id, d.doc_id == new_id)).scalar()
            if pk is None or taken is not None:
                return False
            conn.execute(update(documents).where(d.id == pk).values(doc_id=new_id))
            self._bump(conn, "content")
        return True

    def delete_document(self, source_id: str, doc_id: str) -> bool:
        """Remove a document, its chunks and its ACL. False if it was not indexed."""
        d = documents.c
        with self.store.begin(immediate=True) as conn:
            pk = conn.execute(select(d.id).where(d.source_id == source_id, d.doc_id == doc_id)).scalar()
            if pk is None:
                return False
            conn.execute(delete(chunks).where(chunks.c.doc_pk == pk))
            conn.execute(delete(acl).where(acl.c.doc_pk == pk))
            conn.execute(delete(documents).where(d.id == pk))
            self._bump(conn, "content")
            self._bump(conn, "acl")
        return True

    # ------------------------------------------------------------------------------------------ snapshot
    def _counters(self, conn: Connection) -> tuple[int, int]:
        rows = dict(conn.execute(select(versions.c.name, versions.c.counter)).tuples().all())
        return int(rows.get("content", 0)), int(rows.get("acl", 0))

    def _load_acl(self, conn: Connection, snap: Snapshot) -> None:
        token_docs: dict[str, Any] = {}
        n = len(snap.docs)
        for pk, token in conn.execute(select(acl.c.doc_pk, acl.c.token)).tuples():
            i = snap.doc_index.get(pk)
            if i is None:
                continue
            m = token_docs.get(token)
            if m is None:
                m = token_docs[token] = np.zeros(n, dtype=np.bool_)
            m[i] = True
        snap.token_docs = token_docs

    def _load(self, conn: Connection, content_v: int, acl_v: int) -> Snapshot:
        d, c = documents.c, chunks.c
        docs: list[DocMeta] = []
        doc_index: dict[int, int] = {}
        for r in conn.execute(
            select(d.id, d.source_id, d.doc_id, d.title, d.url).order_by(d.source_id, d.doc_id)
        ):
            doc_index[r.id] = len(docs)
            docs.append(DocMeta(r.id, r.source_id, r.doc_id, r.title, r.url))
        rows = conn.execute(
            select(c.id, c.doc_pk, c.text_hash, c.terms, embeddings.c.vector)
            .select_from(
                chunks.join(documents, documents.c.id == c.doc_pk).outerjoin(
                    embeddings,
                    (embeddings.c.text_hash == c.text_hash) & (embeddings.c.model == self.embedder.name),
                )
            )
            .order_by(d.source_id, d.doc_id, c.position)
        ).all()
        dim = self.embedder.dim
        pks = np.fromiter((r.id for r in rows), dtype=np.int64, count=len(rows))
        chunk_doc = np.fromiter((doc_index[r.doc_pk] for r in rows), dtype=np.int32, count=len(rows))
        vectors = np.zeros((len(rows), dim), dtype=np.float32)
        missing: list[int] = []
        for i, r in enumerate(rows):
            if r.vector is None:
                missing.append(i)
            else:
                vectors[i] = np.frombuffer(r.vector, dtype="<f4")
        if missing:  # another embedder indexed these chunks: embed them now (and cache)
            texts = conn.execute(
                select(c.id, c.text, c.heading, d.title)
                .select_from(chunks.join(documents, documents.c.id == c.doc_pk))
                .where(c.id.in_([int(pks[i]) for i in missing]))
            ).all()
            by_pk = {t.id: Chunk("", "", t.title, t.heading, 0, t.text, 0).embed_text for t in texts}
            _, vecs, new_vectors = self._vectors_for([by_pk[int(pks[i])] for i in missing])
            vectors[missing] = vecs
            with self.store.begin() as wconn:
                self._cache_vectors(wconn, new_vectors)
        postings = Postings.build([r.terms.split() for r in rows])
        snap = Snapshot(content_v, acl_v, pks, chunk_doc, vectors, postings, docs, doc_index)
        self._load_acl(conn, snap)
        return snap

    def snapshot(self, versions: tuple[int, int] | None = None) -> Snapshot:
        """The in-memory snapshot, reloaded if the store changed since (one cheap query per call).

        ``versions`` are the store's (content, acl) counters when the caller has just read them (the ask
        pipeline reads them with the request state): if the snapshot is at exactly those, no query is made.
        """
        if versions is not None:
            with self._lock:
                snap = self._snapshot
                if snap is not None and (snap.content_version, snap.acl_version) == versions:
                    return snap
        with self._lock, self.store.connect() as conn:
            content_v, acl_v = self._counters(conn)
            snap = self._snapshot
            if snap is None or snap.content_version != content_v:
                built = conn.execute(_BUILT_WITH).scalar()
                if built is not None and built != self.embedder.name:
                    raise EmbedderMismatch(str(built), self.embedder.name)
                snap = self._load(conn, content_v, acl_v)
            elif snap.acl_version != acl_v:
                self._load_acl(conn, snap)
                snap.acl_version = acl_v
            self._snapshot = snap
            return snap

    # ------------------------------------------------------------------------------------------ search
    def search(
        self,
        principal_tokens: frozenset[str],
        query: str,
        *,
        k: int = 8,
        fusion: Fusion | None = None,
        sources: set[str] | None = None,
        min_score: float = 0.0,
        explain: bool = False,
        mode: str = "hybrid",
        versions: tuple[int, int] | None = None,
    ) -> list[Hit]:
        """The top ``k`` chunks that ``principal_tokens`` may read, best first.

        Only documents whose current ACL shares a token with ``principal_tokens`` (and, if given, that belong
        to ``sources``) are scored; every returned chunk is re-checked against its document's ACL in the
        store. ``mode`` selects ``hybrid`` (default), ``bm25`` or ``dense`` ranking. Hits scoring below
        ``min_score`` are dropped; in ``dense`` mode the score is the raw cosine, so the default floor (0) drops
        chunks that point away from the query (pass ``-1.0`` for the whole ranking). ``explain`` is accepted
        for symmetry with the CLI: every hit always carries its BM25 and dense contributions. ``versions``:
        see :meth:`snapshot` (first attempt only; a snapshot found stale later is reloaded as usual).
        """
        if not isinstance(query, str) or not query.strip():
            raise UsageError("the query is empty")
        if len(query) > MAX_QUERY_CHARS:
            raise UsageError(f"the query is longer than {MAX_QUERY_CHARS} characters")
        if k < 1:
            raise UsageError("k must be at least 1")
        if mode not in ("hybrid", "bm25", "dense"):
            raise UsageError(f"unknown search mode {mode!r}")
        tokens = frozenset(principal_tokens)
        fusion = fusion or self.default_fusion
        if not self._embedder_checked:
            self.check_embedder()
        qvec = self._query_vector(query) if mode != "bm25" else None
        terms = analyse(query)
        identifiers = identifier_terms(
            query
        )  # the adaptive fusion's lexical lead (``_search.adaptive_weights``)
        # --- PostgreSQL: search runs in the database (charter.retrieval._pg) ---
        if not self.store.is_sqlite:
            from charter.retrieval._pg import pg_search

            return pg_search(self, tokens, qvec, terms, k, fusion, sources, min_score, mode, identifiers)
        for attempt in range(3):
            snap = self.snapshot(versions if attempt == 0 else None)
            doc_mask = snap.doc_mask(tokens, sources)
            permitted = np.flatnonzero(doc_mask[snap.chunk_doc]).astype(np.int32)
            scored = score(snap, permitted, qvec, terms, k, fusion, mode, identifiers)
            hits = self._materialise(snap, scored, tokens, min_score)
            if hits is not None:
                return hits
        raise Conflict("the index kept changing during the search; try again")

    def warm_up(self) -> None:
        """Load the embedder and embed one question the way searches do (the server's start-up calls it, so
        the first request does not pay for loading the model or preparing its question pass)."""
        embed_queries(self.embedder, ["warm-up"], self.question_precision)

    def _query_vector(self, query: str) -> Vectors:
        """The query's embedding; the last 256 distinct queries are kept in memory."""
        key = f"{self.embedder.name}\x00{self.question_precision}\x00{query}"
        with self._lock:
            vec = self._query_vectors.get(key)
            if vec is not None:
                self._query_vectors.move_to_end(key)
                return vec
        vec = np.asarray(embed_queries(self.embedder, [query], self.question_precision)[0], dtype=np.float32)
        with self._lock:
            self._query_vectors[key] = vec
            while len(self._query_vectors) > 256:
                self._query_vectors.popitem(last=False)
        return vec

    def _materialise(
        self, snap: Snapshot, scored: Scored, tokens: frozenset[str], min_score: float
    ) -> list[Hit] | None:
        """Hits for the scored rows after re-checking each document's ACL in the store.

        Returns ``None`` if a document's ACL no longer admits the principal (the snapshot was stale): the
        caller reloads and ranks again, so the result is still the full permitted top k.
        """
        pks = [int(snap.chunk_pks[r]) for r in scored.rows]
        return hits_for(self.store, pks, scored, tokens, min_score)


class RankedScores(Protocol):
    """Score arrays aligned with a list of chunk primary keys (best first)."""

    fused: Any
    bm25: Any
    bm25_norm: Any
    dense: Any
    dense_norm: Any


# The two reads of :func:`hits_for`, built once (every search runs them: building and keying the statements
# again cost ~0.2 ms a search); the chunk ids and document ids are expanding parameters.
_HIT_ROWS = (
    select(
        chunks.c.id,
        chunks.c.doc_pk,
        chunks.c.position,
        chunks.c.heading,
        chunks.c.page,
        chunks.c.text,
        documents.c.source_id,
        documents.c.doc_id,
        documents.c.title,
        documents.c.url,
    )
    .select_from(chunks.join(documents, documents.c.id == chunks.c.doc_pk))
    .where(chunks.c.id.in_(bindparam("pks", expanding=True)))
)
_HIT_ACLS = select(acl.c.doc_pk, acl.c.token).where(acl.c.doc_pk.in_(bindparam("doc_pks", expanding=True)))


def hits_for(
    store: Store, pks: list[int], scores: RankedScores, tokens: frozenset[str], min_score: float
) -> list[Hit] | None:
    """The hits for ranked chunk ``pks``, each re-checked against its document's *current* ACL in the store
    in the same read that fetches its text. ``None`` when a chunk is gone or its document no longer admits
    ``tokens`` (the ranking was made on stale data: the caller ranks again). Shared by both backends."""
    if not pks:
        return []
    with store.connect() as conn:
        rows = {r.id: r for r in conn.execute(_HIT_ROWS, {"pks": pks})}
        doc_pks = sorted({r.doc_pk for r in rows.values()})
        acls: dict[int, set[str]] = {}
        for pk, token in conn.execute(_HIT_ACLS, {"doc_pks": doc_pks}).tuples():
            acls.setdefault(pk, set()).add(token)
    hits: list[Hit] = []
    for i, pk in enumerate(pks):
        row = rows.get(pk)
        if row is None:
            return None
        reason = tuple(sorted(acls.get(row.doc_pk, set()) & tokens))
        if not reason:
            return None
        fused = float(scores.fused[i])
        if fused < min_score:
            continue
        hits.append(
            Hit(
                chunk_id=chunk_key(row.source_id, row.doc_id, row.position),
                source_id=row.source_id,
                doc_id=row.doc_id,
                title=row.title,
                heading=row.heading,
                page=row.page,
                position=row.position,
                text=row.text,
                score=fused,
                bm25=float(scores.bm25[i]),
                bm25_norm=float(scores.bm25_norm[i]),
                dense=float(scores.dense[i]),
                dense_norm=float(scores.dense_norm[i]),
                rank=len(hits) + 1,
                acl_reason=reason,
                url=row.url,
            )
        )
    return hits
