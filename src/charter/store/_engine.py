"""Opening the database: URL resolution, SQLite pragmas, migrations on open, and losing the server.

A SQLite database is created mode 0600 in a 0700 folder (:mod:`charter.store._perms`); SQLite creates its
``-wal`` and ``-shm`` files with the database file's mode, so they are private too.

On PostgreSQL the pool checks each connection before use (``pool_pre_ping``), so after the server restarts
the next request reconnects by itself. A request that was in flight when the connection broke, or that
cannot connect while the server is down, raises :class:`StoreUnavailable` (a retryable
:class:`~charter.errors.ProviderError`, HTTP 503) instead of a raw driver error; its transaction was rolled
back by the server, so nothing of it was written.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import weakref
from collections import namedtuple
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DBAPIError

from charter.errors import StoreUnavailable, UsageError
from charter.store._perms import create_private_file, private_dir, sqlite_path

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# pg_advisory_lock key held while migrating, so that workers starting together upgrade the schema once.
PG_MIGRATE_LOCK_KEY = 0x63686D67  # "chmg"


def _is_connection_failure(ctx: ExceptionContext) -> bool:
    if ctx.is_disconnect:
        return True
    orig = ctx.original_exception
    try:
        import psycopg
    except ImportError:  # pragma: no cover - PostgreSQL URLs need psycopg
        return False
    if not isinstance(orig, psycopg.OperationalError):
        return False
    state = getattr(orig, "sqlstate", None)
    # no SQLSTATE: the connection could not be made; 08: connection exception; 57P: server shutting down
    return state is None or state.startswith(("08", "57P"))


def _translate_connection_errors(ctx: ExceptionContext) -> None:
    if _is_connection_failure(ctx):
        raise StoreUnavailable() from ctx.original_exception


def resolve_database_url(charter_dir: Path | None) -> str:
    """``CHARTER_DATABASE_URL`` if set, else SQLite at ``.charter/charter.db`` beside the charter."""
    url = os.environ.get("CHARTER_DATABASE_URL")
    if url:
        return url
    if charter_dir is None:
        raise UsageError("no charter folder and no CHARTER_DATABASE_URL: cannot locate the database")
    path = (charter_dir / ".charter" / "charter.db").resolve()
    private_dir(path.parent)  # 0700: the database, keys and reports beside it are private
    return f"sqlite:///{path}"


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # isolation_level=None: we issue BEGIN ourselves (see Store.begin), so BEGIN IMMEDIATE is possible.
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
    cur.close()


# WAL checkpoints off the request path. SQLite's default (a checkpoint by whichever commit takes the WAL past
# 1,000 pages) put a checkpoint — copying the WAL into the database file and syncing it, 4-6 ms of which ~2 ms
# CPU — inside every ~43rd trace commit of the ask pipeline: +7-9 ms on ~2 % of answers, which also pushes
# the answers' p95 up to what would otherwise be their p97.5 (docs/benchmarks.md, "WAL checkpoints").
# Instead each process that writes runs a checkpointer thread (:class:`_Checkpointer`) that checkpoints
# PASSIVE-ly (never blocking readers or writers) once every CHECKPOINT_EVERY commits, or once the commits stop
# for CHECKPOINT_IDLE_S: one checkpoint per ~the WAL SQLite would have checkpointed, not one per commit (that
# variant put a checkpoint's fixed cost, two syncs, on every request: +0.5 ms median with a core busy).
# Once a checkpoint has copied the whole WAL, the next commit starts the WAL file from its beginning again.
# Commits checkpoint themselves only past WAL_BACKSTOP_PAGES (~16 MB), if the thread ever falls behind.
WAL_BACKSTOP_PAGES = 4000
#: commits between two background checkpoints (a trace commit writes ~15-25 pages: ~500-800 pages a time)
CHECKPOINT_EVERY = 32
#: a quiet period after which the commits so far are checkpointed even if fewer than CHECKPOINT_EVERY
CHECKPOINT_IDLE_S = 1.0
#: the checkpointer threads' name (they are fork-safe: see ``_FORK_LOCK``)
CHECKPOINT_THREAD = "charter-wal-checkpoint"
# A fork copies SQLite's and the sqlite3 module's locks as they are: if a checkpointer were inside SQLite at
# that moment, the child could block forever on its first query. The checkpointer holds this lock while it
# is in SQLite, and a fork waits for it (``os.register_at_fork``), so a child never inherits a half-done
# checkpoint; the child has no checkpointer thread and starts its own on its first commit.
_FORK_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        before=_FORK_LOCK.acquire, after_in_parent=_FORK_LOCK.release, after_in_child=_FORK_LOCK.release
    )


def other_threads_fork_safe() -> bool:
    """Whether every thread of this process but the caller's is one that a fork may safely leave behind (a
    checkpointer): for code that forks only when no other thread could hold a lock the child needs."""
    return all(t is threading.current_thread() or t.name == CHECKPOINT_THREAD for t in threading.enumerate())


class _Checkpointer:
    """One daemon thread per SQLite store and process: ``PRAGMA wal_checkpoint(PASSIVE)`` on its own connection
    after every :data:`CHECKPOINT_EVERY` commits, or after :data:`CHECKPOINT_IDLE_S` without a commit when
    some are not yet checkpointed. A checkpoint that could not copy the whole WAL (a commit landed during it,
    or the database was busy) is tried again after the next quiet period or batch; the backstop still bounds
    the WAL. A commit costs a counter increment (and, on the first after a checkpoint or the batch's last, an
    event set). Stops when the store is disposed or garbage-collected."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.pid = os.getpid()
        self.commits = 0  #: commits since the last checkpoint started (approximate under threads: a count)
        self._due = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=CHECKPOINT_THREAD, daemon=True)
        self._thread.start()

    def wrote(self) -> None:
        self.commits += 1
        if self.commits == 1 or self.commits >= CHECKPOINT_EVERY:
            self._due.set()

    def stop(self, wait: float = 0.0) -> None:
        """Stop the thread; with ``wait``, up to that many seconds for it to close its connection (in this
        process), so that what closing the last connection does — SQLite checkpoints and removes the
        ``-wal`` and ``-shm`` files — has happened when the store's ``dispose`` returns, as without a
        checkpointer (a copy of the folder made just after must not race with it)."""
        self._stop.set()
        self._due.set()
        if wait and self.pid == os.getpid() and self._thread is not threading.current_thread():
            self._thread.join(wait)

    def _batch_ready(self) -> bool:
        """Wait until a batch is full or the commits pause; False if the store is being closed."""
        while self.commits < CHECKPOINT_EVERY:
            seen = self.commits
            if self._due.wait(CHECKPOINT_IDLE_S):
                self._due.clear()
            if self._stop.is_set():
                return False
            if self.commits == seen:  # a whole quiet period: checkpoint what there is
                break
        return True

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._due.wait()
                self._due.clear()
                if self._stop.is_set() or not self._batch_ready():
                    return
                self.commits = 0
                try:
                    with _FORK_LOCK:
                        if conn is None:
                            conn = sqlite3.connect(self.path, timeout=0.1, check_same_thread=False)
                        _busy, log, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    complete = log == copied
                except sqlite3.Error:
                    complete = False  # busy or failing
                if not complete and not self.commits:
                    self.commits = 1  # not all copied: try again after the next quiet period or batch
                    self._due.set()
        finally:
            if conn is not None:
                with _FORK_LOCK:
                    conn.close()


