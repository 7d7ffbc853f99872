"""Fixtures shared by the whole suite. Nothing here reaches the network."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from tests import _order, _vectors
from tests._pg import (  # noqa: F401  (shared PostgreSQL, the migrated SQLite template)
    backend,
    db_url,
    empty_db_url,
    migrated_sqlite,
    pg_cluster,
    pg_url,
    sqlite_template,
)

# Wall-clock deadlines make property tests flaky on a loaded 2-core CI machine; correctness is what they test.
settings.register_profile(
    "charter", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("charter")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "billing-support"
SHARED = REPO.parent / "shared"


# The suite syncs the same example documents in hundreds of tests, each into a fresh store, so each would embed
# the same texts with the real model again (~2,400 texts for the billing example: most of a minute on 2 cores).
# Within one test run every text is embedded once and its vector reused: MiniLM is deterministic per text, so
# what a test sees is what the real model returns. The vectors are kept per process and shared between the
# run's xdist workers through a SQLite file in the run's base temp folder (a worker looks there under a file lock
# and claims a batch of what is missing, then embeds it outside the lock, so two workers syncing the same example
# embed each text once and share the batches between them). Tests about the embedder's
# own work (threads, batching, how long embedding takes) opt out with ``@pytest.mark.real_embedding``.
_EMBED_MEMO: dict[str, object] = {}
_EMBED_MEMO_MAX = 300_000


def _run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shared by every xdist worker of this run (the workers' base temp folders share a parent that is
    unique to the run); the base temp folder itself without xdist."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


MEMO_FILE = "embedding-memo.sqlite"


def create_memo_tables(conn: sqlite3.Connection) -> None:
    """The shared memo's tables: vectors by text hash, claims on texts being embedded, and (recording runs)
    the texts asked for and whether they are worth recording."""
    conn.execute("CREATE TABLE IF NOT EXISTS memo (key BLOB PRIMARY KEY, vec BLOB NOT NULL)")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS claims (key BLOB PRIMARY KEY, owner TEXT NOT NULL, at REAL NOT NULL)"
    )
    conn.execute("CREATE TABLE IF NOT EXISTS texts (key BLOB PRIMARY KEY, text TEXT NOT NULL, keep INT)")


@pytest.fixture(scope="session")
def _shared_vectors(tmp_path_factory: pytest.TempPathFactory, pytestconfig: pytest.Config) -> Path:
    """The run's shared memo, filled from the recorded vectors (``tests/_vectors.py``) by the first worker —
    unless this run records them (``--record-vectors``: it starts empty and notes which texts to keep)."""
    from filelock import FileLock

    path = _run_root(tmp_path_factory) / MEMO_FILE
    with FileLock(str(path) + ".lock"), closing(sqlite3.connect(path, timeout=120)) as conn, conn:
        create_memo_tables(conn)
        seeded = path.with_name(MEMO_FILE + ".seeded")
        if not pytestconfig.getoption("record_vectors") and not seeded.exists():
            recorded = _vectors.usable()
            if recorded:
                texts, vectors = recorded
                conn.executemany(
                    "INSERT OR IGNORE INTO memo VALUES (?, ?)",
                    [(_key(t), v.tobytes()) for t, v in zip(texts, vectors, strict=True)],
                )
            seeded.touch()
    return path


@pytest.fixture
def memo_file(tmp_path: Path) -> Path:
    """An empty memo file with the shared memo's tables (tests of the memo and of recording)."""
    path = tmp_path / "memo.sqlite"
    with closing(sqlite3.connect(path)) as conn, conn:
        create_memo_tables(conn)
    return path


def _note_texts(path: Path, texts: list[str]) -> None:
    """Recording run: remember ``texts`` and whether they are fixed (worth recording) or a Hypothesis
    example's (generated, never asked for again)."""
    from hypothesis import currently_in_test_context

    keep = 0 if currently_in_test_context() else 1
    with closing(sqlite3.connect(path, timeout=120)) as conn, conn:
        conn.executemany(
            "INSERT INTO texts VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET keep = max(keep, excluded.keep)",
            [(_key(t), t, keep) for t in dict.fromkeys(texts)],
        )


