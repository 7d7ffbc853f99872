"""The test suite's shared embedding memo (tests/conftest.py): two workers that need the same texts split them
into claimed batches, a claim is released with its vectors, and a claim left by a dead worker goes stale."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests import conftest


@pytest.fixture
def memo(memo_file: Path) -> Path:
    return memo_file


def test_two_owners_claim_disjoint_batches_until_nothing_is_left(memo: Path) -> None:
    texts = [f"text {i}" for i in range(10)]
    a = conftest._claim(memo, texts, "gw0", 4)
    b = conftest._claim(memo, texts, "gw1", 4)
    c = conftest._claim(memo, texts, "gw0", 4)
    assert len(a) == len(b) == 4 and len(c) == 2
    assert sorted(a + b + c) == sorted(texts)
    assert conftest._claim(memo, texts, "gw1", 4) == []  # all claimed: the caller waits for the vectors
    conftest._shared_put(memo, {t: np.ones(3, dtype=np.float32).tobytes() for t in a})
    conftest._unclaim(memo, a)
    assert conftest._claim(memo, a, "gw1", 4) == a  # released (the caller finds their vectors first)
    assert set(conftest._shared_get(memo, texts)) == set(a)


def test_a_stale_claim_is_taken_over(memo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    texts = ["left by a dead worker"]
    assert conftest._claim(memo, texts, "gw0", 4) == texts
    assert conftest._claim(memo, texts, "gw1", 4) == []
    later = time.time() + conftest.CLAIM_STALE_SECONDS + 1
    monkeypatch.setattr(conftest.time, "time", lambda: later)
    assert conftest._claim(memo, texts, "gw1", 4) == texts


def test_concurrent_claimers_never_share_a_text(memo: Path) -> None:
    from filelock import FileLock

    texts = [f"t{i}" for i in range(300)]
    got: dict[str, list[str]] = {"a": [], "b": [], "c": []}

    def worker(name: str) -> None:
        while True:
            with FileLock(str(memo) + ".lock"):
                mine = conftest._claim(memo, texts, name, 7)
            if not mine:
                return
            got[name] += mine

    threads = [threading.Thread(target=worker, args=(n,)) for n in got]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [t for v in got.values() for t in v]
    assert sorted(claimed) == sorted(texts)  # each text exactly once
