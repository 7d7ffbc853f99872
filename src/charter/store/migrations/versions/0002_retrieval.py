"""Retrieval index: documents, ACL tokens, chunks, embedding cache, change counters.

Revision ID: 0002
Revises: 0001
"""

import uuid

import sqlalchemy as sa
from alembic import op

from charter.store._types import UTCDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retrieval_documents",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("source_id", sa.String(200), nullable=False),
        sa.Column("doc_id", sa.String(1000), nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=True),
        sa.Column("format", sa.String(50), nullable=False),
        sa.Column("chunking", sa.String(50), nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("acl_hash", sa.String(64), nullable=False),
        sa.Column("private_by_default", sa.Boolean, nullable=False),
        sa.Column("chunk_count", sa.Integer, nullable=False),
        sa.Column("content_seen_at", UTCDateTime, nullable=False),
        sa.Column("acl_seen_at", UTCDateTime, nullable=False),
        sa.Column("synced_at", UTCDateTime, nullable=False),
        sa.UniqueConstraint("source_id", "doc_id", name="uq_retrieval_documents_source_doc"),
    )
    op.create_table(
        "retrieval_acl",
        sa.Column(
            "doc_pk",
            sa.Integer,
            sa.ForeignKey("retrieval_documents.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("token", sa.String(300), primary_key=True),
    )
    op.create_index("ix_retrieval_acl_token", "retrieval_acl", ["token"])
    op.create_table(
        "retrieval_chunks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column(
            "doc_pk", sa.Integer, sa.ForeignKey("retrieval_documents.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("heading", sa.Text, nullable=False),
        sa.Column("page", sa.Integer, nullable=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
        sa.Column("text_hash", sa.String(64), nullable=False),
        sa.Column("terms", sa.Text, nullable=False),
        sa.UniqueConstraint("doc_pk", "position", name="uq_retrieval_chunks_doc_position"),
    )
    op.create_table(
        "retrieval_embeddings",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("text_hash", sa.String(64), primary_key=True),
        sa.Column("dim", sa.Integer, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
    )
    versions = op.create_table(
        "retrieval_versions",
        sa.Column("name", sa.String(50), primary_key=True),
        sa.Column("counter", sa.BigInteger, nullable=False),
        sa.Column("stamp", sa.String(32), nullable=False),
    )
    op.bulk_insert(
        versions,
        [
            {"name": "content", "counter": 0, "stamp": uuid.uuid4().hex},
            {"name": "acl", "counter": 0, "stamp": uuid.uuid4().hex},
        ],
    )


def downgrade() -> None:
    op.drop_table("retrieval_versions")
    op.drop_table("retrieval_embeddings")
    op.drop_table("retrieval_chunks")
    op.drop_index("ix_retrieval_acl_token", table_name="retrieval_acl")
    op.drop_table("retrieval_acl")
    op.drop_table("retrieval_documents")