def _key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def _shared_get(path: Path, texts: list[str]) -> dict[str, bytes]:
    keys = {_key(t): t for t in texts}
    found: dict[str, bytes] = {}
    with closing(sqlite3.connect(path, timeout=120)) as conn:
        items = list(keys)
        for i in range(0, len(items), 500):
            part = items[i : i + 500]
            rows = conn.execute(f"SELECT key, vec FROM memo WHERE key IN ({','.join('?' * len(part))})", part)
            found.update((keys[k], v) for k, v in rows)
    return found


# A claim older than this belongs to a worker that died mid-batch: another worker takes the texts over.
CLAIM_STALE_SECONDS = 300.0


def _claim(path: Path, pending: list[str], owner: str, size: int) -> list[str]:
    """Up to ``size`` of ``pending`` that no live claim covers, now claimed by ``owner`` (call under the lock)."""
    now = time.time()
    with closing(sqlite3.connect(path, timeout=120)) as conn, conn:
        held = dict(conn.execute("SELECT key, at FROM claims WHERE at > ?", (now - CLAIM_STALE_SECONDS,)))
        mine = [t for t in pending if _key(t) not in held][:size]
        conn.executemany(
            "INSERT OR REPLACE INTO claims VALUES (?, ?, ?)", [(_key(t), owner, now) for t in mine]
        )
    return mine


def _unclaim(path: Path, texts: list[str]) -> None:
    with closing(sqlite3.connect(path, timeout=120)) as conn, conn:
        conn.executemany("DELETE FROM claims WHERE key = ?", [(_key(t),) for t in texts])


def _shared_put(path: Path, vectors: dict[str, bytes]) -> None:
    with closing(sqlite3.connect(path, timeout=120)) as conn, conn:
        conn.executemany(
            "INSERT OR IGNORE INTO memo VALUES (?, ?)", [(_key(t), v) for t, v in vectors.items()]
        )


@pytest.fixture(scope="session", autouse=True)
def _embedding_memo_for_the_session(_shared_vectors: Path, pytestconfig: pytest.Config) -> Iterator[None]:
    """The memo is on for the whole session, so that session- and module-scoped fixtures (the synced
    template, per-module indexes) use it too: pytest sets those up before any function-scoped fixture, and a
    function-scoped patch left them embedding every text for real, in each worker."""
    import numpy as np
    from filelock import FileLock

    from charter.retrieval import MiniLMEmbedder

    real = MiniLMEmbedder._embed
    _REAL_EMBED.append(real)
    shared = _shared_vectors

    lock = str(shared) + ".lock"
    me = f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}:{os.getpid()}"

    def compute(self: MiniLMEmbedder, model: object, missing: list[str]) -> dict[str, object]:
        """Vectors for ``missing``: from the shared file, else embedded here — a batch at a time, each batch
        claimed under the lock first, so that two workers that need the same texts (both syncing the example
        at the start of a run) embed different batches at once instead of one waiting for the other."""
        fresh: dict[str, object] = {}
        pending = sorted(dict.fromkeys(missing), key=len)  # the embedder's own batching order: little padding
        while pending:
            with FileLock(lock):
                stored = _shared_get(shared, pending)
                fresh.update((t, np.frombuffer(v, dtype=np.float32).copy()) for t, v in stored.items())
                pending = [t for t in pending if t not in fresh]
                mine = _claim(shared, pending, me, self.batch_size)
            if mine:
                vectors = dict(zip(mine, real(self, model, mine), strict=True))
                with FileLock(lock):
                    _shared_put(
                        shared, {t: np.asarray(v, dtype=np.float32).tobytes() for t, v in vectors.items()}
                    )
                    _unclaim(shared, mine)
                fresh.update(vectors)
                pending = [t for t in pending if t not in vectors]
            elif pending:
                time.sleep(0.05)  # every text left is being embedded by another worker right now
        return fresh

    recording = pytestconfig.getoption("record_vectors")

    def memo_embed(
        self: MiniLMEmbedder, model: object, texts: list[str], *, precision: str = "float32"
    ) -> np.ndarray:
        if precision != "float32":  # questions in a reduced precision (opt-in): not recorded, always real
            return real(self, model, texts, precision=precision)
        if recording:
            _note_texts(shared, texts)
        got = {t: _EMBED_MEMO.get(t) for t in texts}
        missing = [t for t, v in got.items() if v is None]
        if missing:
            fresh = compute(self, model, missing)
            got.update(fresh)
            if len(_EMBED_MEMO) + len(fresh) > _EMBED_MEMO_MAX:
                _EMBED_MEMO.clear()
            _EMBED_MEMO.update(fresh)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i] = got[t]
        return out

    patch = pytest.MonkeyPatch()
    patch.setattr(MiniLMEmbedder, "_embed", memo_embed)
    yield
    patch.undo()


