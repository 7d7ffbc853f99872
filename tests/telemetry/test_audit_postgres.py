"""What only PostgreSQL has: appends serialise on an advisory lock (the rest of the audit suite runs on both
backends through ``db_url``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from charter.store import Store, open_store
from charter.telemetry.audit import PG_LOCK_KEY, AuditLog

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    store = open_store(pg_url)
    yield store
    store.dispose()


def test_appends_wait_for_the_advisory_lock(pg_store: Store, tmp_path: Path) -> None:
    log = AuditLog(pg_store, key_dir=tmp_path / "keys")
    log.append(actor="a", action="b", resource="c", outcome="d")
    done = threading.Event()

    def append() -> None:
        log.append(actor="a", action="b", resource="c", outcome="d")
        done.set()

    with pg_store.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_LOCK_KEY})
        worker = threading.Thread(target=append)
        worker.start()
        assert not done.wait(1.0)  # blocked while another transaction holds the lock
    worker.join(timeout=30)
    assert done.is_set() and log.verify().entries_verified == 2
