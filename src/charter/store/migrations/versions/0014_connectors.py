"""Connectors: ACL-sync time per source, connector cursors, document versions, the index's embedder.

* ``source_state.acl_synced_at`` — when the source's ACLs were last read completely (a full sync or
  ``charter sync --acl-only``); ACL freshness is measured from it.
* ``source_state.cursor`` — the connector's incremental state after its last successful sync (Git: the
  commit; SQL: the highest change value; web: validators and links per page).
* ``source_documents.version`` / ``revision`` — the document's version at the source (Git blob hash,
  HTTP ETag) and the revision it was read at (Git commit id, for citations).
* ``retrieval_meta`` — key/value facts about the index; ``embedder`` is the model that built it.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from charter.store._types import UTCDateTime

    with op.batch_alter_table("source_state") as batch:
        batch.add_column(sa.Column("acl_synced_at", UTCDateTime, nullable=True))
        batch.add_column(sa.Column("cursor", sa.JSON, nullable=True))
    with op.batch_alter_table("source_documents") as batch:
        batch.add_column(sa.Column("version", sa.String(200), nullable=True))
        batch.add_column(sa.Column("revision", sa.String(200), nullable=True))
    op.create_table(
        "retrieval_meta",
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("value", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_retrieval_meta"),
    )
    # Existing indexes were built with whatever embedder cached their chunks' vectors: record it when
    # exactly one model's vectors are present, so the first mismatched query is refused, not silently mixed.
    conn = op.get_bind()
    models = [
        r[0]
        for r in conn.execute(
            sa.text(
                "SELECT DISTINCT e.model FROM retrieval_embeddings e "
                "JOIN retrieval_chunks c ON c.text_hash = e.text_hash"
            )
        )
    ]
    if len(models) == 1:
        conn.execute(
            sa.text("INSERT INTO retrieval_meta (key, value) VALUES ('embedder', :m)"), {"m": models[0]}
        )


def downgrade() -> None:
    op.drop_table("retrieval_meta")
    with op.batch_alter_table("source_documents") as batch:
        batch.drop_column("revision")
        batch.drop_column("version")
    with op.batch_alter_table("source_state") as batch:
        batch.drop_column("cursor")
        batch.drop_column("acl_synced_at")
