"""PostgreSQL search tables: chunk vectors (pgvector, HNSW) and BM25 postings. SQLite is unaffected.

On PostgreSQL, search runs in the database (``charter.retrieval._pg``) instead of an in-memory snapshot:

* ``retrieval_chunk_vectors`` — one row per chunk: its vector (``vector`` without a fixed dimension, so any
  embedder fits), its length in BM25 terms, and ``doc_pk`` copied from the chunk so the permission filter
  needs no join. An HNSW
  index (inner product; vectors are L2-normalised, so this is cosine) covers the 384-dimension vectors of
  all-MiniLM-L6-v2 through the expression ``embedding::vector(384)``; other dimensions are always scanned
  exactly.
* ``retrieval_postings`` — one row per (term, chunk) with the term frequency and the chunk's length in
  terms, from the analysed terms already stored in ``retrieval_chunks.terms``; BM25 statistics are computed
  per query over the permitted chunks only. Backfilled here from existing chunks.

Vectors of chunks indexed before this migration are filled in on the first search (from the embedding
cache, embedding what is missing). Needs the ``vector`` extension (pgvector >= 0.5).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    try:
        op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except sa.exc.DBAPIError as exc:  # pragma: no cover - depends on the server
        raise RuntimeError(
            "Charter on PostgreSQL needs the pgvector extension (CREATE EXTENSION vector): install pgvector "
            "on the server, or have a superuser run CREATE EXTENSION vector in this database"
        ) from exc
    op.execute(
        """
        CREATE TABLE retrieval_chunk_vectors (
            chunk_id integer PRIMARY KEY REFERENCES retrieval_chunks (id) ON DELETE CASCADE,
            doc_pk integer NOT NULL,
            length integer NOT NULL,
            model varchar(200) NOT NULL,
            dim integer NOT NULL,
            embedding vector NOT NULL
        )
        """
    )
    op.execute(
        "CREATE INDEX ix_retrieval_chunk_vectors_doc ON retrieval_chunk_vectors (doc_pk) INCLUDE (length)"
    )
    op.execute(
        "CREATE INDEX ix_retrieval_chunk_vectors_hnsw_384 ON retrieval_chunk_vectors "
        "USING hnsw ((embedding::vector(384)) vector_ip_ops) WITH (m = 16, ef_construction = 64) "
        "WHERE dim = 384"
    )
    op.execute(
        """
        CREATE TABLE retrieval_postings (
            term text NOT NULL,
            chunk_id integer NOT NULL REFERENCES retrieval_chunks (id) ON DELETE CASCADE,
            doc_pk integer NOT NULL,
            tf integer NOT NULL,
            length integer NOT NULL,
            PRIMARY KEY (term, chunk_id) INCLUDE (doc_pk, tf, length)
        )
        """
    )
    op.execute("CREATE INDEX ix_retrieval_postings_chunk ON retrieval_postings (chunk_id)")
    op.execute(
        """
        INSERT INTO retrieval_postings (term, chunk_id, doc_pk, tf, length)
        SELECT t.term, c.id, c.doc_pk, count(*), max(cardinality(string_to_array(c.terms, ' ')))
        FROM retrieval_chunks c, unnest(string_to_array(c.terms, ' ')) AS t(term)
        WHERE t.term <> ''
        GROUP BY t.term, c.id, c.doc_pk
        """
    )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    op.execute("DROP TABLE IF EXISTS retrieval_postings")
    op.execute("DROP TABLE IF EXISTS retrieval_chunk_vectors")
