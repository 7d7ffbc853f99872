"""Console sessions (short-lived, revocable, separate from API tokens) and per-entry audit seals.

* ``console_sessions``: one row per console login. The cookie carries ``chs_<id>_<secret>``; only a SHA-256
  of the 32-byte random secret is stored. A session expires after hours, not the API token's 90 days, and
  logging out revokes it (see ``charter.identity._sessions``).
* ``audit_log.seal``: an HMAC of each entry's hash under a secret kept beside the signing key (outside the
  database), so that rewriting entries after the last signed checkpoint — and re-computing their hashes —
  is detected (see ``charter.telemetry.audit``). Entries written before this migration have no seal.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

from charter.store._types import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "console_sessions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("principal_id", sa.String(200), nullable=False),
        sa.Column("token_id", sa.String(32), nullable=True),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("expires_at", UTCDateTime, nullable=False),
        sa.Column("revoked_at", UTCDateTime, nullable=True),
        sa.Index("ix_console_sessions_principal", "principal_id"),
    )
    with op.batch_alter_table("audit_log") as batch:
        batch.add_column(sa.Column("seal", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("audit_log") as batch:
        batch.drop_column("seal")
    op.drop_table("console_sessions")
