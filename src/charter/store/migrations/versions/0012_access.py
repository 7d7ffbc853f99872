"""Review items bound to their context: the user a draft escalated to when no reviewer may read its sources
(``assigned_user``, with the reason in ``routing``), whom the conversation is about
(a column renamed ``subject_id`` by 0019: a sending tool may send only to them), and a reviewer's pending edit (``edited_by`` and
the checks it passed, ``edit_checks``) that another reviewer must approve before it can be sent.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("review_items") as batch:
        batch.add_column(sa.Column("assigned_user", sa.String(200), nullable=True))
        batch.add_column(sa.Column("routing", sa.Text, nullable=True))
        batch.add_column(sa.Column("customer_id", sa.String(100), nullable=True))
        batch.add_column(sa.Column("edited_by", sa.String(200), nullable=True))
        batch.add_column(sa.Column("edit_checks", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("review_items") as batch:
        for name in ("edit_checks", "edited_by", "customer_id", "routing", "assigned_user"):
            batch.drop_column(name)
