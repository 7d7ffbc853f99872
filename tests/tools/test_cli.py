"""``charter tools``, ``charter approvals``, ``charter review`` and ``charter kill-switch`` end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from charter.review import submit_draft
from charter.runtime import Runtime
from tests.conftest import run_cli
from tests.tools._helpers import CUSTOMER_ID, INVOICE_ID, REFUND_50, billing_state


def _cli(project: Path, *args: str) -> Any:
    return run_cli(*args, "--charter", str(project))


def test_tools_list(project: Path) -> None:
    res = _cli(project, "tools", "list", "--json")
    assert res.exit_code == 0, res.stderr
    tools = {t["name"]: t for t in res.json()}
    assert tools["issue_refund"]["effect"] == "write" and tools["issue_refund"]["killed"] is False
    assert "amount <= 100 → lead" in tools["issue_refund"]["approval_text"]
    assert tools["send_reply"]["requires"] == ["draft_approved"]
    assert _cli(project, "tools", "list").exit_code == 0


def _conversation(project: Path, request_id: str = "conv-1") -> str:
    """A conversation of ana's about the invoice's customer (tools see only that customer's data)."""
    rt = Runtime.open(project)
    try:
        submit_draft(
            rt,
            request_id=request_id,
            principal="ana",
            question="About my invoice",
            draft="Looking into it.",
            citations=[],
            subject_id=CUSTOMER_ID,
        )
    finally:
        rt.close()
    return request_id


def test_a_call_without_approval_runs_and_one_with_approval_prints_its_id(project: Path) -> None:
    res = _cli(
        project,
        "tools",
        "call",
        "lookup_invoice",
        "--args",
        json.dumps({"invoice_id": INVOICE_ID}),
        "--request-id",
        _conversation(project),
        "--as",
        "ana",
        "--json",
    )
    assert res.exit_code == 0, res.stderr
    assert res.json()["status"] == "executed" and res.json()["result"]["id"] == INVOICE_ID

    res = _cli(project, "tools", "call", "issue_refund", "--args", json.dumps(REFUND_50), "--as", "ana")
    assert res.exit_code == 0, res.stderr
    assert "pending approval act_" in res.stdout and "lead" in res.stdout
    approval_id = res.stdout.split("pending approval ")[1].split(":")[0]

    listed = _cli(project, "approvals", "list", "--as", "lena", "--json").json()
    assert [a["id"] for a in listed] == [approval_id]
    shown = _cli(project, "approvals", "show", approval_id, "--as", "lena", "--json").json()
    assert shown["approver_roles"] == ["lead"] and shown["args"]["amount"] == 50

    refused = _cli(project, "approvals", "approve", approval_id, "--as", "ana")
    assert refused.exit_code == 1 and "four-eyes" in refused.stderr
    done = _cli(project, "approvals", "approve", approval_id, "--as", "lena", "--json")
    assert done.exit_code == 0, done.stderr
    assert done.json()["status"] == "executed"
    again = _cli(project, "approvals", "approve", approval_id, "--as", "lena", "--json")
    assert again.exit_code == 1 and again.json()["error"] == "Conflict"
    assert len(billing_state(project)["refunds"]) == 1


def test_a_refused_call_exits_1_with_the_policy_that_refused(project: Path) -> None:
    res = _cli(
        project,
        "tools",
        "call",
        "lookup_invoice",
        "--args",
        json.dumps({"invoice_id": INVOICE_ID}),
        "--as",
        "casey",
    )
    assert res.exit_code == 1
    assert "refused" in res.stderr and "billing.cedar" in res.stderr
    res = _cli(
        project,
        "tools",
        "call",
        "lookup_invoice",
        "--args",
        json.dumps({"invoice_id": INVOICE_ID}),
        "--as",
        "casey",
        "--json",
    )
    assert res.exit_code == 1 and res.json()["error"] == "Denied" and res.json()["reasons"]
    bad = _cli(project, "tools", "call", "issue_refund", "--args", '{"amount": NaN}', "--as", "ana")
    assert bad.exit_code == 2 and "NaN" in bad.stderr


def test_reject_and_recover_from_the_cli(project: Path) -> None:
    approval_id = _cli(
        project, "tools", "call", "issue_refund", "--args", json.dumps(REFUND_50), "--as", "ana", "--json"
    ).json()["id"]
    res = _cli(
        project, "approvals", "reject", approval_id, "--as", "lena", "--reason", "no duplicate", "--json"
    )
    assert res.exit_code == 0 and res.json()["status"] == "rejected"
    stuck = _cli(project, "approvals", "recover", "--as", "omar", "--json")
    assert stuck.exit_code == 0 and stuck.json() == []


@pytest.mark.slow  # syncs the example through the CLI
def test_the_review_queue_from_the_cli(project: Path, tmp_path: Path) -> None:
    from tests.access._world import LEO, add_user

    add_user(project, LEO)  # a lead's edit is approved by another lead
    rt = Runtime.open(project)
    item = submit_draft(
        rt,
        request_id="r1",
        principal="ana",
        question="Refund?",
        draft="Yes.\n",
        citations=[],
        agent_notes=[],
        groundedness=0.8,
        escalation_reason=None,
        subject_id=CUSTOMER_ID,
    )
    other = submit_draft(
        rt,
        request_id="r2",
        principal="ana",
        question="VAT?",
        draft="No.\n",
        citations=[],
        agent_notes=[],
        groundedness=0.2,
        escalation_reason="low_groundedness",
    )
    rt.close()
    listed = _cli(project, "review", "list", "--as", "lena", "--json").json()
    assert {i["id"] for i in listed} == {item.id, other.id}
    shown = _cli(project, "review", "show", other.id, "--as", "lena", "--json").json()
    assert shown["status"] == "escalated" and shown["assigned_role"] == "lead" and shown["sla_due_at"]
    assert _cli(project, "review", "show", other.id, "--as", "lena").exit_code == 0

    edit = tmp_path / "edit.txt"
    edit.write_text("Yes, within 14 days.\n")
    res = _cli(project, "review", "edit", item.id, "--as", "lena", "--file", str(edit), "--json")
    assert res.exit_code == 0, res.stderr
    assert res.json()["edited_by"] == "lena" and res.json()["status"] == "pending"
    assert "+Yes, within 14 days." in res.json()["diff"]
    own = _cli(project, "review", "approve", item.id, "--as", "lena")
    assert own.exit_code == 1 and "four-eyes" in own.stderr
    res = _cli(project, "review", "approve", item.id, "--as", "leo", "--json")
    assert res.exit_code == 0, res.stderr
    assert res.json()["decision"] == "edited"
    bad = _cli(project, "review", "reject", other.id, "--as", "lena", "--reason", "because")
    assert bad.exit_code == 2
    res = _cli(
        project,
        "review",
        "reject",
        other.id,
        "--as",
        "lena",
        "--reason",
        "unsupported_by_sources",
        "--comment",
        "no source says this",
        "--json",
    )
    assert res.json()["status"] == "rejected"
    sent = _cli(
        project,
        "tools",
        "call",
        "send_reply",
        "--args",
        json.dumps({"review_id": item.id, "customer_id": CUSTOMER_ID}),
        "--as",
        "ana",
        "--json",
    )
    assert sent.exit_code == 0, sent.stdout + sent.stderr
    assert billing_state(project)["outbox"][0]["body"] == "Yes, within 14 days.\n"
    stats = _cli(project, "review", "stats", "--json").json()
    assert stats["edited"] == 1 and stats["rejected"] == 1
    tick = _cli(project, "review", "tick", "--json")
    assert tick.exit_code == 0 and tick.json()["approvals_expired"] == []


@pytest.mark.slow  # syncs the example through the CLI
def test_the_kill_switch_from_the_cli(project: Path) -> None:
    refused = _cli(project, "kill-switch", "on", "--as", "ana")
    assert refused.exit_code == 1
    res = _cli(
        project,
        "kill-switch",
        "on",
        "--tool",
        "lookup_invoice",
        "--as",
        "omar",
        "--reason",
        "drill",
        "--json",
    )
    assert res.exit_code == 0 and res.json()["on"] is True
    blocked = _cli(
        project,
        "tools",
        "call",
        "lookup_invoice",
        "--args",
        json.dumps({"invoice_id": INVOICE_ID}),
        "--as",
        "ana",
    )
    assert blocked.exit_code == 1 and "kill switch" in blocked.stderr
    status = _cli(project, "kill-switch", "status", "--json").json()
    assert status["tools"]["lookup_invoice"]["on"] is True and status["workflow"]["on"] is False
    assert _cli(project, "kill-switch", "off", "--tool", "lookup_invoice", "--as", "omar").exit_code == 0
    assert (
        _cli(
            project,
            "tools",
            "call",
            "lookup_invoice",
            "--args",
            json.dumps({"invoice_id": INVOICE_ID}),
            "--request-id",
            _conversation(project),
            "--as",
            "ana",
        ).exit_code
        == 0
    )
