"""Fixtures for retrieval tests: a fast deterministic embedder, a fresh store, and an index."""

from __future__ import annotations

import hashlib
import re
import shutil
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
    url = cluster.create_database()
    s = open_store(url)
    yield s
    s.dispose()
    cluster.drop_database(url)


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


@pytest.fixture(scope="session")
def _example_pg_template(pg_cluster: PgCluster) -> str:
    """The example indexed once per session into a PostgreSQL database used as a ``CREATE DATABASE`` template."""
    from tests.conftest import EXAMPLE
    from tests.retrieval._example import index_example

    url = pg_cluster.create_database(migrated=False)
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
        url = cluster.copy_database(name)
    s = open_store(url)
    yield Index(s, HashEmbedder()), truth
    s.dispose()
    if backend != "sqlite":
        cluster.drop_database(url)


@pytest.fixture(scope="module")
def pg_property_index(request: pytest.FixtureRequest) -> Iterator[Index]:
    """One migrated PostgreSQL database (hash embedder) for a module's generated examples: each example
    writes its own source."""
    cluster = request.getfixturevalue("pg_cluster")
    url = cluster.create_database()
    index = Index(open_store(url), HashEmbedder())
    yield index
    index.store.dispose()
    cluster.drop_database(url)
