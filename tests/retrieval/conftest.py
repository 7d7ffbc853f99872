"""Fixtures for retrieval tests: a fast deterministic embedder, a fresh store, and an index."""

from __future__ import annotations

import hashlib
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import make_url

from charter.retrieval import Index, embedder
from charter.store import Store, open_store
from tests._pg import PgCluster

DIM = 64


@embedder("test-hash")
class HashEmbedder:
    """Hashing-trick bag of words: deterministic, fast, and similar texts get similar vectors."""

    name = "test-hash@1"
    dim = DIM

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), DIM), dtype=np.float32)
        for i, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                h = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
                out[i, h % DIM] += 1.0 if (h >> 16) & 1 else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        norms[norms == 0] = 1.0
        return (out / norms).astype(np.float32)


@pytest.fixture
def store(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Store]:
    """A fresh, migrated store on each backend: a SQLite file, or a PostgreSQL database (``tests/_pg.py``)."""
    if backend == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'index.db'}")
        yield s
        s.dispose()
        return
    cluster: PgCluster = request.getfixturevalue("pg_cluster")
    url = _copy_pg_database(cluster, request.getfixturevalue("_pg_migrated_template"))
    s = open_store(url)
    yield s
    s.dispose()
    _drop_pg_database(cluster, url)


@pytest.fixture
def index(store: Store) -> Index:
    return Index(store, HashEmbedder())


@pytest.fixture(scope="session")
def _example_template(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, tuple[frozenset[str], str]]]:
    """The example's documents indexed once per session (with the hash embedder) into a template database."""
    from tests.conftest import EXAMPLE
    from tests.retrieval._example import index_example

    folder = tmp_path_factory.mktemp("example-index")
    s = open_store(f"sqlite:///{folder / 'template.db'}")
    truth = index_example(Index(s, HashEmbedder()), EXAMPLE / "charter.yaml")
    with s.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    s.dispose()
    return folder / "template.db", truth


def _copy_pg_database(cluster: PgCluster, template: str) -> str:
    """A new database copied from ``template`` (no session may be connected to the template)."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(cluster.server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {template}")  # type: ignore[arg-type]
    return cluster.url(name)


def _drop_pg_database(cluster: PgCluster, url: str) -> None:
    import psycopg

    with psycopg.connect(cluster.server.get_uri(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {make_url(url).database} WITH (FORCE)")  # type: ignore[arg-type]


def _new_pg_database(cluster: PgCluster) -> str:
    import psycopg

    name = "t_" + uuid.uuid4().hex[:16]
    with psycopg.connect(cluster.server.get_uri(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    return cluster.url(name)


@pytest.fixture(scope="session")
def _pg_migrated_template(pg_cluster: PgCluster) -> str:
    """An empty database migrated to head, copied by every PostgreSQL ``store`` (a file copy, ~50 ms)."""
    url = _new_pg_database(pg_cluster)
    open_store(url).dispose()
    return str(make_url(url).database)


@pytest.fixture(scope="session")
def _example_pg_template(pg_cluster: PgCluster) -> str:
    """The example indexed once per session into a PostgreSQL database used as a ``CREATE DATABASE`` template."""
    from tests.conftest import EXAMPLE
    from tests.retrieval._example import index_example

    url = _new_pg_database(pg_cluster)
    s = open_store(url)
    index_example(Index(s, HashEmbedder()), EXAMPLE / "charter.yaml")
    s.dispose()
    return str(make_url(url).database)


@pytest.fixture
def example_index(
    backend: str, _example_template, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[tuple[Index, dict[str, tuple[frozenset[str], str]]]]:
    """A private copy of the indexed example on each backend: tests may change ACLs and delete documents."""
    template, truth = _example_template
    if backend == "sqlite":
        db = tmp_path / "example.db"
        shutil.copyfile(template, db)
        url = f"sqlite:///{db}"
    else:
        cluster: PgCluster = request.getfixturevalue("pg_cluster")
        name = request.getfixturevalue("_example_pg_template")
        url = _copy_pg_database(cluster, name)
    s = open_store(url)
    yield Index(s, HashEmbedder()), truth
    s.dispose()
    if backend != "sqlite":
        _drop_pg_database(cluster, url)


@pytest.fixture(scope="module")
def pg_property_index(request: pytest.FixtureRequest) -> Iterator[Index]:
    """One migrated PostgreSQL database (hash embedder) for a module's generated examples: each example
    writes its own source."""
    cluster = request.getfixturevalue("pg_cluster")
    url = _copy_pg_database(cluster, request.getfixturevalue("_pg_migrated_template"))
    index = Index(open_store(url), HashEmbedder())
    yield index
    index.store.dispose()
    _drop_pg_database(cluster, url)
