"""WAL checkpoints run off the request path (``charter.store._engine._Checkpointer``): a process that commits
to a SQLite store has one background thread that copies the WAL into the database file once every
``CHECKPOINT_EVERY`` commits or after a quiet period, so that commits do not checkpoint themselves (SQLite's
default made every ~43rd trace commit 7-9 ms slower) and do not each pay a checkpoint either.

Observed through SQLite itself, not through the thread's state: a copy of the database file *without* its
WAL holds exactly what checkpoints have copied into it, and ``PRAGMA wal_checkpoint(PASSIVE)`` on another
connection reports how many frames the WAL holds."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from charter.store import _engine as engine
from charter.store import open_store


def _checkpointers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "charter-wal-checkpoint"]


def _wal_frames(db: Path) -> tuple[int, int]:
    """(frames in the WAL, frames of them already in the database file), from another connection. The
    PASSIVE checkpoint that reports them may copy the rest: call it after the condition being tested."""
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
    return int(row[1]), int(row[2])


def _checkpointed_keys(db: Path, tmp: Path) -> set[str]:
    """The ``state`` keys the database *file* holds — what checkpoints copied — read from a copy of the file
    alone (no -wal beside it, so SQLite sees only the checkpointed pages)."""
    copy = tmp / f"copy-{time.monotonic_ns()}.db"
    shutil.copyfile(db, copy)
    conn = sqlite3.connect(copy)
    try:
        return {k for (k,) in conn.execute("SELECT key FROM state")}
    except sqlite3.DatabaseError:  # copied while a checkpoint was writing the file: none seen this time
        return set()
    finally:
        conn.close()
        copy.unlink()


def _open(db: Path) -> object:
    """A migrated store whose schema is already in the database file (so copies of the file have tables)."""
    store = open_store(f"sqlite:///{db}")
    conn = sqlite3.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return store


def _insert(store: object, key: str, size: int = 10) -> None:
    with store.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(
            text("INSERT INTO state (key, value, updated_at) VALUES (:k, :v, '2026-01-01 00:00:00')"),
            {"k": key, "v": '"' + "x" * size + '"'},
        )


def _wait_for(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return bool(condition())  # type: ignore[operator]


def test_a_batch_of_commits_is_checkpointed_in_the_background_and_the_wal_restarts(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    before = len(_checkpointers())
    store = _open(db)
    try:
        every = engine.CHECKPOINT_EVERY
        assert engine.CHECKPOINT_IDLE_S >= 0.5  # the pauses below are shorter than a quiet period
        # fewer commits than a batch, no quiet period yet: nothing is copied (commits do not checkpoint)
        for i in range(every // 2):
            _insert(store, f"early{i}", 5000)
        time.sleep(0.1)
        assert not {k for k in _checkpointed_keys(db, tmp_path) if k.startswith("early")}
        # complete the batch: the thread copies it at once, without waiting for a quiet period
        for i in range(every - every // 2):
            _insert(store, f"late{i}", 5000)
        assert _wait_for(lambda: f"late{every - every // 2 - 1}" in _checkpointed_keys(db, tmp_path), 0.8)
        # five more batches with short pauses: each is copied and the WAL starts again from its beginning,
        # so it holds about one batch (~3 pages a commit here), far fewer frames than the commits wrote
        for b in range(5):
            for i in range(every):
                _insert(store, f"b{b}-{i}", 5000)
            time.sleep(0.3)
        log, _copied = _wal_frames(db)
        assert log < 2 * every * 3, f"the WAL was not restarted: {log} frames"
        assert len(_checkpointers()) == before + 1  # one for the store, however many commits
    finally:
        store.dispose()


def test_a_quiet_period_checkpoints_what_a_partial_batch_wrote(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    store = _open(db)
    try:
        for i in range(3):
            _insert(store, f"k{i}")
        assert _wait_for(
            lambda: {"k0", "k1", "k2"} <= _checkpointed_keys(db, tmp_path), 5 * engine.CHECKPOINT_IDLE_S
        )
    finally:
        store.dispose()


def test_a_checkpoint_held_back_by_a_reader_is_retried(tmp_path: Path) -> None:
    """A reader on an old snapshot stops a checkpoint from copying frames newer than it; once the reader is
    gone the rest is copied without any further commit."""
    db = tmp_path / "c.db"
    store = _open(db)
    reader = sqlite3.connect(db, isolation_level=None)
    try:
        _insert(store, "before")
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM state").fetchall()  # holds its snapshot
        for i in range(engine.CHECKPOINT_EVERY):
            _insert(store, f"k{i}")
        time.sleep(0.3)  # the batch's checkpoint ran, and could copy only up to the reader's snapshot
        assert "k0" not in _checkpointed_keys(db, tmp_path)
        reader.execute("COMMIT")
        last = f"k{engine.CHECKPOINT_EVERY - 1}"
        assert _wait_for(lambda: last in _checkpointed_keys(db, tmp_path), 5 * engine.CHECKPOINT_IDLE_S)
    finally:
        reader.close()
        store.dispose()


def test_after_continuous_commits_the_first_quiet_period_copies_the_wal_and_it_restarts(
    tmp_path: Path,
) -> None:
    """Two threads commit without a pause for two seconds. A checkpoint that a commit overlaps cannot copy
    the frames written meanwhile, so the WAL may not start again while commits never pause (SQLite's own
    checkpoints, at the backstop, are no different); once they stop, everything is copied and the next
    commit starts the WAL from its beginning."""
    db = tmp_path / "c.db"
    store = _open(db)
    stop = time.monotonic() + 2.0
    written: list[str] = []

    def writer(name: str) -> None:
        i = 0
        while time.monotonic() < stop:
            _insert(store, f"{name}{i}", 3000)
            written.append(f"{name}{i}")
            i += 1

    try:
        threads = [threading.Thread(target=writer, args=(n,)) for n in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(written) > 4 * engine.CHECKPOINT_EVERY
        assert _wait_for(
            lambda: set(written) <= _checkpointed_keys(db, tmp_path), 5 * engine.CHECKPOINT_IDLE_S
        )
    finally:
        store.dispose()


def test_a_commit_checkpoints_itself_only_past_the_backstop(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    store = open_store(f"sqlite:///{db}")
    try:
        with store.connect() as conn:
            pages = conn.execute(text("PRAGMA wal_autocheckpoint")).scalar()
        assert pages == engine.WAL_BACKSTOP_PAGES
    finally:
        store.dispose()


def test_the_thread_ends_with_the_store(tmp_path: Path) -> None:
    before = len(_checkpointers())
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    _insert(store, "a")
    assert len(_checkpointers()) == before + 1
    store.dispose()
    deadline = time.monotonic() + 5
    while len(_checkpointers()) > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(_checkpointers()) == before


def test_a_store_without_writes_starts_no_thread(tmp_path: Path) -> None:
    before = len(_checkpointers())
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}", migrate=False)
    with store.connect() as conn:
        conn.execute(text("SELECT 1"))
    assert len(_checkpointers()) == before
    store.dispose()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork is POSIX-only")
def test_a_forked_worker_gets_its_own_checkpointer(tmp_path: Path) -> None:
    """Server workers may be forked from a process that already wrote: threads do not survive a fork, so
    the child starts its own on its first commit (else only the backstop would checkpoint there)."""
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    _insert(store, "parent")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report how many checkpointer threads it has before and after a commit
        try:
            store.engine.dispose(close=False)  # the parent's pooled connections are not the child's
            before = len(_checkpointers())
            _insert(store, "child")
            os.write(write, f"{before},{len(_checkpointers())}".encode())
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    store.dispose()
    assert answer == "0,1"


def test_only_the_checkpointer_counts_as_fork_safe(tmp_path: Path) -> None:
    """Code that forks only when no other thread could hold a lock the child needs (the audit chain's
    two-range verification) may fork beside a checkpointer (it never forks mid-checkpoint), not beside any
    other thread. In a fresh interpreter: this test process may have threads of other tests."""
    script = f"""