def _sqlite_begin(conn: Connection) -> None:
    # straight on the driver: the statement needs none of SQLAlchemy's per-execution machinery (this runs
    # for every transaction); a driver error is raised as SQLAlchemy's DBAPIError subclass, as before
    sql = "BEGIN IMMEDIATE" if conn.info.get("begin_immediate") else "BEGIN"
    run_driver(sqlite_driver(conn), sql)


def sqlite_driver(conn: Connection) -> sqlite3.Connection:
    """The ``sqlite3`` connection under an open SQLAlchemy connection to a SQLite database."""
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    return driver


def run_driver(
    driver: sqlite3.Connection, sql: str, params: Sequence[Any] = (), *, many: bool = False
) -> list[Any]:
    """Run one statement on a ``sqlite3`` connection (its rows, raw); a driver error is raised as
    SQLAlchemy's :class:`~sqlalchemy.exc.DBAPIError` subclass, exactly as ``Connection.execute`` raises it."""
    try:
        if many:
            driver.executemany(sql, params)
            return []
        return driver.execute(sql, params).fetchall()
    except sqlite3.Error as exc:
        raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc


def _prepare(statement: Any, engine: Engine) -> tuple[str, list[Any]]:
    """SQL text (constants inlined) and a result processor per column, for :meth:`Store.read_constant`."""
    dialect = engine.dialect
    compiled = statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True})
    processors = [
        column.type.dialect_impl(dialect).result_processor(dialect, None)
        for column in statement.selected_columns
    ]
    return str(compiled), processors


