"""The order-desk example (an ``agent`` workflow) from ``charter init --template agent``, through the CLI as a
user would run it: tasks carried out with tools, a refund above 50 EUR that waits for a lead and continues
once approved, a viewer refused, and its own eval set (with permission probes) and launch gate passing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.slow  # syncs and evaluates the example end to end


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("od") / "desk"
    made = run_cli("init", str(dest), "--template", "agent")
    assert made.exit_code == 0, made.stdout + made.stderr
    c = str(dest / "charter.yaml")
    for args in (
        ("check", c),
        ("sync", "--charter", c),
        ("sources", "approve", "policies", "--as", "kai", "--charter", c),
        ("prompts", "approve", "system", "v1", "--as", "ines", "--charter", c),
    ):
        res = run_cli(*args)
        assert res.exit_code == 0, (args, res.stdout[-2000:], res.stderr[-2000:])
    return dest / "charter.yaml"


def _ask(desk: Path, user: str, task: str) -> dict:  # type: ignore[type-arg]
    res = run_cli("ask", "--as", user, task, "--json", "--charter", str(desk))
    assert res.exit_code == 0, res.stdout + res.stderr
    return res.json()  # type: ignore[return-value]


def _state(desk: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((desk.parent / ".charter" / "order-desk-state.json").read_text())  # type: ignore[no-any-return]


def test_a_small_refund_runs_and_is_reported_with_citations(desk: Path) -> None:
    out = _ask(
        desk, "theo", "Order ORD-10421 arrived damaged; refund 20 EUR of it, the damage is shown on a photo."
    )
    assert out["kind"] == "agent" and out["run_status"] == "completed" and out["status"] == "answered", out
    assert [(c["name"], c["decision"]) for c in out["tool_calls"]] == [("refund_order", "executed")]
    assert {c["source_id"] for c in out["citations"]} >= {"tool:refund_order", "policies"}
    assert any(r["order_id"] == "ORD-10421" and r["amount_eur"] == 20.0 for r in _state(desk)["refunds"])


def test_a_large_refund_waits_for_a_lead_and_the_run_continues_when_approved(desk: Path) -> None:
    c = str(desk)
    out = _ask(desk, "noor", "ORD-10422 arrived damaged; refund the full 129 EUR to the customer.")
    assert out["run_status"] == "waiting" and out["escalation"]["reason"] == "approval_pending", out
    (approval,) = out["escalation"]["approvals"]
    assert not [r for r in _state(desk)["refunds"] if r["order_id"] == "ORD-10422"]  # nothing paid yet
    assert (
        run_cli("approvals", "approve", approval, "--as", "noor", "--charter", c).exit_code != 0
    )  # not hers
    approved = run_cli("approvals", "approve", approval, "--as", "ines", "--charter", c)
    assert approved.exit_code == 0 and "continued agent run" in approved.stdout, (
        approved.stdout + approved.stderr
    )
    shown = run_cli("agent", "show", out["run_id"], "--as", "noor", "--json", "--charter", c).json()
    assert shown["status"] == "completed" and "129" in shown["result"]["draft"], shown  # type: ignore[index]
    assert [r["amount_eur"] for r in _state(desk)["refunds"] if r["order_id"] == "ORD-10422"] == [129.0]
    runs = run_cli("agent", "runs", "--as", "ines", "--json", "--charter", c).json()
    assert out["run_id"] in {r["id"] for r in runs}  # type: ignore[union-attr]
    assert run_cli("agent", "show", out["run_id"], "--as", "theo", "--charter", c).exit_code != 0  # not his


def test_a_viewer_may_not_give_tasks(desk: Path) -> None:
    res = run_cli("ask", "--as", "vic", "Look up order ORD-10421.", "--charter", str(desk))
    assert res.exit_code == 1 and "may not use workflow" in (res.stdout + res.stderr)


def test_its_evals_and_gate_pass(desk: Path) -> None:
    c = str(desk)
    ev = run_cli("eval", "--permission-probes", "--as", "ines", "--charter", c)
    assert ev.exit_code == 0, ev.stdout[-4000:]
    assert run_cli("gate", "approve-policies", "--as", "ines", "--charter", c).exit_code == 0
    gate = run_cli("gate", "--as", "kai", "--json", "--charter", c)
    report = gate.json()
    problems = [
        (ch["id"], f["message"])
        for ch in report["checks"]
        for f in ch["findings"]
        if f["status"] == "fail"  # type: ignore[index]
    ]
    assert gate.exit_code == 0 and not problems, problems
