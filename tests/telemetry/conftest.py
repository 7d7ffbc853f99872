"""Fixtures for the audit log: a real SQLite file database, a key folder, and raw-SQL tampering helpers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _audit_helpers import RawDB
from tests._pg import migrated_sqlite

from charter.store import Store, open_store
from charter.telemetry.audit import AuditLog


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "audit.db"


@pytest.fixture
def store(db_path: Path, sqlite_template: Path) -> Iterator[Store]:
    """A fresh SQLite database at ``db_path``, migrated (a copy of the migrated template)."""
    st = open_store(migrated_sqlite(sqlite_template, db_path))
    yield st
    st.dispose()


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture
def log(store: Store, key_dir: Path) -> AuditLog:
    """An audit log that checkpoints every 10 entries."""
    return AuditLog(store, key_dir=key_dir, checkpoint_every=10)


@pytest.fixture
def raw(db_path: Path) -> RawDB:
    return RawDB(db_path)