# SQL; per positional parameter: (name, bind processor, constant value or _PARAM); a row class; per result
# column: its result processor
_Fast = tuple[str, list[tuple[str, Any, Any]], Any, list[Any]]
_PARAM: Any = object()


def _prepare_fast(statement: Any, keys: frozenset[str], engine: Engine) -> _Fast | None:
    """Positional SQL, bind processors and result processors for one statement executed with parameters
    named ``keys`` (SQLite), or ``None`` when it needs SQLAlchemy's own execution (expanding parameters,
    defaults computed in Python)."""
    dialect = engine.dialect
    compiled = statement.compile(dialect=dialect, column_keys=sorted(keys))
    if (
        compiled.positiontup is None
        or compiled.literal_execute_params
        or compiled.post_compile_params
        or getattr(compiled, "insert_prefetch", None)  # a Python-side default to compute: SQLAlchemy's job
        or getattr(compiled, "update_prefetch", None)
    ):
        return None
    params = []
    for name in compiled.positiontup:
        bind = compiled.binds[name]
        processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
        params.append((name, processor, _PARAM if name in keys else bind.effective_value))
    columns = list(statement.exported_columns)  # a SELECT's columns, or the RETURNING ones (else none)
    row_class = namedtuple("_FastRow", [c.name for c in columns], rename=True) if columns else None
    processors = [c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns]
    return str(compiled), params, row_class, processors


# SQL; per column: (name, bind processor, scalar default); the columns whose default must be computed
_Insert = tuple[str, list[tuple[str, Any, Any]], frozenset[str]]


def _prepare_insert(table: Table, engine: Engine) -> _Insert:
    """``INSERT`` SQL for every column of ``table`` and, per column, SQLAlchemy's own bind processor for
    this dialect (type conversion exactly as ``Connection.execute`` would do it) and its scalar default."""
    dialect = engine.dialect
    columns, computed = [], set()
    for column in table.columns:
        default: Any = column.default
        scalar = None
        if default is not None:
            if getattr(default, "is_scalar", False):
                scalar = default.arg
            else:
                computed.add(column.name)
        columns.append((column.name, column.type.dialect_impl(dialect).bind_processor(dialect), scalar))
    prep = dialect.identifier_preparer
    names = ", ".join(prep.quote(c.name) for c in table.columns)
    marks = ", ".join("?" for _ in table.columns)
    sql = f"INSERT INTO {prep.format_table(table)} ({names}) VALUES ({marks})"
    return sql, columns, frozenset(computed)


