"""Proposals and execution: policy, approvals bound to arguments, exactly-once, rate limits, kill switch.

Every test runs on SQLite and on PostgreSQL (``db_url``, ``tests/_pg.py``)."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from charter.errors import Conflict, Denied, IntegrityError
from charter.review import ManualClock, decide_approval, decide_draft, submit_draft
from charter.runtime import Runtime
from charter.store.tables import tool_actions
from charter.tools import (
    execute,
    get_action,
    is_killed,
    kill_switch_status,
    list_actions,
    propose,
    set_kill_switch,
)
from tests.tools._helpers import (
    CUSTOMER_EMAIL,
    CUSTOMER_ID,
    INVOICE,
    INVOICE_ID,
    REFUND_50,
    REFUND_500,
    audit_rows,
    billing_state,
)


@pytest.fixture(autouse=True)
def _on_backend(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here runs on SQLite and on PostgreSQL: ``Runtime.open`` (and child processes) use ``db_url``."""
    monkeypatch.setenv("CHARTER_DATABASE_URL", db_url)


def test_a_read_tool_runs_at_once_and_a_retry_returns_the_stored_result(rt: Runtime, project: Path) -> None:
    proposal = propose(
        rt,
        "ana",
        "lookup_invoice",
        {"invoice_id": INVOICE_ID},
        request_id="req-1",
        origin="model",
        subject_id=INVOICE["customer_id"],  # the conversation's customer (tools see only theirs)
    )
    assert proposal.executed and proposal.approval_id is None
    assert proposal.result["refundable"] == INVOICE["amount_paid"]
    again = execute(rt, proposal.id)
    assert again.result == proposal.result and again.version == proposal.action.version
    assert [a.id for a in list_actions(rt, request_id="req-1")] == [proposal.id]
    assert [r.action for r in audit_rows(rt, f"action:{proposal.id}")] == [
        "tools.proposed",
        "tools.executing",
        "tools.executed",
    ]


def test_cedar_decides_who_may_call_a_tool_and_the_refusal_names_the_policy(rt: Runtime) -> None:
    with pytest.raises(Denied) as info:
        propose(rt, "casey", "lookup_invoice", {"invoice_id": INVOICE_ID})
    assert any("billing.cedar" in r for r in info.value.reasons)
    with pytest.raises(Denied) as info:
        propose(rt, "omar", "issue_refund", REFUND_50)  # operators have no tool roles
    assert any("deny by default" in r for r in info.value.reasons)
    assert list_actions(rt) == []
    assert len(audit_rows(rt, action="tools.refused")) == 2


def test_a_small_refund_needs_a_lead_and_never_its_requester(rt: Runtime, project: Path) -> None:
    proposal = propose(rt, "ana", "issue_refund", REFUND_50, reason="customer was charged twice")
    assert proposal.status == "pending" and proposal.approval_id == proposal.id
    assert proposal.action.required_role == "lead"
    with pytest.raises(Denied, match=r"cannot run"):
        execute(rt, proposal.id)
    assert billing_state(project)["refunds"] == []

    with pytest.raises(Denied, match="four-eyes"):  # self-approval
        decide_approval(rt, proposal.id, "ana", "approve")
    with pytest.raises(Denied, match="lacks the role"):  # approver without the role
        decide_approval(rt, proposal.id, "farid", "approve")
    with pytest.raises(Denied):  # another agent
        decide_approval(rt, proposal.id, "ben", "approve")
    assert get_action(rt, proposal.id).status == "pending"
    assert billing_state(project)["refunds"] == []

    done = decide_approval(rt, proposal.id, "lena", "approve", reason="verified the duplicate")
    assert done.status == "executed" and done.decided_by == "lena"
    assert [r["amount"] for r in billing_state(project)["refunds"]] == [50.0]
    actions = [r.action for r in audit_rows(rt, f"action:{proposal.id}")]
    assert actions == [
        "tools.proposed",
        "approval.refused",
        "approval.refused",
        "approval.refused",
        "approval.approved",
        "tools.executing",
        "tools.executed",
    ]


