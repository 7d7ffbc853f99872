"""Concurrent writers, threads and processes, never fork or gap the chain.

On SQLite (``BEGIN IMMEDIATE``) and on PostgreSQL (advisory lock): ``db_url`` runs each test on both."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from charter.store import Store, open_store
from charter.telemetry.audit import AuditEvent, AuditLog

pytestmark = pytest.mark.slow  # concurrent writer processes


def _writer(db_url: str, key_dir: str, worker: int, n: int) -> None:
    """Runs in a child process: its own engine, its own AuditLog, appends and small batches."""
    store = open_store(db_url, migrate=False)
    log = AuditLog(store, key_dir=Path(key_dir), checkpoint_every=7)
    for i in range(n):
        if i % 5 == 4:
            log.append_many(
                [
                    AuditEvent(f"proc-{worker}", "test.batch", f"item:{i}", "ok", {"i": i, "k": k})
                    for k in range(3)
                ]
            )
        else:
            log.append(
                actor=f"proc-{worker}",
                action="test.single",
                resource=f"item:{i}",
                outcome="ok",
                details={"i": i, "worker": worker},
            )
    store.dispose()


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    st = open_store(db_url)
    yield st
    st.dispose()


def _expected(n: int) -> int:
    return sum(3 if i % 5 == 4 else 1 for i in range(n))


def _assert_chain(log: AuditLog, total: int) -> None:
    result = log.verify()
    assert result.ok, result.reason
    assert result.entries_verified == total == result.head_seq
    cps = log.checkpoints()
    assert cps and all(c.seq <= total for c in cps)
    assert result.checkpoints_verified == len(cps)


def test_threads_append_concurrently(store: Store, key_dir: Path) -> None:
    errors: list[BaseException] = []

    def run(worker: int) -> None:
        try:
            log = AuditLog(store, key_dir=key_dir, checkpoint_every=7)  # one instance per thread
            for i in range(40):
                log.append(
                    actor=f"thread-{worker}",
                    action="test.single",
                    resource=f"item:{i}",
                    outcome="ok",
                    details={"i": i},
                )
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    _assert_chain(AuditLog(store, key_dir=key_dir), 160)


def test_processes_append_concurrently(store: Store, db_url: str, key_dir: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    n = 60
    procs = [ctx.Process(target=_writer, args=(db_url, str(key_dir), w, n)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    log = AuditLog(store, key_dir=key_dir)
    _assert_chain(log, 3 * _expected(n))
    # every worker's events are all there, in its own order
    entries = log.tail(3 * _expected(n))
    for w in range(3):
        mine = [e.details["i"] for e in entries if e.actor == f"proc-{w}"]
        assert len(mine) == _expected(n) and mine == sorted(mine)
