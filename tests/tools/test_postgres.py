"""The same guarantees on a real PostgreSQL (started by the fixture with ``pgserver``): exactly-once under
concurrent approvals and an exact rate limit under concurrent proposals. Fails (does not skip) when pgserver
or psycopg is missing."""

from __future__ import annotations

import importlib.util
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from charter.errors import Conflict, Denied
from charter.review import decide
from charter.runtime import Runtime
from charter.tools import list_actions, propose
from tests.tools._helpers import REFUND_50, billing_state

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    for module in ("pgserver", "psycopg"):
        if importlib.util.find_spec(module) is None:
            pytest.fail(f"{module} is not installed: pip install 'pgserver>=0.1.4' 'psycopg[binary]>=3.1.19'")
    import pgserver

    server = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="stop")
    yield server
    server.cleanup()


@pytest.fixture
def pg_rt(pg_server: object, project: Path) -> Iterator[Runtime]:
    name = "t_" + uuid.uuid4().hex[:12]
    pg_server.psql(f"CREATE DATABASE {name};")  # type: ignore[attr-defined]
    url = (
        str(pg_server.get_uri())  # type: ignore[attr-defined]
        .replace("postgresql://", "postgresql+psycopg://")
        .replace("/postgres?", f"/{name}?")
    )
    rt = Runtime.open(project, database_url=url)
    assert not rt.store.is_sqlite
    yield rt
    rt.close()


def _race(n: int, fn: Callable[[], str]) -> list[str]:
    barrier = threading.Barrier(n)
    outcomes: list[str] = []
    lock = threading.Lock()

    def run() -> None:
        barrier.wait()
        result = fn()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=run) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(outcomes)


def test_postgres_twenty_concurrent_approvals_execute_once(pg_rt: Runtime, project: Path) -> None:
    proposal = propose(pg_rt, "ana", "issue_refund", REFUND_50)

    def approve() -> str:
        try:
            return decide(pg_rt, proposal.id, "lena", "approve").status
        except Conflict:
            return "conflict"

    assert _race(20, approve) == ["conflict"] * 19 + ["executed"]
    assert len(billing_state(project)["refunds"]) == 1
    assert pg_rt.audit.verify().ok


def test_postgres_rate_limit_is_exact_under_concurrency(pg_rt: Runtime) -> None:
    def call() -> str:
        try:
            return propose(pg_rt, "ana", "issue_refund", REFUND_50).status
        except Denied:
            return "refused"

    assert _race(15, call) == ["pending"] * 10 + ["refused"] * 5  # issue_refund: 10 per hour
    assert len(list_actions(pg_rt, requester="ana")) == 10