def test_a_lead_cannot_approve_a_large_refund_and_a_lead_request_needs_another_approver(rt: Runtime) -> None:
    big = propose(rt, "ana", "issue_refund", REFUND_500)
    assert big.action.required_role == "finance"
    with pytest.raises(Denied):
        decide_approval(rt, big.id, "lena", "approve")
    assert decide_approval(rt, big.id, "farid", "approve").status == "executed"
    own = propose(rt, "lena", "issue_refund", REFUND_50)
    with pytest.raises(Denied, match="four-eyes"):
        decide_approval(rt, own.id, "lena", "approve")


def test_an_approval_for_refund_50_cannot_execute_refund_500(rt: Runtime, project: Path) -> None:
    proposal = propose(rt, "ana", "issue_refund", REFUND_50)
    approved = decide_approval(rt, proposal.id, "lena", "approve", run=False)
    assert approved.status == "approved"
    with pytest.raises(Denied, match="other arguments"):
        execute(rt, proposal.id, args=REFUND_500)
    # nor by changing the stored arguments behind the approval's back
    with rt.store.begin() as conn:
        conn.execute(tool_actions.update().where(tool_actions.c.id == proposal.id).values(args=REFUND_500))
    with pytest.raises(IntegrityError):
        execute(rt, proposal.id)
    assert billing_state(project)["refunds"] == []
    # a new proposal for 500 is a new request that needs finance
    assert propose(rt, "ana", "issue_refund", REFUND_500).status == "pending"


def test_a_refund_larger_than_what_is_refundable_fails_and_the_failure_is_stored(
    rt: Runtime, project: Path
) -> None:
    proposal = propose(rt, "ana", "issue_refund", {**REFUND_50, "amount": INVOICE["amount_paid"] + 1})
    done = decide_approval(rt, proposal.id, "farid", "approve")
    assert done.status == "failed" and "refundable" in (done.error or "")
    assert execute(rt, proposal.id).status == "failed"  # a retry returns the stored outcome
    assert billing_state(project)["refunds"] == []


def test_rejected_requests_stay_rejected(rt: Runtime) -> None:
    proposal = propose(rt, "ana", "issue_refund", REFUND_50)
    rejected = decide_approval(rt, proposal.id, "lena", "reject", reason="not a duplicate")
    assert rejected.status == "rejected"
    with pytest.raises(Conflict):
        decide_approval(rt, proposal.id, "lena", "approve")
    with pytest.raises(Denied):
        execute(rt, proposal.id)


def test_the_rate_limit_is_per_principal_and_window(rt: Runtime) -> None:
    clock = ManualClock()
    for _ in range(10):  # issue_refund: 10 per hour
        propose(rt, "ana", "issue_refund", REFUND_50, clock=clock)
    with pytest.raises(Denied, match="rate limit"):
        propose(rt, "ana", "issue_refund", REFUND_50, clock=clock)
    propose(rt, "ben", "issue_refund", REFUND_50, clock=clock)  # another principal has their own budget
    clock.advance(timedelta(hours=1, seconds=1))
    assert propose(rt, "ana", "issue_refund", REFUND_50, clock=clock).status == "pending"


def test_the_rate_limit_is_exact_under_concurrency(rt: Runtime) -> None:
    barrier = threading.Barrier(15)
    outcomes: list[str] = []
    lock = threading.Lock()

    def call() -> None:
        barrier.wait()
        try:
            result = propose(rt, "ana", "issue_refund", REFUND_50).status
        except Denied:
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=call) for _ in range(15)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["pending"] * 10 + ["refused"] * 5  # issue_refund: 10 per hour
    assert len(list_actions(rt, requester="ana")) == 10


