"""Instruction screening at sync: ``source_screening`` lists every document a sync flagged.

One row per flagged document of a source: the content hash of the text that was screened, the flagged
sentences and their reasons, and the state — ``excluded`` (indexed without those sentences, the source's
``screening: exclude``), ``quarantined`` (kept out of the index, ``screening: quarantine``) or
``approved`` (the source owner approved exactly that content; a changed document is screened again).

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from charter.store._types import UTCDateTime

    op.create_table(
        "source_screening",
        sa.Column("source_id", sa.String(200), primary_key=True),
        sa.Column("doc_id", sa.String(1000), primary_key=True),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("reasons", sa.JSON, nullable=False),
        sa.Column("sentences", sa.JSON, nullable=False),
        sa.Column("flagged_at", UTCDateTime, nullable=False),
        sa.Column("approved_by", sa.String(200), nullable=True),
        sa.Column("approved_at", UTCDateTime, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("source_screening")
