"""Budget enforcement by reservation: concurrent threads and processes never overshoot.

Every test runs on SQLite and on PostgreSQL (``db_url``, ``tests/_pg.py``): on PostgreSQL the reservation is a
``SELECT ... FOR UPDATE`` on the workflow-month row."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from charter.errors import BudgetExceeded
from charter.models import (
    BudgetLedger,
    Passage,
    ScriptedModel,
    ScriptedReply,
    build_gateway,
    estimate_max_cost_nano,
    estimate_request_tokens,
    usd_to_nano,
)
from charter.spec._schema import Prices

from .conftest import PRICES, edit_charter

PASSAGES = [
    Passage(
        "S1",
        "Refunds go back to the original payment method within 5 to 10 business days.",
        title="Refunds",
        audience="outbound",
    )
]
QUESTION = "How long does a refund take?"


@pytest.fixture
def open_runtime(open_runtime, db_url):  # type: ignore[no-untyped-def]
    """The models ``open_runtime`` on this test's backend (SQLite file or a fresh PostgreSQL database)."""

    def _open(path: Path, *, approve: bool = True, database_url: str | None = None):  # type: ignore[no-untyped-def]
        return open_runtime(path, approve=approve, database_url=database_url or db_url)

    return _open


def _exact_reply(gateway, request) -> ScriptedReply:  # type: ignore[no-untyped-def]
    """A reply whose reported usage equals the reservation estimate, so settling releases nothing."""
    return ScriptedReply(
        "Refunds take 5 to 10 business days [S1].",
        input_tokens=estimate_request_tokens(request),
        output_tokens=request.max_output_tokens,
    )


def _estimate_usd(path: Path, open_runtime) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    rt = open_runtime(path)
    gw = build_gateway(rt, primary=ScriptedModel("primary"))
    request = gw.build_request(QUESTION, PASSAGES)
    nano = estimate_max_cost_nano(request, Prices(**PRICES))
    return nano, nano / 1e9


@pytest.mark.parametrize("admit", [1, 7, 23])
def test_budget_of_n_requests_admits_exactly_n_of_50_concurrent(scripted_project, open_runtime, admit):
    path = edit_charter(scripted_project, {"model": {"fallback": None}})
    nano, usd = _estimate_usd(path, open_runtime)
    monthly = round(usd * admit, 9)
    assert usd_to_nano(monthly) == nano * admit  # the limit is exactly N requests' worth
    edit_charter(path, {"budgets": {"monthly_usd": monthly}})
    rt = open_runtime(path, approve=False)
    model = ScriptedModel("primary")
    gw = build_gateway(rt, primary=model)
    request = gw.build_request(QUESTION, PASSAGES)
    model.default = _exact_reply(gw, request)

    barrier = threading.Barrier(50)
    outcomes: list[str] = []
    lock = threading.Lock()

    def one(i: int) -> None:
        barrier.wait()
        try:
            gw.generate(request, request_id=f"req-{i}", principal="ana")
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

    assert outcomes.count("ok") == admit
    assert outcomes.count("refused") == 50 - admit
    assert model.calls == admit  # refused requests never reached the model
    status = gw.ledger.month_status()
    assert usd_to_nano(status["spent_usd"]) == nano * admit
    assert status["reserved_usd"] == 0
    refusals = rt.audit.tail(100, action="model.budget_refused")
    assert len(refusals) == 50 - admit
    assert all("monthly budget" in e.details["reason"] and e.outcome == "denied" for e in refusals)


WORKER = textwrap.dedent("""
    import json, sys, threading
    from charter.errors import BudgetExceeded
    from charter.models import Passage, ScriptedModel, ScriptedReply, build_gateway, estimate_request_tokens
    from charter.runtime import Runtime

    path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    rt = Runtime.open(path, record_changes=False)
    model = ScriptedModel("primary")
    gw = build_gateway(rt, primary=model)
    req = gw.build_request({question!r}, [Passage("S1", {text!r}, title="Refunds", audience="outbound")])
    model.default = ScriptedReply("ok [S1].", input_tokens=estimate_request_tokens(req),
                                  output_tokens=req.max_output_tokens)
    barrier = threading.Barrier(n)
    results = []
    def one(i):
        barrier.wait()
        try:
            gw.generate(req, request_id=f"{{tag}}-{{i}}", principal="ana")
            results.append("ok")
        except BudgetExceeded:
            results.append("refused")
    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    print(json.dumps({{"ok": results.count("ok"), "refused": results.count("refused")}}))
""").format(question=QUESTION, text=PASSAGES[0].text)


