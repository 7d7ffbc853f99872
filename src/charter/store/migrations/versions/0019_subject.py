"""A draft names whom its conversation is about as ``subject_id`` (the earlier column name, from when
every workflow was a support reply): any workflow's subject — a client, an employee, a case.

A plain ``ALTER TABLE … RENAME COLUMN`` on both backends (SQLite ≥ 3.25 and PostgreSQL): the table is not
rebuilt, so the monitoring rollup's triggers on ``review_items`` (0018) stay in place.

Revision ID: 0019
Revises: 0018_rollup
"""

from alembic import op

revision = "0019"
down_revision = "0018_rollup"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE review_items RENAME COLUMN customer_id TO subject_id")


def downgrade() -> None:
    op.execute("ALTER TABLE review_items RENAME COLUMN subject_id TO customer_id")
