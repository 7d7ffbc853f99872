"""The server's per-principal rate limit: in-process, and shared through the store (every worker counts in
one table). The shared limiter runs on SQLite and on PostgreSQL (``db_url``)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from charter.server._auth import RateLimiter
from charter.server._errors import RateLimited
from charter.store import Store, open_store
from charter.store.tables import rate_limit_windows


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    st = open_store(db_url)
    yield st
    st.dispose()


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _outcomes(limiter: RateLimiter, key: str, n: int) -> list[str]:
    barrier = threading.Barrier(n)
    out: list[str] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        try:
            limiter.check(key)
            result = "ok"
        except RateLimited:
            result = "limited"
        with lock:
            out.append(result)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(out)


def test_the_default_is_shared_on_postgresql_only(store: Store) -> None:
    assert RateLimiter(5, store=store).shared is (not store.is_sqlite)
    assert not RateLimiter(5).shared


def test_shared_limit_is_exact_under_concurrency_and_per_principal(store: Store) -> None:
    clock = Clock(1_000_000 * 60 + 5.0)
    a = RateLimiter(7, store=store, shared=True, clock=clock)
    b = RateLimiter(7, store=store, shared=True, clock=clock)  # another worker, same database
    assert _outcomes(a, "ana", 12) == ["limited"] * 5 + ["ok"] * 7
    with pytest.raises(RateLimited) as refused:
        b.check("ana")
    assert 1 <= refused.value.retry_after <= 61
    b.check("ben")  # a principal of their own
    with store.connect() as conn:
        hits = conn.execute(
            select(rate_limit_windows.c.hits).where(rate_limit_windows.c.key == "ana")
        ).scalar()
    assert hits == 7  # refused requests were rolled back, not counted


def test_the_window_slides_over_the_previous_minute(store: Store) -> None:
    clock = Clock(2_000_000 * 60 + 50.0)
    limiter = RateLimiter(10, store=store, shared=True, clock=clock)
    for _ in range(10):
        limiter.check("ana")
    clock.t += 15.0  # 5 s into the next minute: 10 * 55/60 ≈ 9.2 of the previous minute still count
    with pytest.raises(RateLimited):
        limiter.check("ana")
    clock.t += 30.0  # 35 s in: 10 * 25/60 ≈ 4.2 count, so 5 more fit
    for _ in range(5):
        limiter.check("ana")
    with pytest.raises(RateLimited):
        limiter.check("ana")
    clock.t += 120.0  # two minutes later everything has expired, and old windows were swept
    limiter.check("ana")
    with store.connect() as conn:
        minutes = conn.execute(select(func.count()).select_from(rate_limit_windows)).scalar()
    assert minutes == 1


def test_in_process_limiter_is_a_sliding_window() -> None:
    limiter = RateLimiter(3)
    for _ in range(3):
        limiter.check("ana")
    with pytest.raises(RateLimited):
        limiter.check("ana")
    limiter.check("ben")
    RateLimiter(0).check("ana")  # 0 disables the limit
