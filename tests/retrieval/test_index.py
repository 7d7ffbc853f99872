"""Index writes: incremental upserts, ACL-only updates without re-embedding, ordering, atomicity."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from charter.retrieval import Index
from charter.sources import Document, acl_hash
from charter.spec._schema import Chunking
from charter.store import utcnow
from tests.retrieval.conftest import HashEmbedder

CHUNKING = Chunking(max_tokens=64, overlap=0)
PUBLIC = frozenset({"public"})


class CountingEmbedder(HashEmbedder):
    """The hash embedder, counting the texts it embeds."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls.extend(texts)
        return super().embed(texts)


def _doc(
    text: str = "# Plans\n\nTeam and Business plans.\n\n## Prices\n\nTeam costs 12 dollars.",
    doc_id: str = "a",
    **kw,
) -> Document:  # type: ignore[no-untyped-def]
    return Document(source_id="s", doc_id=doc_id, title="Plans", text=text, format="markdown", **kw)


def test_upsert_lifecycle_and_states(store) -> None:
    emb = CountingEmbedder()
    index = Index(store, emb)
    v0 = index.version
    assert index.upsert_document(_doc(), PUBLIC, CHUNKING) == "added"
    n_embedded = len(emb.calls)
    assert n_embedded == 2
    v1 = index.version
    assert v1 != v0
    assert index.upsert_document(_doc(), PUBLIC, CHUNKING) == "unchanged"
    assert index.version == v1
    # ACL only: no re-embedding, no re-chunking
    assert index.upsert_document(_doc(), frozenset({"group:support"}), CHUNKING) == "acl_changed"
    assert len(emb.calls) == n_embedded
    assert index.current_acl("s", "a") == frozenset({"group:support"})
    assert index.version != v1
    # content change: only new texts are embedded
    assert (
        index.upsert_document(_doc(_doc().text + "\n\n## More\n\nNew section."), PUBLIC, CHUNKING)
        == "updated"
    )
    assert len(emb.calls) == n_embedded + 1
    state = index.document_states("s")["a"]
    assert state.chunk_count == 3 and state.acl_hash == acl_hash(PUBLIC) and not state.private_by_default
    assert index.counts() == {"s": {"documents": 1, "chunks": 3, "private_by_default": 0}}
    # new chunking settings re-chunk (cached vectors are reused where texts are equal)
    assert (
        index.upsert_document(
            _doc(_doc().text + "\n\n## More\n\nNew section."), PUBLIC, Chunking(max_tokens=256, overlap=0)
        )
        == "updated"
    )
    assert (
        index.upsert_document(_doc(doc_id="b"), frozenset({"user:lena"}), CHUNKING, private_by_default=True)
        == "added"
    )
    assert index.counts()["s"]["private_by_default"] == 1
    assert index.document_states("other") == {}


def test_older_content_write_never_clobbers_newer_acl(store) -> None:
    index = Index(store, HashEmbedder())
    t0 = utcnow()
    index.upsert_document(_doc(), PUBLIC, CHUNKING, seen_at=t0)
    # an ACL change read at t2 lands first ...
    index.update_acl("s", "a", frozenset({"group:finance"}), seen_at=t0 + timedelta(seconds=2))
    # ... then a slow content update whose data (content and ACL) was read at t1 < t2
    result = index.upsert_document(
        _doc("# Plans\n\nChanged text."), PUBLIC, CHUNKING, seen_at=t0 + timedelta(seconds=1)
    )
    assert result == "updated"
    assert index.current_acl("s", "a") == frozenset({"group:finance"})  # the newer ACL survives
    hits = index.search(frozenset({"group:finance"}), "changed text", k=5)
    assert hits and hits[0].text == "Changed text."
    assert index.search(PUBLIC, "changed text", k=5) == []
    # an older ACL-only write is ignored too; an older content write is ignored entirely
    index.update_acl("s", "a", PUBLIC, seen_at=t0 + timedelta(seconds=1))
    assert index.current_acl("s", "a") == frozenset({"group:finance"})
    assert index.upsert_document(_doc("# Plans\n\nStale text."), PUBLIC, CHUNKING, seen_at=t0) == "unchanged"
    assert index.search(frozenset({"group:finance"}), "text", k=5)[0].text == "Changed text."


def test_update_and_delete_unknown_documents(store) -> None:
    index = Index(store, HashEmbedder())
    assert index.update_acl("s", "missing", PUBLIC) is False
    assert index.delete_document("s", "missing") is False
    assert index.current_acl("s", "missing") is None


def test_embedder_failure_leaves_document_untouched(store) -> None:
    class Failing(HashEmbedder):
        def embed(self, texts: list[str]) -> np.ndarray:
            raise RuntimeError("model crashed")

    Index(store, HashEmbedder()).upsert_document(_doc(), PUBLIC, CHUNKING)
    with pytest.raises(RuntimeError):
        Index(store, Failing()).upsert_document(
            _doc("# Plans\n\nBrand new words here."), frozenset({"x:y"}), CHUNKING
        )
    index = Index(store, HashEmbedder())
    assert index.current_acl("s", "a") == PUBLIC
    assert index.document_states("s")["a"].chunk_count == 2
    assert index.upsert_document(_doc(), PUBLIC, CHUNKING) == "unchanged"


@pytest.mark.slow  # a second process killed with SIGKILL: multi-process, full suite only
def test_kill_9_mid_sync_leaves_consistent_index(tmp_path: Path) -> None:
    """A process indexing many documents is killed with SIGKILL; every document is wholly there or absent."""
    db = tmp_path / "kill.db"
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from tests.retrieval.conftest import HashEmbedder
        from charter.retrieval import Index
        from charter.sources import Document
        from charter.spec._schema import Chunking
        from charter.store import open_store
        index = Index(open_store("sqlite:///{db}"), HashEmbedder())
        for i in range(100000):
            text = "\\n\\n".join(f"Paragraph {{j}} of document {{i}} about invoices." for j in range(8))
            index.upsert_document(Document("s", f"d{{i:06d}}", "T", text, "text"), frozenset({{"public"}}),
                                  Chunking(max_tokens=32, overlap=0))
            if i == 20:
                print("ready", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    import time

    time.sleep(0.5)
    proc.kill()
    proc.wait()
    from charter.store import open_store

    store = open_store(f"sqlite:///{db}")
    index = Index(store, HashEmbedder())
    states = index.document_states("s")
    assert len(states) > 20
    from sqlalchemy import func, select

    from charter.store.tables import acl, chunks, documents

    with store.connect() as conn:
        per_doc = dict(
            conn.execute(select(chunks.c.doc_pk, func.count()).group_by(chunks.c.doc_pk)).tuples().all()
        )
        docs = conn.execute(select(documents.c.id, documents.c.chunk_count)).all()
        with_acl = set(conn.execute(select(acl.c.doc_pk)).scalars())
    assert docs and all(per_doc.get(d.id, 0) == d.chunk_count > 1 for d in docs)
    assert {d.id for d in docs} == with_acl
    hits = index.search(PUBLIC, "invoices", k=10)
    assert len(hits) == 10
    store.dispose()