class Store:
    """A database handle. ``begin()`` opens a transaction; ``begin(immediate=True)`` serialises writers."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._prepared: dict[Any, tuple[str, list[Any]]] = {}
        self._inserts: dict[Table, _Insert] = {}
        self._fast: dict[tuple[Any, frozenset[str]], _Fast | None] = {}
        db = sqlite_path(str(engine.url)) if self.dialect == "sqlite" else None
        self._wal_path = db if db is not None and db.exists() else None
        self._checkpointer: _Checkpointer | None = None
        self._checkpointer_lock = threading.Lock()

    def _wrote(self) -> None:
        """A write was committed: the process's checkpointer (started here on the first write of this
        process, so a forked worker gets its own) will checkpoint the WAL soon."""
        if self._wal_path is None:
            return
        ckpt = self._checkpointer
        if ckpt is None or ckpt.pid != os.getpid():
            with self._checkpointer_lock:
                ckpt = self._checkpointer
                if ckpt is None or ckpt.pid != os.getpid():
                    ckpt = self._checkpointer = _Checkpointer(self._wal_path)
                    weakref.finalize(self, ckpt.stop)
        ckpt.wrote()

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def begin(self, *, immediate: bool = False) -> Iterator[Connection]:
        """A transaction that commits on success and rolls back on any exception.

        ``immediate=True`` takes the write lock up front (SQLite ``BEGIN IMMEDIATE``), so that
        read-then-write sequences such as appending to the audit chain are serialised across processes.
        """
        with self.engine.connect() as conn:
            conn.info["begin_immediate"] = immediate
            try:
                with conn.begin():
                    yield conn
            finally:
                conn.info.pop("begin_immediate", None)
        self._wrote()

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for reads (autocommit on SQLite)."""
        with self.engine.connect() as conn:
            yield conn

    def read_constant(self, statement: Any) -> list[tuple[Any, ...]]:
        """The rows of one constant ``SELECT``, converted by the column types exactly as
        ``Connection.execute`` would convert them. Only for statements built once from the code's own
        constants (a module-level query): its literals are inlined into SQL that is compiled once and kept
        per statement object, so it must never carry user input, and never be used for writes.

        This is the per-request state read's path, so it is made cheap: the statement is compiled once; on
        SQLite it runs straight on a pooled DBAPI connection outside any transaction (one statement sees
        one consistent snapshot on its own), which skips most of the per-execution machinery and the
        ``BEGIN``/``ROLLBACK`` round trips; elsewhere it runs through a normal connection.
        """
        if not self.is_sqlite:
            with self.engine.connect() as conn:
                return list(conn.execute(statement).tuples().all())
        prepared = self._prepared.get(statement)
        if prepared is None:
            prepared = self._prepared[statement] = _prepare(statement, self.engine)
        sql, processors = prepared
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            try:
                cursor.execute(sql)
                rows = cursor.fetchall()
            finally:
                cursor.close()
        finally:
            raw.close()
        return [tuple(p(v) if p else v for p, v in zip(processors, row, strict=True)) for row in rows]

    def execute_in(self, conn: Connection, statement: Any, params: Mapping[str, Any]) -> list[Any]:
        """Execute one statement built once from the code's own constants (a module-level ``INSERT``,
        ``UPDATE … RETURNING`` or ``SELECT`` with bound parameters) inside ``conn``'s open transaction and
        return its rows (attribute access by column name, values converted by the column types).

        The path of every governed tool call's two transactions, so it is made cheap on SQLite: compiled
        once per statement and set of parameter names, values converted by SQLAlchemy's own bind and result
        processors for this dialect (what is stored and read back is exactly what ``Connection.execute``
        would store and read), run straight on the driver connection of the same transaction. Statements
        with expanding parameters, and every statement elsewhere, go through ``conn.execute``."""
        if self.is_sqlite:
            keys = frozenset(params)
            cache_key = (statement, keys)
            fast = self._fast.get(cache_key, _PARAM)
            if fast is _PARAM:
                fast = self._fast[cache_key] = _prepare_fast(statement, keys, self.engine)
            if fast is not None:
                sql, binds, row_class, processors = fast
                values = [
                    (p(params[n] if d is _PARAM else d) if p else (params[n] if d is _PARAM else d))
                    for n, p, d in binds
                ]
                rows = run_driver(sqlite_driver(conn), sql, values)
                if row_class is None:
                    return []
                return [
                    row_class(*(p(v) if p else v for p, v in zip(processors, row, strict=True)))
                    for row in rows
                ]
        result = conn.execute(statement, dict(params))
        return list(result.all()) if result.returns_rows else []

    def insert_rows(self, batches: Sequence[tuple[Table, Sequence[Mapping[str, Any]]]]) -> None:
        """Insert every batch's rows into its table, all in one transaction (all or nothing).

        The trace writer's path (every answered request waits for it), so it is made cheap: on SQLite the
        ``INSERT`` is compiled once per table and run with ``executemany`` straight on a pooled DBAPI
        connection, values converted by each column's own SQLAlchemy bind processor (so what is stored is
        exactly what ``Connection.execute`` would store; a missing key takes the column's scalar default,
        else NULL; a row missing a column whose default is computed goes the normal way); a driver error
        is raised as SQLAlchemy's :class:`~sqlalchemy.exc.DBAPIError` subclass, as the normal path raises
        it. Elsewhere the rows go through a normal transaction.
        """
        batches = [(table, rows) for table, rows in batches if rows]
        prepared_all: list[_Insert] = []
        if self.is_sqlite:
            for table, rows in batches:
                prepared = self._inserts.get(table)
                if prepared is None:
                    prepared = self._inserts[table] = _prepare_insert(table, self.engine)
                if prepared[2] and any(not prepared[2] <= row.keys() for row in rows):
                    prepared_all = []  # a default to compute (a callable): SQLAlchemy's own path does it
                    break
                prepared_all.append(prepared)
        if not prepared_all:
            with self.begin() as conn:
                for table, rows in batches:
                    conn.execute(table.insert(), list(rows))
            return
        import sqlite3

        statements = []
        for (_, rows), (sql, columns, _) in zip(batches, prepared_all, strict=True):
            values = [
                tuple((p(row.get(name, d)) if p else row.get(name, d)) for name, p, d in columns)
                for row in rows
            ]
            statements.append((sql, values))
        raw = self.engine.raw_connection()
        try:
            driver: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]
            sql = "BEGIN"
            try:
                driver.execute(sql)
                for sql, values in statements:
                    driver.executemany(sql, values)
                sql = "COMMIT"
                driver.execute(sql)
                self._wrote()
            except sqlite3.Error as exc:
                if driver.in_transaction:
                    driver.execute("ROLLBACK")
                raise DBAPIError.instance(sql, None, exc, sqlite3.Error) from exc
            except BaseException:
                if driver.in_transaction:
                    driver.execute("ROLLBACK")
                raise
        finally:
            raw.close()

    def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to ``revision`` with the append-only Alembic migrations.

        A database already at the head revision is left alone without starting Alembic (which loads and
        compiles every migration script: two thirds of opening a runtime). Anything else — an older schema,
        a newer one, a missing version table — goes through Alembic, under PostgreSQL's advisory lock."""
        from alembic import command

        if revision == "head" and self.current_revision() == head_revision():
            return
        cfg = _alembic_config()
        with self.engine.connect() as conn:
            if not self.is_sqlite:  # one migrator at a time; the others wait, then find nothing to do
                conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": PG_MIGRATE_LOCK_KEY})
                conn.commit()
            try:
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                conn.commit()
            finally:
                if not self.is_sqlite:
                    conn.rollback()
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PG_MIGRATE_LOCK_KEY})
                    conn.commit()

    def current_revision(self) -> str | None:
        """The schema's Alembic revision; ``None`` when there is no version table or not exactly one row."""
        with self.engine.connect() as conn:
            try:
                rows = conn.execute(text("SELECT version_num FROM alembic_version")).all()
            except Exception:
                return None
            return str(rows[0][0]) if len(rows) == 1 else None

    def dispose(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop(wait=10.0)
        self.engine.dispose()


def _alembic_config() -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    return cfg


@functools.cache
def head_revision() -> str:
    """The newest migration's revision (read once per process from the migration scripts)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package ships its migrations
        raise RuntimeError(f"no Alembic migrations under {MIGRATIONS_DIR}")
    return str(head)


def open_store(url: str, *, migrate: bool = True) -> Store:
    """Open (and by default migrate) the database at ``url``."""
    if url.startswith("sqlite"):
        db_path = sqlite_path(url)
        if db_path is not None and not db_path.exists():
            # created 0600 before SQLite opens it: SQLite gives -wal and -shm the database file's mode
            private_dir(db_path.parent)
            create_private_file(db_path)
        # A small pool: keeping connections open avoids the checkpoint-on-last-close that SQLite does when
        # the final connection to a WAL database closes (it made every write transaction ~20 ms slower).
        engine = create_engine(
            url,
            pool_size=8,
            max_overflow=32,
            pool_pre_ping=False,
            # the most recently used connection first: one whose page cache is still valid (SQLite keeps
            # a connection's cache across transactions only while no other connection wrote in between)
            pool_use_lifo=True,
            connect_args={"check_same_thread": False, "timeout": 30},
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    else:
        engine = create_engine(
            url,
            pool_pre_ping=True,  # a connection broken by a server restart is replaced before use
            pool_size=10,
            max_overflow=20,
            pool_timeout=30,
            connect_args={"connect_timeout": 10} if url.startswith("postgresql") else {},
        )
        event.listen(engine, "handle_error", _translate_connection_errors)
    store = Store(engine)
    if migrate:
        store.migrate()
    return store
