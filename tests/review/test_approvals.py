"""Approval requests over time: expiry, SLA escalation to the next role, audit of every transition.

Every test runs on SQLite and on PostgreSQL (``db_url``, ``tests/_pg.py``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from charter.errors import Conflict, Denied, UsageError
from charter.review import ManualClock, approver_roles, decide_approval, get_approval, list_approvals, tick
from charter.runtime import Runtime
from charter.tools import propose
from tests.tools._helpers import REFUND_50, REFUND_500, audit_rows, billing_state, details


@pytest.fixture(autouse=True)
def _on_backend(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here runs on SQLite and on PostgreSQL: ``Runtime.open`` (and child processes) use ``db_url``."""
    monkeypatch.setenv("CHARTER_DATABASE_URL", db_url)


def test_an_expired_request_cannot_be_approved(rt: Runtime, project: Path) -> None:
    clock = ManualClock()
    proposal = propose(rt, "ana", "issue_refund", REFUND_50, clock=clock)
    assert proposal.action.expires_at == clock.now() + timedelta(hours=48)
    clock.advance(timedelta(hours=48))  # the very moment it expires; no tick has run
    with pytest.raises(Denied, match="expired"):
        decide_approval(rt, proposal.id, "lena", "approve", clock=clock)
    assert get_approval(rt, proposal.id).status == "expired"
    with pytest.raises(Denied, match="expired"):
        decide_approval(rt, proposal.id, "farid", "approve", clock=clock)
    assert billing_state(project)["refunds"] == []
    assert [r.action for r in audit_rows(rt, f"action:{proposal.id}")][-3:] == [
        "approval.expired",
        "approval.refused",
        "approval.refused",
    ]


def test_tick_expires_requests_exactly_at_their_deadline(rt: Runtime) -> None:
    clock = ManualClock()
    proposal = propose(rt, "ana", "issue_refund", REFUND_500, clock=clock)  # finance: no approval_sla rule
    clock.advance(timedelta(hours=47, minutes=59))
    assert tick(rt, clock=clock).approvals_expired == []
    clock.advance(timedelta(minutes=1))
    assert tick(rt, clock=clock).approvals_expired == [proposal.id]
    assert tick(rt, clock=clock).approvals_expired == []  # idempotent


def test_an_escalation_moves_to_the_next_role_when_its_sla_passes(rt: Runtime, project: Path) -> None:
    clock = ManualClock()
    proposal = propose(rt, "ana", "issue_refund", REFUND_50, clock=clock)
    action = proposal.action
    assert action.assigned_role == "lead" and action.sla_due_at == clock.now() + timedelta(hours=8)
    with pytest.raises(Denied):
        decide_approval(rt, proposal.id, "farid", "approve", clock=clock)  # finance: not yet

    clock.advance(timedelta(hours=7, minutes=59))
    assert tick(rt, clock=clock).approvals_escalated == []
    clock.advance(timedelta(minutes=1))
    report = tick(rt, clock=clock)
    assert report.approvals_escalated == [proposal.id]
    escalated = get_approval(rt, proposal.id)
    assert escalated.status == "escalated" and escalated.assigned_role == "finance"
    assert escalated.escalation_level == 1 and approver_roles(rt, escalated) == ["lead", "finance"]
    assert [a.id for a in list_approvals(rt, principal="farid")] == [proposal.id]
    assert tick(rt, clock=clock).approvals_escalated == []  # nothing further to escalate to

    with pytest.raises(Denied, match="four-eyes"):
        decide_approval(rt, proposal.id, "ana", "approve", clock=clock)
    done = decide_approval(rt, proposal.id, "farid", "approve", reason="lead unavailable", clock=clock)
    assert done.status == "executed" and done.decided_by == "farid"
    assert len(billing_state(project)["refunds"]) == 1
    escalation = audit_rows(rt, f"action:{proposal.id}", action="approval.escalated")
    assert details(escalation[0])["from"] == "lead" and details(escalation[0])["to"] == "finance"


def test_every_transition_is_audited_with_actor_reason_and_time(rt: Runtime) -> None:
    proposal = propose(rt, "ana", "issue_refund", REFUND_50, reason="charged twice")
    decide_approval(rt, proposal.id, "lena", "reject", reason="it was not a duplicate")
    rows = audit_rows(rt, f"action:{proposal.id}")
    assert [(r.actor, r.action) for r in rows] == [("ana", "tools.proposed"), ("lena", "approval.rejected")]
    assert details(rows[1])["reason"] == "it was not a duplicate" and rows[1].ts is not None
    with pytest.raises(Conflict):
        decide_approval(rt, proposal.id, "lena", "approve")


def test_a_rejection_needs_a_reason_and_decisions_are_validated(rt: Runtime) -> None:
    proposal = propose(rt, "ana", "issue_refund", REFUND_50)
    with pytest.raises(UsageError):
        decide_approval(rt, proposal.id, "lena", "reject")
    with pytest.raises(UsageError):
        decide_approval(rt, proposal.id, "lena", "maybe")  # type: ignore[arg-type]
    lookup = propose(rt, "ana", "lookup_invoice", {"invoice_id": REFUND_50["invoice_id"]})
    with pytest.raises(Exception, match="needed no approval"):
        decide_approval(rt, lookup.id, "lena", "approve")
