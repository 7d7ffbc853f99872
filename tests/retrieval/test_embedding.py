"""Embedders: the registry, and the real all-MiniLM-L6-v2 loaded offline from its package."""

from __future__ import annotations

import numpy as np
import pytest

from charter.errors import UsageError
from charter.retrieval import Embedder, Index, get_embedder, registered_embedders
from charter.sources import Document
from charter.spec._schema import Chunking

pytestmark = pytest.mark.real_embedding  # measures or inspects the embedder's own work


def test_registry() -> None:
    assert {"minilm", "test-hash"} <= set(registered_embedders())
    with pytest.raises(UsageError, match=r"registered: .*minilm"):
        get_embedder("nope")
    assert isinstance(get_embedder("test-hash"), Embedder)


@pytest.fixture(scope="module")
def minilm() -> Embedder:
    return get_embedder("minilm")


def test_minilm_offline_normalised_and_order_preserving(minilm: Embedder) -> None:
    texts = [
        "How do I get a refund for my annual plan?",
        "refund",
        "Annual plans are refunded pro rata within 30 days of purchase.",
        "The weather in Dublin is mild.",
    ]
    vecs = minilm.embed(texts)
    assert vecs.shape == (4, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    # batches are sorted by length internally; results come back in input order
    assert np.allclose(minilm.embed([texts[1]])[0], vecs[1], atol=1e-4)
    assert vecs[0] @ vecs[2] > vecs[0] @ vecs[3] + 0.2


def test_real_minilm_search_and_cache(store, minilm: Embedder) -> None:
    index = Index(store, minilm)
    chunking = Chunking(max_tokens=128, overlap=0)
    docs = [
        Document(
            "s",
            "refunds.md",
            "Refunds",
            "# Refunds\n\nAnnual plans are refunded pro rata within 30 days.",
            "markdown",
        ),
        Document(
            "s",
            "card.md",
            "Update your card",
            "# Card\n\nChange the card used for payments in Settings.",
            "markdown",
        ),
    ]
    for d in docs:
        assert index.upsert_document(d, frozenset({"public"}), chunking) == "added"
    hits = index.search(frozenset({"public"}), "can I get my money back for a yearly subscription", k=2)
    assert hits[0].doc_id == "refunds.md"
    assert hits[0].dense > hits[1].dense
    # re-indexing the same text elsewhere costs no embedding: the cache is keyed by (model, text hash)
    from charter.store.tables import embeddings

    with store.connect() as conn:
        before = conn.execute(embeddings.select()).all()
    index.upsert_document(
        Document("t", "copy.md", "Refunds", docs[0].text, "markdown"), frozenset({"public"}), chunking
    )
    with store.connect() as conn:
        assert len(conn.execute(embeddings.select()).all()) == len(before)


def test_free_memory_is_handed_back_on_glibc() -> None:
    """A long sync's RSS stays flat only if the batches' freed memory is returned (``malloc_trim``): on a
    glibc system the function must be found, not silently skipped."""
    import platform

    from charter.retrieval._embedding import _malloc_trim, release_free_memory

    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        assert _malloc_trim is not None
    release_free_memory()  # never raises
