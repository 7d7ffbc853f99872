"""The public surface of charter.retrieval is pinned: changing it is a deliberate act."""

from __future__ import annotations

import charter.retrieval


def test_exported_names() -> None:
    assert sorted(charter.retrieval.__all__) == [
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
    for name in charter.retrieval.__all__:
        assert getattr(charter.retrieval, name) is not None


def test_index_methods() -> None:
    for name in (
        "for_runtime",
        "document_states",
        "upsert_document",
        "update_acl",
        "delete_document",
        "counts",
        "search",
        "current_acl",
        "version",
        "prefetch_embeddings",
        "prepare",
        "upsert_documents",
    ):
        assert hasattr(charter.retrieval.Index, name), name