def test_the_kill_switch_stops_new_calls_and_pending_executions(rt: Runtime, project: Path) -> None:
    pending = propose(rt, "ana", "issue_refund", REFUND_50)
    with pytest.raises(Denied):
        set_kill_switch(rt, "ana", True)  # not the incidents owner, no kill_switch permission
    set_kill_switch(rt, "omar", True, tool="issue_refund", reason="refund bug")
    assert is_killed(rt, "issue_refund") and not is_killed(rt, "lookup_invoice") and not is_killed(rt)
    with pytest.raises(Denied, match="kill switch"):
        propose(rt, "ben", "issue_refund", REFUND_50)
    assert propose(
        rt, "ana", "lookup_invoice", {"invoice_id": INVOICE_ID}, subject_id=INVOICE["customer_id"]
    ).executed
    with pytest.raises(Denied, match="kill switch"):
        decide_approval(
            rt, pending.id, "lena", "approve"
        )  # approved, but it must not run while the switch is on
    assert get_action(rt, pending.id).status == "approved"
    assert billing_state(project)["refunds"] == []

    set_kill_switch(rt, "omar", True, reason="incident")  # the whole workflow
    with pytest.raises(Denied):
        propose(rt, "ana", "lookup_invoice", {"invoice_id": INVOICE_ID})
    set_kill_switch(rt, "omar", False)
    set_kill_switch(rt, "omar", False, tool="issue_refund")
    assert kill_switch_status(rt)["workflow"]["on"] is False
    assert execute(rt, pending.id).status == "executed"  # not lost: runs once the switch is off
    assert len(billing_state(project)["refunds"]) == 1
    assert [r.action for r in audit_rows(rt) if r.action.startswith("kill_switch")] == [
        "kill_switch.refused",
        "kill_switch.on",
        "kill_switch.on",
        "kill_switch.off",
        "kill_switch.off",
    ]


def test_send_reply_needs_an_approved_draft_and_sends_the_approved_text(rt: Runtime, project: Path) -> None:
    from tests.access._world import citation, index_documents

    index_documents(rt, {("help-center", "refund-timing.md"): frozenset({"public"})})
    item = submit_draft(
        rt,
        request_id="req-9",
        principal="ana",
        question="Why was I charged twice?",
        draft="Hi, we have refunded the duplicate charge [S1]. Best, Ana",
        citations=[citation(1, "help-center")],
        agent_notes=[],
        groundedness=0.9,
        escalation_reason=None,
        subject_id=CUSTOMER_ID,  # the reply is bound to this customer
    )
    args = {"review_id": item.id, "customer_id": CUSTOMER_ID}
    with pytest.raises(Denied, match="approved draft"):
        propose(rt, "ana", "send_reply", args)
    with pytest.raises(Denied, match="approved draft"):
        propose(rt, "ana", "send_reply", {"review_id": "rev_" + "0" * 24, "customer_id": CUSTOMER_ID})
    decide_draft(rt, item.id, "lena", "approve")  # edits need a second reviewer: tests/access/test_rules.py
    sent = propose(rt, "ana", "send_reply", args)
    assert sent.executed
    outbox = billing_state(project)["outbox"]
    assert len(outbox) == 1 and outbox[0]["body"].endswith("Best, Ana") and outbox[0]["to"] == CUSTOMER_EMAIL
    second = propose(rt, "ana", "send_reply", args)  # the same draft is never sent twice
    assert second.status == "failed" and len(billing_state(project)["outbox"]) == 1


def test_a_retried_request_does_not_queue_the_same_call_twice(rt: Runtime, project: Path) -> None:
    first = propose(rt, "ana", "issue_refund", REFUND_50, request_id="req-7", origin="model")
    again = propose(rt, "ana", "issue_refund", REFUND_50, request_id="req-7", origin="model")
    assert again.id == first.id and again.status == "pending"
    other = propose(rt, "ana", "issue_refund", REFUND_500, request_id="req-7", origin="model")
    assert other.id != first.id  # other arguments: another action
    elsewhere = propose(rt, "ana", "issue_refund", REFUND_50, request_id="req-8", origin="model")
    assert elsewhere.id != first.id  # another request: another action
    decide_approval(rt, first.id, "lena", "approve")
    assert propose(rt, "ana", "issue_refund", REFUND_50, request_id="req-7").status == "executed"
    assert len(billing_state(project)["refunds"]) == 1
    cus = INVOICE["customer_id"]
    lookup = propose(
        rt, "ana", "lookup_invoice", {"invoice_id": INVOICE_ID}, request_id="req-7", subject_id=cus
    )
    assert (
        propose(
            rt, "ana", "lookup_invoice", {"invoice_id": INVOICE_ID}, request_id="req-7", subject_id=cus
        ).id
        == lookup.id
    )
