"""Alembic environment: runs migrations on the connection handed over by ``Store.migrate``."""

from __future__ import annotations

from alembic import context

import charter.store.tables  # noqa: F401 - registers every table on the metadata
from charter.store import metadata

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - Store.migrate always passes one
    raise RuntimeError("run migrations through charter.store.Store.migrate()")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
