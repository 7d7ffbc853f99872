"""Tables of the index: documents, their ACL tokens, chunks, the embedding cache and change counters.

ACL tokens are stored per *document* (``retrieval_acl``); a chunk carries its document's ACL through
``doc_pk``, so an ACL-only change rewrites a few rows and never touches chunks or vectors.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from charter.store._types import UTCDateTime, metadata

documents = Table(
    "retrieval_documents",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("source_id", String(200), nullable=False),
    Column("doc_id", String(1000), nullable=False),
    Column("title", Text, nullable=False),
    Column("url", Text, nullable=True),
    Column("format", String(50), nullable=False),
    Column("chunking", String(50), nullable=False),  # "max_tokens/overlap": re-chunk when it changes
    Column("content_hash", String(64), nullable=False),
    Column("acl_hash", String(64), nullable=False),
    Column("private_by_default", Boolean, nullable=False),
    Column("chunk_count", Integer, nullable=False),
    Column("content_seen_at", UTCDateTime, nullable=False),  # when the sync read the indexed content
    Column("acl_seen_at", UTCDateTime, nullable=False),  # when the sync read the indexed ACL
    Column("synced_at", UTCDateTime, nullable=False),
    UniqueConstraint("source_id", "doc_id", name="uq_retrieval_documents_source_doc"),
)

acl = Table(
    "retrieval_acl",
    metadata,
    Column("doc_pk", Integer, ForeignKey("retrieval_documents.id", ondelete="CASCADE"), primary_key=True),
    Column("token", String(300), primary_key=True),
    Index("ix_retrieval_acl_token", "token"),
)

chunks = Table(
    "retrieval_chunks",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("doc_pk", Integer, ForeignKey("retrieval_documents.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("heading", Text, nullable=False),
    Column("page", Integer, nullable=True),
    Column("text", Text, nullable=False),
    Column("tokens", Integer, nullable=False),
    Column("text_hash", String(64), nullable=False),  # sha256 of the embedded text: the embedding-cache key
    Column("terms", Text, nullable=False),  # analysed BM25 terms, space-separated
    UniqueConstraint("doc_pk", "position", name="uq_retrieval_chunks_doc_position"),
)

embeddings = Table(
    "retrieval_embeddings",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("text_hash", String(64), primary_key=True),
    Column("dim", Integer, nullable=False),
    Column("vector", LargeBinary, nullable=False),  # float32, little-endian, L2-normalised
)

versions = Table(
    "retrieval_versions",
    metadata,
    Column("name", String(50), primary_key=True),  # "content" | "acl"
    Column("counter", BigInteger, nullable=False),
    Column("stamp", String(32), nullable=False),  # random per change: versions never repeat across databases
)

meta = Table(
    "retrieval_meta",
    metadata,
    Column("key", String(100), primary_key=True),  # "embedder": the model that built the index
    Column("value", Text, nullable=False),
)
