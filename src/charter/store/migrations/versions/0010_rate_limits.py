"""Request counters shared by every server worker: one row per (key, one-minute window).

The server's per-principal rate limit (``charter.server._auth.RateLimiter``) counts here when the store is
PostgreSQL, so that ``charter serve --workers N`` (or N replicas) enforce one limit, not N.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_windows",
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("minute", sa.BigInteger, nullable=False),
        sa.Column("hits", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("key", "minute", name="pk_rate_limit_windows"),
    )


def downgrade() -> None:
    op.drop_table("rate_limit_windows")
