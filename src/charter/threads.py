"""One thread policy per process, so that an embedding and a vector scan never oversubscribe the cores.

Three pools of native threads can run inside a Charter process: numpy's BLAS (OpenBLAS; the dense scan of
the in-memory search is one matrix-vector product), torch's OpenMP pool (the embedding model) and the Python
threads of the server's request pool. BLAS and OpenMP threads *spin* while they wait for work, so two pools
of "one thread per core" in one process — or in several worker processes on one machine — fight over the
same cores: a 10-token query embedding measured 515 ms instead of 38 ms at load 10 on 2 cores, and a
100,000-chunk search 150–168 ms instead of 58–69 ms p95 with numpy's default thread count
(``docs/benchmarks.md``, *Thread discipline*).

The policy, applied once per process by :func:`apply_process_policy` (``Runtime.open`` calls it):

* **BLAS: one thread** (``CHARTER_BLAS_THREADS``, default 1). A search's matrix-vector product is bound by
  memory bandwidth, not arithmetic; concurrency comes from serving several requests at once, not from
  splitting one product.
* **torch, query-sized calls: one thread** (at most ``SINGLE_THREAD_MAX_TEXTS`` texts; see
  ``charter.retrieval``'s embedder): a query is too short to split.
* **torch, batches (sync): ``CHARTER_TORCH_THREADS``**, default torch's own (one per core); ``charter serve
  --workers N`` sets it to ``cores // N`` so that N workers embedding at once use each core once.
"""

from __future__ import annotations

import os
import threading

from charter.errors import UsageError

BLAS_ENV = "CHARTER_BLAS_THREADS"
TORCH_ENV = "CHARTER_TORCH_THREADS"

_applied = False
_lock = threading.Lock()


def _positive_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        n = int(value)
    except ValueError:
        raise UsageError(f"{name} must be a whole number, got {value!r}") from None
    if n < 1:
        raise UsageError(f"{name} must be at least 1, got {n}")
    return n


def blas_threads() -> int:
    """Threads numpy's BLAS may use in this process (``CHARTER_BLAS_THREADS``, default 1)."""
    n = _positive_int(BLAS_ENV, 1)
    assert n is not None
    return n


def torch_threads() -> int | None:
    """torch's thread count for batch embedding (``CHARTER_TORCH_THREADS``), or None for torch's default."""
    return _positive_int(TORCH_ENV, None)


def worker_torch_threads(workers: int) -> int:
    """torch threads per server worker so that ``workers`` processes embedding at once use each core once."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))


def apply_process_policy() -> None:
    """Limit numpy's BLAS pool to :func:`blas_threads` (once per process; later calls do nothing).

    Raises :class:`UsageError` for a malformed ``CHARTER_BLAS_THREADS``. Libraries loaded *after* the call
    (e.g. a BLAS that torch loads later) are not limited by it; numpy's is loaded by then.
    """
    global _applied
    if _applied:
        return
    n = blas_threads()
    with _lock:
        if _applied:
            return
        import numpy  # noqa: F401  (loads the BLAS library the limit applies to)
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n, user_api="blas")
        _applied = True
