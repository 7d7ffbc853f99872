"""Query-sized embeddings run on one torch thread and restore the process setting afterwards, also when
calls overlap; ``CHARTER_TORCH_THREADS`` sets the batch thread count and rejects junk."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from charter.errors import UsageError
from charter.retrieval import _embedding as emb
from charter.retrieval import get_embedder

pytestmark = pytest.mark.real_embedding  # measures or inspects the embedder's own work


def test_query_embedding_is_single_threaded_and_restores_the_setting() -> None:

    e = get_embedder("minilm")
    model = e._load()  # first: loading applies CHARTER_TORCH_THREADS (scripts/test sets it per worker)
    torch.set_num_threads(2)
    seen: list[int] = []
    original = model.encode

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(torch.get_num_threads())
        return original(*args, **kwargs)

    model.encode = spy
    try:
        one = e.embed(["how long does a refund take"])
        assert seen == [1] and torch.get_num_threads() == 2
        seen.clear()
        batch = e.embed([f"refund question number {i}" for i in range(emb.SINGLE_THREAD_MAX_TEXTS + 1)])
        assert seen == [2] and batch.shape == (emb.SINGLE_THREAD_MAX_TEXTS + 1, 384)
    finally:
        model.encode = original
    # same vector whatever the thread count
    assert np.allclose(one[0], e.embed(["how long does a refund take", "x"] * 5)[0], atol=1e-5)


def test_overlapping_query_embeddings_restore_the_thread_count_once() -> None:

    e = get_embedder("minilm")
    e._load()  # loading applies CHARTER_TORCH_THREADS; the count under test is set after it
    torch.set_num_threads(2)
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(5):
                e.embed([f"question {i} {j}"])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("value", ["zero", "0", "-3", "1.5"])
def test_bad_thread_setting_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CHARTER_TORCH_THREADS", value)
    with pytest.raises(UsageError, match="CHARTER_TORCH_THREADS"):
        emb._apply_thread_setting()


def test_thread_setting_applies(monkeypatch: pytest.MonkeyPatch) -> None:

    before = torch.get_num_threads()
    monkeypatch.setenv("CHARTER_TORCH_THREADS", "1")
    try:
        emb._apply_thread_setting()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
