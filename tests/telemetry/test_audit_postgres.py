"""The audit log on real PostgreSQL (pgserver): advisory-locked writers, streaming verify, tampering."""

from __future__ import annotations

import itertools
import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from _audit_helpers import fill
from sqlalchemy import create_engine, text
from tests.conftest import require

from charter.store import Store, open_store
from charter.telemetry.audit import PG_LOCK_KEY, AuditEvent, AuditLog

pgserver = require("pgserver", "pgserver is part of the dev extra")
pytestmark = pytest.mark.postgres
_names = itertools.count()


@pytest.fixture(scope="module")
def pg_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = pgserver.get_server(str(tmp_path_factory.mktemp("pg")), cleanup_mode="stop")
    yield server.get_uri().replace("postgresql://", "postgresql+psycopg://")
    server.cleanup()


@pytest.fixture
def pg_url(pg_uri: str) -> str:
    """A fresh database on the shared server."""
    name = f"audit_{next(_names)}"
    admin = create_engine(pg_uri, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return pg_uri.replace("/postgres?", f"/{name}?")


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Store]:
    store = open_store(pg_url)
    yield store
    store.dispose()


def test_append_verify_and_tamper(pg_store: Store, tmp_path: Path) -> None:
    log = AuditLog(pg_store, key_dir=tmp_path / "keys", checkpoint_every=10)
    fill(log, 25)
    result = log.verify()
    assert result.ok and result.entries_verified == 25 and result.checkpoints_verified == 2
    assert log.tail(1)[0].details["note"] == "ünïcödé ✓"
    with pg_store.begin() as conn:
        conn.execute(text("UPDATE audit_log SET outcome = 'escalated' WHERE seq = 4"))
    bad = log.verify()
    assert not bad.ok and bad.first_bad_seq == 4
    with pg_store.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq > 15"))
    assert log.verify().first_bad_seq == 4


def test_truncation_below_a_checkpoint(pg_store: Store, tmp_path: Path) -> None:
    log = AuditLog(pg_store, key_dir=tmp_path / "keys", checkpoint_every=10)
    fill(log, 25)
    with pg_store.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE seq > 15"))
        conn.execute(text("DELETE FROM audit_checkpoints"))
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 16 and "anchor file" in (result.reason or "")


def test_concurrent_threads(pg_store: Store, tmp_path: Path) -> None:
    def run(worker: int) -> None:
        log = AuditLog(pg_store, key_dir=tmp_path / "keys", checkpoint_every=7)
        for i in range(25):
            log.append(actor=f"t{worker}", action="test.single", resource=f"item:{i}", outcome="ok")

    threads = [threading.Thread(target=run, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    result = AuditLog(pg_store, key_dir=tmp_path / "keys").verify()
    assert result.ok and result.entries_verified == 100


def _pg_writer(url: str, key_dir: str, worker: int) -> None:
    store = open_store(url, migrate=False)
    log = AuditLog(store, key_dir=Path(key_dir), checkpoint_every=7)
    for i in range(20):
        log.append_many([AuditEvent(f"p{worker}", "test.batch", f"item:{i}", "ok", {"i": i})] * 2)
    store.dispose()


def test_concurrent_processes_take_the_advisory_lock(pg_store: Store, pg_url: str, tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_pg_writer, args=(pg_url, str(tmp_path / "keys"), w)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    result = AuditLog(pg_store, key_dir=tmp_path / "keys").verify()
    assert result.ok and result.entries_verified == 120


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