@pytest.mark.slow  # two processes
def test_two_processes_share_one_budget(scripted_project, open_runtime, tmp_path, db_url):
    path = edit_charter(scripted_project, {"model": {"fallback": None}})
    nano, usd = _estimate_usd(path, open_runtime)  # also migrates the database and approves the prompt
    admit = 9
    edit_charter(path, {"budgets": {"monthly_usd": round(usd * admit, 9)}})
    rt = open_runtime(path, approve=False)  # records the charter change before the workers start
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(path), tag, "15"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "CHARTER_DATABASE_URL": db_url},
        )
        for tag in ("a", "b")
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sum(r["ok"] for r in results) == admit
    assert sum(r["refused"] for r in results) == 30 - admit
    ledger = BudgetLedger(
        rt.store,
        workflow_id=rt.spec.workflow.id,
        per_task_usd=rt.spec.budgets.per_task_usd,
        monthly_usd=rt.spec.budgets.monthly_usd,
    )
    status = ledger.month_status()
    assert usd_to_nano(status["spent_usd"]) == nano * admit
    assert status["reserved_usd"] == 0


def test_per_task_budget_refuses_an_estimate_that_alone_exceeds_it(scripted_project, open_runtime):
    path = edit_charter(scripted_project, {"budgets": {"per_task_usd": 0.01}})
    rt = open_runtime(path)
    model = ScriptedModel("primary", default="never [S1].")
    gw = build_gateway(rt, primary=model)
    with pytest.raises(BudgetExceeded, match="per-task budget"):
        gw.generate(gw.build_request(QUESTION, PASSAGES), request_id="r1", principal="ana")
    assert model.calls == 0
    entries = rt.audit.tail(5, action="model.budget_refused")
    assert entries and entries[-1].actor == "ana"


def test_per_task_budget_counts_every_paid_attempt_of_the_same_request(scripted_project, open_runtime):
    path = edit_charter(scripted_project, {"model": {"fallback": None, "retries": 5, "timeout": "200ms"}})
    nano, usd = _estimate_usd(path, open_runtime)
    edit_charter(path, {"budgets": {"per_task_usd": round(usd * 2.5, 9)}})  # room for two attempts, not three
    rt = open_runtime(path, approve=False)
    model = ScriptedModel("primary", default=ScriptedReply("late [S1].", delay=1.0))
    gw = build_gateway(rt, primary=model, retry_base_delay=0)
    request = gw.build_request(QUESTION, PASSAGES)
    with pytest.raises(BudgetExceeded, match="per-task budget"):
        gw.generate(request, request_id="r-retry", principal="ana")
    assert model.calls == 2  # a timed-out call is charged in full (the provider may still bill it)
    assert usd_to_nano(gw.ledger.request_cost("r-retry")) == 2 * nano


def test_settle_releases_the_difference_and_failure_releases_everything(scripted_project, open_runtime):
    rt = open_runtime(edit_charter(scripted_project, {"model": {"fallback": None, "retries": 0}}))
    model = ScriptedModel("primary")
    gw = build_gateway(rt, primary=model)
    request = gw.build_request(QUESTION, PASSAGES)
    model.enqueue(ScriptedReply("Short [S1].", input_tokens=10, output_tokens=3))
    gen = gw.generate(request, request_id="small", principal="ana")
    assert gen.cost_usd == pytest.approx(10 * 0.001 + 3 * 0.002)
    assert gw.ledger.request_cost("small") == pytest.approx(gen.cost_usd)
    from charter.errors import ProviderError

    model.enqueue(ProviderError("HTTP 400", retryable=False))
    with pytest.raises(ProviderError):
        gw.generate(request, request_id="broken", principal="ana")
    assert gw.ledger.request_cost("broken") == 0
    status = gw.ledger.month_status()
    assert status["reserved_usd"] == 0
    assert status["spent_usd"] == pytest.approx(gen.cost_usd)


def test_reservations_left_by_a_crashed_process_are_charged_and_freed_at_startup(
    scripted_project, open_runtime
):
    from datetime import timedelta

    from charter.store import utcnow
    from charter.store.tables import budget_reservations

    rt = open_runtime(scripted_project)
    gw = build_gateway(rt, primary=ScriptedModel("primary"))
    held = gw.ledger.reserve(
        request_id="crashed", principal="ana", model="scripted:primary", estimated_nano=5000
    )
    fresh = gw.ledger.reserve(
        request_id="running", principal="ana", model="scripted:primary", estimated_nano=7000
    )
    with rt.store.begin() as conn:
        conn.execute(
            budget_reservations.update()
            .where(budget_reservations.c.id == held.id)
            .values(created_at=utcnow() - timedelta(hours=2))
        )
    assert usd_to_nano(gw.ledger.month_status()["reserved_usd"]) == 12000

    build_gateway(rt, primary=ScriptedModel("primary"))  # a restart
    status = gw.ledger.month_status()
    assert usd_to_nano(status["reserved_usd"]) == 7000  # the running call keeps its reservation
    assert usd_to_nano(status["spent_usd"]) == 5000  # the abandoned one is charged in full
    with rt.store.connect() as conn:
        rows = dict(conn.execute(select(budget_reservations.c.id, budget_reservations.c.status)).all())
    assert rows[held.id] == "expired" and rows[fresh.id] == "reserved"
