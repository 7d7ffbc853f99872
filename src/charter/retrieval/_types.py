"""Value types of the retrieval package: chunks, document states and search hits."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Chunk:
    """One piece of a document, as indexed. ``position`` is the 0-based chunk number within the document."""

    source_id: str
    doc_id: str
    title: str
    heading: str  # heading path, e.g. "Exports > Scheduled exports"; "" before the first heading
    position: int
    text: str
    tokens: int  # wordpiece tokens of ``text`` (see charter.retrieval._chunking)
    page: int | None = None  # 1-based page for PDFs

    @property
    def embed_text(self) -> str:
        """What the embedder and BM25 see: title and heading path give a chunk its context."""
        parts: list[str] = []
        if self.title:
            parts.append(self.title)
        heading = self.heading
        if heading and self.title and heading.startswith(self.title):
            heading = heading[len(self.title) :].lstrip(" >")
        if heading:
            parts.append(heading)
        parts.append(self.text)
        return "\n".join(parts)


@dataclass(frozen=True)
class DocState:
    """What the index holds for one document; the sync compares it with the source to stay incremental."""

    content_hash: str
    acl_hash: str
    private_by_default: bool
    chunk_count: int
    synced_at: datetime


@dataclass(frozen=True)
class Hit:
    """One ranked chunk the principal may read.

    ``score`` is the fused score used for ranking. ``bm25`` and ``dense`` are the raw scores of each
    retriever; ``bm25_norm`` and ``dense_norm`` their normalised values that entered the fusion.
    ``acl_reason`` lists the principal's tokens that the document's ACL grants (why this hit is visible).
    """

    chunk_id: str  # "<source_id>/<doc_id>#<position>"
    source_id: str
    doc_id: str
    title: str
    heading: str
    page: int | None
    position: int
    text: str
    score: float
    bm25: float
    bm25_norm: float
    dense: float
    dense_norm: float
    rank: int  # 1-based
    acl_reason: tuple[str, ...]
    url: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "rank": self.rank,
            "chunk_id": self.chunk_id,
            "source": self.source_id,
            "doc_id": self.doc_id,
            "title": self.title,
            "heading": self.heading,
            "page": self.page,
            "position": self.position,
            "url": self.url,
            "score": self.score,
            "bm25": self.bm25,
            "bm25_norm": self.bm25_norm,
            "dense": self.dense,
            "dense_norm": self.dense_norm,
            "acl_reason": list(self.acl_reason),
            "text": self.text,
        }


def chunk_key(source_id: str, doc_id: str, position: int) -> str:
    return f"{source_id}/{doc_id}#{position}"
