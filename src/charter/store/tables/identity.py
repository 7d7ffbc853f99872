"""Tables for API tokens. Principals themselves come from the charter's users file."""

from sqlalchemy import Column, Index, String, Table

from charter.store._types import UTCDateTime, metadata

tokens = Table(
    "tokens",
    metadata,
    Column("id", String(32), primary_key=True),  # public part of the token, used for lookup
    Column("principal_id", String(200), nullable=False),
    Column("secret_hash", String(300), nullable=False),  # scrypt of the secret part; never the secret
    Column("label", String(200), nullable=True),
    Column("created_by", String(200), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("last_used_at", UTCDateTime, nullable=True),
    Index("ix_tokens_principal", "principal_id"),
)

console_sessions = Table(
    "console_sessions",
    metadata,
    Column("id", String(32), primary_key=True),  # public part of the session cookie
    Column("secret_hash", String(64), nullable=False),  # SHA-256 (hex) of the 32-byte random secret
    Column("principal_id", String(200), nullable=False),
    Column(
        "token_id", String(32), nullable=True
    ),  # the API token used to log in (revoking it ends the session)
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Index("ix_console_sessions_principal", "principal_id"),
)
