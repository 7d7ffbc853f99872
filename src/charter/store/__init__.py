"""Storage: SQLAlchemy Core tables, Alembic migrations, SQLite (default) and PostgreSQL engines.

Every table of every package is defined in :mod:`charter.store.tables`, on the shared :data:`metadata`;
the schema is created and upgraded only by the append-only migrations in
``charter/store/migrations/versions``.
"""

from charter.errors import StoreUnavailable
from charter.store._engine import (
    MIGRATIONS_DIR,
    Store,
    open_store,
    other_threads_fork_safe,
    resolve_database_url,
    run_driver,
    sqlite_driver,
)
from charter.store._perms import private_dir, storage_wide_modes, write_private
from charter.store._sealing import Sealer, create_secret_file, sealer_for
from charter.store._types import UTCDateTime, metadata, utcnow
from charter.store.tables import rate_limit_windows, state

__all__ = [
    "MIGRATIONS_DIR",
    "Sealer",
    "Store",
    "StoreUnavailable",
    "UTCDateTime",
    "create_secret_file",
    "metadata",
    "open_store",
    "other_threads_fork_safe",
    "private_dir",
    "rate_limit_windows",
    "resolve_database_url",
    "run_driver",
    "sealer_for",
    "sqlite_driver",
    "state",
    "storage_wide_modes",
    "utcnow",
    "write_private",
]
