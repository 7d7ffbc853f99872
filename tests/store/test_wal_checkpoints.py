"""WAL checkpoints run off the request path (``charter.store._engine._Checkpointer``): a process that commits
to a SQLite store has one background thread that copies the WAL into the database file after commits, so
that commits do not checkpoint themselves (SQLite's default made every ~43rd trace commit 7-9 ms slower).

Observed through SQLite itself: ``PRAGMA wal_checkpoint(PASSIVE)`` on another connection reports how many
frames the WAL holds and how many of them are already in the database file."""

from __future__ import annotations

import os
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


def _insert(store: object, key: str, size: int = 10) -> None:
    with store.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(
            text("INSERT INTO state (key, value, updated_at) VALUES (:k, :v, '2026-01-01 00:00:00')"),
            {"k": key, "v": '"' + "x" * size + '"'},
        )


def test_commits_are_checkpointed_in_the_background_and_the_wal_restarts(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    before = len(_checkpointers())
    store = open_store(f"sqlite:///{db}")
    try:
        for i in range(300):  # ~300 commits of a few pages: past SQLite's default 1,000-page checkpoint
            _insert(store, f"k{i}", 5000)
            if i % 50 == 49:
                time.sleep(0.05)  # a pause: the checkpointer catches up, and the next commit restarts the WAL
        time.sleep(0.05)
        # SQLite's own checkpoint would have run only past the backstop (thousands of frames); the WAL was
        # copied and restarted along the way, so it holds far fewer frames than the commits wrote
        log, _copied = _wal_frames(db)
        assert log < 300, f"the WAL was never restarted: {log} frames"
        assert len(_checkpointers()) == before + 1  # one for the store, however many commits
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
