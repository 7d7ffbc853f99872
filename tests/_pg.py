"""One real PostgreSQL (with pgvector) per test session, and the ``backend``-parametrised ``db_url`` fixture.

The server is the ``pgserver`` wheel (PostgreSQL 16 + pgvector bundled), started once for the whole session
in a temporary folder and stopped at the end. Each test gets its own database, copied from a template that
is already migrated to the head revision (``CREATE DATABASE … TEMPLATE … STRATEGY FILE_COPY``, a file copy
instead of running every migration), and dropped afterwards. The server runs with ``fsync`` and
``full_page_writes`` off — throwaway data, as PostgreSQL's documentation advises for it: durability against an
*operating-system* crash is not what any test checks (a killed client, a killed Charter worker and a restarted
server behave the same); dropping a database then takes ~10 ms instead of ~90. Copying one still costs ~0.2 s
of kernel time on an ext4 disk (575 small files) against ~15 ms on tmpfs, which is why ``scripts/test`` puts
the data folder (``TMPDIR``) in memory. A missing ``pgserver`` or ``psycopg`` FAILS the test with the command
that installs it; nothing is skipped.

Fixtures (imported by ``tests/conftest.py``):

* ``pg_cluster`` (session) — the running server: :class:`PgCluster`.
* ``pg_url`` — a fresh, migrated database on it (SQLAlchemy URL, ``postgresql+psycopg://``).
* ``backend`` — ``"sqlite"`` or ``"postgres"``; tests that take ``db_url`` run once per backend.
* ``db_url`` — a fresh, migrated database on the test's backend (a SQLite file in ``tmp_path`` copied from
  ``sqlite_template``, migrated once per process; or ``pg_url``).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

INSTALL_HINT = (
    "pip install 'pgserver>=0.1.4' 'psycopg[binary]>=3.1.19' (part of the dev extra; scripts/setup)"
)
TEMPLATE = "charter_template"
_names = itertools.count()


def _require_pg() -> None:
    for module in ("pgserver", "psycopg"):
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"{module} is not installed: {INSTALL_HINT}", pytrace=False)


def sqlalchemy_url(uri: str, database: str | None = None) -> str:
    """pgserver's libpq URI as a SQLAlchemy URL (psycopg 3 driver), optionally for another database."""
    url = uri.replace("postgresql://", "postgresql+psycopg://", 1)
    if database is not None:
        url = url.replace("/postgres?", f"/{database}?", 1)
    return url


class PgCluster:
    """The session's PostgreSQL server: create and drop databases, restart the server (fault tests)."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.admin_url = sqlalchemy_url(server.get_uri())
        self._lock = threading.Lock()
        self._template_ready = False

    @property
    def pgdata(self) -> Path:
        return Path(self.server.pgdata)

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.server.get_uri(), autocommit=True) as conn:
            conn.execute(sql.encode())

    def _ensure_template(self) -> None:
        with self._lock:
            if self._template_ready:
                return
            from charter.store import open_store

            self._admin(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
            self._admin(f"CREATE DATABASE {TEMPLATE}")
            store = open_store(self.url(TEMPLATE))  # runs every migration once
            store.dispose()
            self._template_ready = True

    def url(self, database: str) -> str:
        return sqlalchemy_url(self.server.get_uri(), database)

    def tune_for_tests(self) -> None:
        """``fsync`` and ``full_page_writes`` off (see the module docstring); both take effect on reload."""
        self._admin("ALTER SYSTEM SET fsync = off")
        self._admin("ALTER SYSTEM SET full_page_writes = off")
        self._admin("SELECT pg_reload_conf()")

    def create_database(self, *, migrated: bool = True) -> str:
        """A new database; ``migrated=False`` gives an empty one (for migration tests). Returns its URL."""
        if migrated:
            self._ensure_template()
            with self._lock:  # a template may not be copied by two CREATE DATABASE at once
                return self.copy_database(TEMPLATE)
        name = f"t_{os.getpid()}_{next(_names)}"
        self._admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def copy_database(self, template: str) -> str:
        """A new database copied file by file from ``template`` (no session may be connected to it)."""
        name = f"t_{os.getpid()}_{next(_names)}"
        self._admin(f"CREATE DATABASE {name} TEMPLATE {template} STRATEGY FILE_COPY")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        from sqlalchemy.engine import make_url

        name = make_url(url).database
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def _pg_ctl(self, args: list[str]) -> None:
        import pgserver._commands

        pg_ctl = pgserver._commands.pg_ctl  # type: ignore[attr-defined]
        pg_ctl(args, pgdata=self.pgdata, user=self.server.system_user)

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are cut off)."""
        self._pg_ctl(["-w", "-m", "fast", "stop"])

    def start(self) -> None:
        """Start it again on the same socket folder (so every URL handed out stays valid)."""
        from urllib.parse import parse_qs, urlsplit

        socket_dir = parse_qs(urlsplit(self.server.get_uri()).query)["host"][0]
        self._pg_ctl(["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(self.pgdata / "log"), "start"])

    def restart(self) -> None:
        self._pg_ctl(["-w", "-m", "fast", "restart"])


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """PostgreSQL + pgvector for the whole session (``pgserver``), torn down at the end."""
    _require_pg()
    import pgserver

    # Not under pytest's basetemp: a concurrent pytest run prunes old basetemps, and with them a live PGDATA.
    pgdata = Path(tempfile.mkdtemp(prefix="charter-pg-"))
    server = pgserver.get_server(pgdata, cleanup_mode="delete")  # type: ignore[attr-defined]
    try:
        cluster = PgCluster(server)
        cluster.tune_for_tests()
        yield cluster
    finally:
        server.cleanup()
        shutil.rmtree(pgdata, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> Iterator[str]:
    """A fresh database, already migrated to head; dropped after the test."""
    url = pg_cluster.create_database()
    yield url
    pg_cluster.drop_database(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend under test: every test using ``db_url`` runs on both."""
    return str(request.param)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated to head once per test process (running every migration takes ~0.4 s)."""
    from charter.store import open_store

    path = tmp_path_factory.mktemp("sqlite-template") / "charter.db"
    store = open_store(f"sqlite:///{path}")
    with store.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    store.dispose()
    return path


def migrated_sqlite(template: Path, dest: Path) -> str:
    """A fresh SQLite database at ``dest``, migrated to head: a copy of ``template``, private (0600) as
    ``open_store`` creates one; returns its URL."""
    dest.touch(mode=0o600, exist_ok=False)
    shutil.copyfile(template, dest)
    return f"sqlite:///{dest}"


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh database on ``backend``, migrated to head: a SQLite file in ``tmp_path`` (copied from
    ``sqlite_template``), or a new PostgreSQL database (copied from the cluster's migrated template)."""
    if backend == "sqlite":
        return migrated_sqlite(request.getfixturevalue("sqlite_template"), tmp_path / "charter.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def empty_db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """Like ``db_url`` but not migrated: an empty SQLite file or an empty PostgreSQL database."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    url = cluster.create_database(migrated=False)
    yield url
    cluster.drop_database(url)
