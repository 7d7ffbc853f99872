"""Budget reservation on a real PostgreSQL (``SELECT ... FOR UPDATE`` on the workflow-month row), started by
the fixture with ``pgserver``. Fails (does not skip) when pgserver or psycopg is missing."""

from __future__ import annotations

import importlib.util
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from charter.errors import BudgetExceeded
from charter.models import (
    Passage,
    ScriptedModel,
    ScriptedReply,
    build_gateway,
    estimate_request_tokens,
    usd_to_nano,
)

from .conftest import edit_charter

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
def pg_url(pg_server) -> str:  # type: ignore[no-untyped-def]
    name = "t_" + uuid.uuid4().hex[:12]
    pg_server.psql(f"CREATE DATABASE {name};")
    return (
        str(pg_server.get_uri())
        .replace("postgresql://", "postgresql+psycopg://")
        .replace("/postgres?", f"/{name}?")
    )


PASSAGES = [Passage("S1", "Refunds reach the card within 5 to 10 business days.", audience="customer")]


def test_postgres_budget_of_n_requests_admits_exactly_n_of_50_concurrent(
    scripted_project: Path, open_runtime, pg_url
):
    path = edit_charter(scripted_project, {"model": {"fallback": None}})
    rt = open_runtime(path, database_url=pg_url)
    assert not rt.store.is_sqlite
    model = ScriptedModel("primary")
    gw = build_gateway(rt, primary=model)
    request = gw.build_request("How long does a refund take?", PASSAGES)
    model.default = ScriptedReply(
        "ok [S1].", input_tokens=estimate_request_tokens(request), output_tokens=request.max_output_tokens
    )
    from charter.models import estimate_max_cost_nano
    from charter.spec._schema import Prices

    from .conftest import PRICES

    nano = estimate_max_cost_nano(request, Prices(**PRICES))
    admit = 7
    edit_charter(path, {"budgets": {"monthly_usd": round(nano * admit / 1e9, 9)}})
    rt = open_runtime(path, database_url=pg_url, approve=False)
    gw = build_gateway(rt, primary=model)

    barrier = threading.Barrier(50)
    outcomes: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        barrier.wait()
        try:
            gw.generate(request, request_id=f"pg-{i}", principal="ana")
            result = "ok"
        except BudgetExceeded:
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == admit and outcomes.count("refused") == 50 - admit
    status = gw.ledger.month_status()
    assert usd_to_nano(status["spent_usd"]) == nano * admit and status["reserved_usd"] == 0
    assert len(rt.audit.tail(100, action="model.budget_refused")) == 50 - admit
