"""The recorded MiniLM vectors the suite's embedding memo starts from (tests/_vectors.py) are the installed
model's: same weights, and a random sample of the recorded texts embedded again gives the recorded vectors."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import _vectors, conftest


@pytest.mark.real_embedding
def test_the_recorded_vectors_are_what_the_installed_model_returns() -> None:
    from charter.retrieval import get_embedder

    assert _vectors.SEED.is_file(), f"{_vectors.SEED} is missing: write it with `{_vectors.REFRESH}`"
    model, texts, vectors = _vectors.read()
    assert model == _vectors.model_digest(), (
        f"{_vectors.SEED} was recorded with other MiniLM weights ({model[:12]}…, installed "
        f"{_vectors.model_digest()[:12]}…): the suite would embed every text again; rewrite it with "
        f"`{_vectors.REFRESH}`"
    )
    assert len(texts) == len(set(texts)) > 1000
    seed = int.from_bytes(os.urandom(4), "big")
    picked = random.Random(seed).sample(range(len(texts)), 24)
    fresh = get_embedder("minilm").embed([texts[i] for i in picked])
    for row, i in enumerate(picked):
        assert np.abs(fresh[row] - vectors[i]).max() < 1e-4, (seed, texts[i][:80])
        assert float(fresh[row] @ vectors[i]) > 0.99999, (seed, texts[i][:80])


def _put(memo_file: Path, texts: list[str]) -> None:
    conftest._shared_put(memo_file, {t: np.full(4, len(t), dtype=np.float32).tobytes() for t in texts})


def test_a_recording_keeps_fixed_texts_and_drops_hypothesis_examples(memo_file: Path, tmp_path: Path) -> None:
    generated: list[str] = []

    @settings(max_examples=20, database=None)
    @given(st.text(min_size=1))
    def inside_an_example(text: str) -> None:
        generated.append("generated " + text)
        conftest._note_texts(memo_file, ["generated " + text])

    inside_an_example()
    fixed = ["A refund takes 5–10 business days.", "Invoices are issued on the 1st.", "généré \u200b"]
    conftest._note_texts(memo_file, fixed + fixed[:1])  # asked twice: kept once
    conftest._note_texts(memo_file, generated[:1])  # also asked by a fixture later: worth keeping after all
    _put(memo_file, fixed + generated)

    out = tmp_path / "seed.npz"
    assert _vectors.record_from(memo_file, out) == len(fixed) + 1
    model, texts, vectors = _vectors.read(out)
    assert model == _vectors.model_digest()
    assert sorted(texts) == sorted([*fixed, generated[0]])
    for text, vector in zip(texts, vectors, strict=True):
        assert vector.tolist() == [float(len(text))] * 4  # each text with its own vector


def test_an_empty_recording_writes_nothing(memo_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "seed.npz"
    assert _vectors.record_from(memo_file, out) == 0
    assert not out.exists()