_REAL_EMBED: list[Any] = []


@pytest.fixture(autouse=True)
def _embedding_memo(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests about the embedder's own work (``@pytest.mark.real_embedding``) get the real method back."""
    if request.node.get_closest_marker("real_embedding"):
        from charter.retrieval import MiniLMEmbedder

        monkeypatch.setattr(MiniLMEmbedder, "_embed", _REAL_EMBED[0])


# The two tiers. ``make test`` runs everything; ``make test-fast`` (the edit loop) deselects ``slow``,
# ``postgres`` and ``browser``. A test is integration work — marked ``slow`` here, so that no module has to
# remember it — when it needs an example project synced with the real embedding model (the billing example, the
# gated copy, the order desk, a served copy), the real model itself, or real upstream MCP server processes
# (``governed``): the first such test in a process pays for the sync and the model. Modules and tests with real
# servers, processes, end-to-end example runs or heavy properties mark themselves.
SLOW_FIXTURES = frozenset(
    {
        "_synced_template",
        "synced_project",
        "server_project",
        "_gated_template",
        "_order_desk_template",
        "minilm",
        "governed",
    }
)


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    items[:] = _order.longest_first(items, _order.recorded())  # tests/_order.py: balances the xdist workers


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--record-module-times",
        action="store_true",
        help="rewrite tests/module_times.json (the order modules run in) from this run's durations",
    )

    parser.addoption(
        "--record-vectors",
        action="store_true",
        help="start from an empty embedding memo and rewrite tests/data/minilm-vectors.npz (tests/_vectors.py)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("record_module_times") and getattr(config, "workerinput", None) is None:
        config.pluginmanager.register(_order.Recorder(), "charter-module-times")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if not config.getoption("record_vectors") or getattr(config, "workerinput", None) is not None:
        return  # the controller (or the only process) writes the file, once every worker is done
    # the run root: xdist gives each worker <this process's base temp>/popen-gwN (its own code does the same)
    memo = config._tmp_path_factory.getbasetemp() / MEMO_FILE  # type: ignore[attr-defined]
    if memo.is_file():  # a failed run's vectors are as real as a passing one's (it may have asked for fewer)
        failed = "" if exitstatus == 0 else " (the run failed: it may not have asked for every text)"
        written = _vectors.record_from(memo)
        print(
            f"\n--record-vectors: {written} vectors written to {_vectors.SEED}{failed}"
            if written
            else f"\n--record-vectors: nothing was embedded; {_vectors.SEED} left as it was"
        )


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """The last thing each test process does: move every object into the collector's permanent generation, so
    that the interpreter's collection at exit does not walk the session's heap (~2 s for one module, several
    seconds for an xdist worker after a full run; the controller waits for every worker to exit). Nothing is
    lost: the process ends next, and files the tests write are closed by the tests."""
    gc.freeze()


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test inherits a database URL or charter path from the developer's shell."""
    monkeypatch.delenv("CHARTER_DATABASE_URL", raising=False)
    monkeypatch.delenv("CHARTER_FILE", raising=False)


@pytest.fixture
def unopened_project(tmp_path: Path) -> Path:
    """A fresh copy of the billing-support example without ``.charter``; returns the charter file's path."""
    return copy_example(tmp_path / "project")


def copy_example(dest: Path, database_from: Path | None = None) -> Path:
    """The billing example copied to ``dest`` (without ``.charter``); with ``database_from`` (the migrated
    ``sqlite_template``), also its database as ``project`` describes it. Returns the charter file's path."""
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".charter", "__pycache__"))
    if database_from is not None:
        folder = dest / ".charter"
        folder.mkdir(mode=0o700)
        folder.chmod(0o700)
        migrated_sqlite(database_from, folder / "charter.db")
    return dest / "charter.yaml"


