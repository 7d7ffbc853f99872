"""Storage: SQLAlchemy Core tables, Alembic migrations, SQLite (default) and PostgreSQL engines.

Every package defines its tables in its own ``_tables.py`` on the shared :data:`metadata`; the schema is
created and upgraded only by the append-only migrations in ``charter/store/migrations/versions``.
"""

from charter.errors import StoreUnavailable
from charter.store._engine import Store, open_store, resolve_database_url
from charter.store._sealing import Sealer, sealer_for
from charter.store._types import UTCDateTime, metadata, utcnow

__all__ = [
    "Sealer",
    "Store",
    "StoreUnavailable",
    "UTCDateTime",
    "metadata",
    "open_store",
    "resolve_database_url",
    "sealer_for",
    "utcnow",
]