import threading
from sqlalchemy import text
from charter.store import open_store, other_threads_fork_safe
store = open_store("sqlite:///{tmp_path / "c.db"}")
with store.begin() as conn:
    conn.execute(text("INSERT INTO state (key, value, updated_at) VALUES ('a', '1', '2026-01-01 00:00:00')"))
names = sorted(t.name for t in threading.enumerate())
alone = other_threads_fork_safe()
stop = threading.Event()
other = threading.Thread(target=stop.wait, name="someone-else")
other.start()
print(names, alone, other_threads_fork_safe())
stop.set()
other.join()
store.dispose()
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.split() == ["['MainThread',", "'charter-wal-checkpoint']", "True", "False"], out.stderr


def test_dispose_returns_once_every_connection_is_closed(tmp_path: Path) -> None:
    """Closing the last connection to a WAL database checkpoints it and removes ``-wal`` and ``-shm``. The
    checkpointer's connection is closed before ``dispose`` returns, so a copy of the folder made right
    after (the test suite's template project, a backup) does not race with that removal."""
    for i in range(3):
        db = tmp_path / f"c{i}.db"
        store = _open(db)
        for j in range(engine.CHECKPOINT_EVERY + 1):  # a batch: the thread has checkpointed, is connected
            _insert(store, f"k{j}")
        time.sleep(0.05)
        # hold the lock the thread takes to close its connection for a moment: a dispose that did not wait
        # for the thread would return with that connection (and so -wal and -shm) still open
        engine._FORK_LOCK.acquire()
        threading.Timer(0.2, engine._FORK_LOCK.release).start()
        store.dispose()
        assert not db.with_name(db.name + "-wal").exists() and not db.with_name(db.name + "-shm").exists()
