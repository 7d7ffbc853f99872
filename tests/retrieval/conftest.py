"""Fixtures for retrieval tests: a fast deterministic embedder, a fresh store, and an index."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from charter.retrieval import Index, embedder
from charter.store import Store, open_store

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
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'index.db'}")
    yield s
    s.dispose()


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


@pytest.fixture
def example_index(
    _example_template, tmp_path: Path
) -> Iterator[tuple[Index, dict[str, tuple[frozenset[str], str]]]]:
    """A private copy of the indexed example: tests may change ACLs and delete documents."""
    template, truth = _example_template
    db = tmp_path / "example.db"
    shutil.copyfile(template, db)
    s = open_store(f"sqlite:///{db}")
    yield Index(s, HashEmbedder()), truth
    s.dispose()
