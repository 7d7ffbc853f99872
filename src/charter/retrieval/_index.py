"""The index: documents, chunks, ACLs and embeddings in the store; permission-filtered hybrid search."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from charter.retrieval._types import DocState, Hit

if TYPE_CHECKING:
    from charter.retrieval._embedding import Embedder
    from charter.sources import Document
    from charter.spec._schema import Chunking, Fusion
    from charter.store import Store

UpsertResult = Literal["added", "updated", "acl_changed", "unchanged"]


class Index:
    """Interface stub; implementation lands shortly."""

    def __init__(self, store: Store, embedder: Embedder | None = None) -> None:
        self.store = store
        self._embedder = embedder

    @classmethod
    def for_runtime(cls, runtime: Any) -> Index:
        raise NotImplementedError

    def document_states(self, source_id: str) -> dict[str, DocState]:
        raise NotImplementedError

    def upsert_document(self, doc: Document, acl_tokens: frozenset[str], chunking: Chunking, *,
                        private_by_default: bool = False) -> UpsertResult:
        raise NotImplementedError

    def update_acl(self, source_id: str, doc_id: str, acl_tokens: frozenset[str]) -> bool:
        raise NotImplementedError

    def delete_document(self, source_id: str, doc_id: str) -> bool:
        raise NotImplementedError

    def counts(self) -> dict[str, dict[str, int]]:
        raise NotImplementedError

    def search(self, principal_tokens: frozenset[str], query: str, *, k: int = 8, fusion: Fusion | None = None,
               sources: set[str] | None = None, min_score: float = 0.0, explain: bool = False) -> list[Hit]:
        raise NotImplementedError

    def current_acl(self, source_id: str, doc_id: str) -> frozenset[str] | None:
        raise NotImplementedError

    @property
    def version(self) -> str:
        raise NotImplementedError
