"""Retrieval: chunking, embedding, the index, and permission-filtered hybrid search.

Public API (the sources sync and the request pipeline use only these names):

* :class:`Index` — ``Index(store, embedder=None, question_precision="float32")`` or ``Index.for_runtime(runtime)``
  (built once per runtime).

  - ``document_states(source_id) -> dict[doc_id, DocState]`` — what is indexed, for incremental sync.
  - ``upsert_document(doc, acl_tokens, chunking, *, private_by_default=False, seen_at=None)`` ->
    ``"added" | "updated" | "acl_changed" | "unchanged"``; ``seen_at`` is when the data was read (a write
    never replaces content or an ACL that was read later). ``acl_tokens`` are the document's *effective*
    tokens, computed by the sync from the source's permission model. Content unchanged and ACL changed: the
    ACL is updated without re-embedding. Each document is written in one transaction.
  - ``prepare(docs, chunking) -> list[Prepared]`` — chunk a batch of new or changed documents and get
    their vectors at once (one cache lookup, one embedding call); ``upsert_documents([DocumentWrite(doc,
    acl_tokens, private_by_default, seen_at, prepared)], chunking)`` then writes them in one transaction
    (each document still whole after an interruption). ``prefetch_embeddings(docs, chunking) -> int``
    only fills the embedding cache.
  - ``update_acl(source_id, doc_id, acl_tokens, *, seen_at=None) -> bool``.
  - ``delete_document(source_id, doc_id) -> bool``.
  - ``counts() -> {source_id: {"documents", "chunks", "private_by_default"}}``.
  - ``search(principal_tokens, query, *, k, fusion, sources, min_score, explain) -> list[Hit]`` — only chunks
    whose document ACL intersects ``principal_tokens`` are ranked (filter *before* ranking).
    On SQLite it ranks an in-memory snapshot; on PostgreSQL it ranks in the database (pgvector + BM25 in
    SQL, ``_pg.py``, migration 0009) with the same results.
  - ``current_acl(source_id, doc_id) -> frozenset | None`` — re-check a hit before it enters a prompt.
  - ``version`` — changes whenever indexed content or ACLs change.

* :class:`Hit`, :class:`DocState`, :class:`Chunk` — value types.
* :func:`chunk_document` — structure-aware, token-bounded chunking.
* :class:`Embedder` protocol, :func:`embedder` registering decorator, :func:`get_embedder`.
"""

from charter.retrieval._chunking import chunk_document, count_tokens
from charter.retrieval._embedding import (
    Embedder,
    MiniLMEmbedder,
    OpenAIEmbedder,
    embedder,
    get_embedder,
    registered_embedders,
)
from charter.retrieval._index import DocumentWrite, EmbedderMismatch, Index, Prepared, UpsertResult
from charter.retrieval._lexical import analyse
from charter.retrieval._types import Chunk, DocState, Hit

__all__ = [
    "Chunk",
    "DocState",
    "DocumentWrite",
    "Embedder",
    "EmbedderMismatch",
    "Hit",
    "Index",
    "MiniLMEmbedder",
    "OpenAIEmbedder",
    "Prepared",
    "UpsertResult",
    "analyse",
    "chunk_document",
    "count_tokens",
    "embedder",
    "get_embedder",
    "registered_embedders",
]