@pytest.fixture
def project(tmp_path: Path, sqlite_template: Path) -> Path:  # noqa: F811  (the fixture)
    """A fresh copy of the billing-support example; returns the charter file's path. Its database is what the
    first ``Runtime.open`` creates before anything is written: an empty database migrated to head, private
    (``.charter`` 0700, ``charter.db`` 0600) — copied from ``sqlite_template`` instead of running every
    migration in every test. Keys are created on first use, as always. Tests about what the first open itself
    creates take ``unopened_project``."""
    return copy_example(tmp_path / "project", sqlite_template)


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> object:
        return json.loads(self.stdout)


def run_cli(*args: str, cwd: Path | None = None) -> CliResult:
    """Run ``charter`` in-process exactly as the console script does; captures stdout, stderr, exit code."""
    from charter.cli import main

    out, err = StringIO(), StringIO()
    old_out, old_err, old_cwd = sys.stdout, sys.stderr, Path.cwd()
    sys.stdout, sys.stderr = out, err
    code = 0
    try:
        if cwd:
            os.chdir(cwd)
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.stdout, sys.stderr = old_out, old_err
        os.chdir(old_cwd)
    return CliResult(code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli() -> Iterator[object]:
    yield run_cli


@pytest.fixture(scope="session")
def _synced_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The billing example, synced once per test session with the real MiniLM embedder, prompt approved.

    Quick local runs: ``CHARTER_TEST_SYNCED_DIR`` names such a folder already synced (copied per test)."""
    cached = os.environ.get("CHARTER_TEST_SYNCED_DIR")
    if cached and (Path(cached) / "charter.yaml").is_file():
        return Path(cached)
    # Built once per run, not once per xdist worker (``run_shared``). A worker that finds another building it
    # helps instead of idling: it syncs a scratch copy, whose embedding batches the shared memo splits between
    # the two (``_embedding_memo_for_the_session``), then waits.
    return run_shared(
        tmp_path_factory,
        "synced-template",
        lambda dest: _sync_copy(dest, approve=True),
        meanwhile=lambda: _sync_copy(tmp_path_factory.mktemp("helping-sync") / "project"),
    )


def run_shared(
    tmp_path_factory: pytest.TempPathFactory,
    name: str,
    build: Callable[[Path], None],
    *,
    meanwhile: Callable[[], None] | None = None,
) -> Path:
    """``<run root>/<name>/project``, built once per test run — not once per xdist worker — by the first worker
    that asks (``build(dest)``, under a file lock; the workers' base temp folders share a parent unique to the
    run). The others wait for it and find it done, running ``meanwhile`` first if it is still being built.
    Tests only ever copy it. An interrupted build (its worker died) is thrown away and built again."""
    from filelock import FileLock, Timeout

    root = _run_root(tmp_path_factory)
    dest, done = root / name / "project", root / name / "done"
    lock = FileLock(str(root / f"{name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if meanwhile is not None and not done.is_file():
            meanwhile()
        lock.acquire()
    try:
        if not done.is_file():
            shutil.rmtree(dest.parent, ignore_errors=True)
            dest.parent.mkdir(parents=True)
            build(dest)
            done.touch()
    finally:
        lock.release()
    return dest


def _sync_copy(dest: Path, *, approve: bool = False) -> None:
    """Copy the billing example to ``dest`` and sync it; ``approve``: approve its prompts (as Lena)."""
    from charter.models import PromptRegistry
    from charter.runtime import Runtime
    from charter.sources import sync_sources

    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".charter", "__pycache__"))
    rt = Runtime.open(dest / "charter.yaml")
    try:
        sync_sources(rt)
        if approve:
            registry = PromptRegistry(rt.charter, rt.store, audit=lambda **e: rt.audit.append(**e))
            lena = rt.charter.principal("lena")
            for prompt in rt.spec.prompts:
                registry.approve(prompt.name, prompt.active, principal=lena)
    finally:
        rt.close()


@pytest.fixture
def synced_project(_synced_template: Path, tmp_path: Path) -> Path:
    """A private copy of the synced example (database included); returns the charter path."""
    dest = tmp_path / "synced"
    shutil.copytree(_synced_template, dest)
    for key in (dest / ".charter" / "keys").glob("*"):
        key.chmod(0o600)
    return dest / "charter.yaml"


def require(module: str, hint: str) -> object:
    """Import a test dependency or FAIL (never skip) with how to install it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"{module} is required for this test ({hint}); run scripts/setup. ({exc})", pytrace=False)
