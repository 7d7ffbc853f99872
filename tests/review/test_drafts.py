"""The review queue for drafts: routing, decisions (approve / edit with diff / reject), escalation, stats."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from charter.errors import Conflict, Denied, UsageError
from charter.review import (
    REJECT_REASONS,
    ManualClock,
    decide_draft,
    get_review,
    list_reviews,
    review_stats,
    reviewer_roles,
    submit_draft,
    tick,
)
from charter.runtime import Runtime
from tests.tools._helpers import audit_rows


@pytest.fixture
def rt(synced_rt: Runtime) -> Runtime:
    """Drafts cite indexed documents: their routing depends on who may read them."""
    return synced_rt


def _submit(
    rt: Runtime,
    *,
    reason: str | None = None,
    who: str = "ana",
    clock: ManualClock | None = None,
    groundedness: float | None = 0.9,
):
    return submit_draft(
        rt,
        request_id="req-1",
        principal=who,
        question="Can I get a refund for last month?",
        draft="Hi,\nRefunds are possible within 14 days [S1].\nBest regards\n",
        citations=[
            {
                "id": "S1",
                "source_id": "help-center",
                "doc_id": "refund-timing.md",
                "chunk_id": "help-center/refund-timing.md#0",
            }
        ],
        agent_notes=["Playbook: check the duplicate first"],
        groundedness=groundedness,
        escalation_reason=reason,
        clock=clock,
    )


def test_every_draft_goes_to_the_reviewer_role_when_the_charter_says_all(rt: Runtime) -> None:
    item = _submit(rt)
    assert item.status == "pending" and item.assigned_role == "lead" and item.sla_due_at is None
    assert item.citations[0]["doc_id"] == "refund-timing.md" and item.groundedness == 0.9
    assert [i.id for i in list_reviews(rt, principal="lena")] == [item.id]
    assert list_reviews(rt, principal="ben") == []


def test_approve_edit_and_reject_are_stored_with_diff_and_reason(rt: Runtime) -> None:
    a, b, c = _submit(rt), _submit(rt), _submit(rt)
    approved = decide_draft(rt, a.id, "lena", "approve")
    assert (
        approved.status == "approved" and approved.decision == "approved" and approved.final_text == a.draft
    )
    proposed = decide_draft(
        rt, b.id, "lena", "edit", text="Hi,\nRefunds are possible within 30 days [S1].\nBest regards\n"
    )
    assert proposed.status == "pending" and proposed.decision is None and proposed.edited_by == "lena"
    with pytest.raises(Denied, match="four-eyes"):  # the editor cannot approve their own edit
        decide_draft(rt, b.id, "lena", "approve")
    edited = decide_draft(rt, b.id, "leo", "approve")
    assert edited.status == "approved" and edited.decision == "edited"
    assert edited.final_text == "Hi,\nRefunds are possible within 30 days [S1].\nBest regards\n"
    assert "-Refunds are possible within 14 days [S1]." in (edited.diff or "")
    assert "+Refunds are possible within 30 days [S1]." in (edited.diff or "")
    with pytest.raises(UsageError):
        decide_draft(rt, c.id, "lena", "reject", reason="meh")
    rejected = decide_draft(rt, c.id, "lena", "reject", reason="inaccurate", comment="14 days is wrong")
    assert (
        rejected.status == "rejected"
        and rejected.reject_reason == "inaccurate"
        and "inaccurate" in REJECT_REASONS
    )
    with pytest.raises(Conflict):
        decide_draft(rt, c.id, "lena", "approve")
    assert review_stats(rt) == {
        "approved": 1,
        "edited": 1,
        "rejected": 1,
        "auto": 0,
        "decided": 3,
        "acceptance": pytest.approx(1 / 3),
    }
    assert [r.action for r in audit_rows(rt, f"review:{b.id}")] == [
        "review.submitted",
        "review.edit_proposed",
        "review.refused",
        "review.edited",
    ]


def test_nobody_reviews_their_own_draft_and_agents_cannot_review(rt: Runtime) -> None:
    own = _submit(rt, who="lena")
    with pytest.raises(Denied, match="four-eyes"):
        decide_draft(rt, own.id, "lena", "approve")
    other = _submit(rt)
    with pytest.raises(Denied):
        decide_draft(rt, other.id, "ben", "approve")
    with pytest.raises(Denied):
        decide_draft(rt, other.id, "omar", "approve")
    assert get_review(rt, other.id).status == "pending"


def test_an_escalated_draft_shows_who_has_it_and_moves_on_when_its_sla_passes(rt: Runtime) -> None:
    clock = ManualClock()
    item = _submit(rt, reason="sensitive_topic", clock=clock)
    assert item.status == "escalated" and item.assigned_role == "lead"
    assert item.sla_due_at == clock.now() + timedelta(hours=2)
    clock.advance(timedelta(hours=2))
    assert tick(rt, clock=clock).reviews_escalated == [item.id]
    moved = get_review(rt, item.id)
    assert moved.assigned_role == "finance" and moved.escalation_level == 1
    assert reviewer_roles(rt, moved) == ["lead", "finance"]
    assert decide_draft(rt, item.id, "farid", "approve", clock=clock).decided_by == "farid"


def test_a_draft_escalated_to_a_role_without_review_permission_can_be_decided_by_it(rt: Runtime) -> None:
    clock = ManualClock()
    item = _submit(rt, reason="no_sources", clock=clock, groundedness=None)
    clock.advance(timedelta(hours=4))
    tick(rt, clock=clock)
    assert get_review(rt, item.id).assigned_role == "operator"
    # the charter's escalation rule is the grant: omar (operator) has no review.decide permission
    assert (
        decide_draft(rt, item.id, "omar", "reject", reason="out_of_scope", clock=clock).status == "rejected"
    )


def test_submissions_are_validated(rt: Runtime) -> None:
    with pytest.raises(UsageError):
        _submit(rt, reason="because_the_model_said_so")
    with pytest.raises(UsageError):
        _submit(rt, groundedness=float("nan"))
    with pytest.raises(UsageError):
        _submit(rt, groundedness=1.5)


def test_with_review_escalated_only_unescalated_drafts_are_approved_by_policy(project: Path) -> None:
    data = yaml.safe_load(project.read_text())
    data["review"]["drafts"] = "escalated"
    project.write_text(yaml.safe_dump(data, sort_keys=False))
    runtime = Runtime.open(project)
    plain = _submit(runtime)
    assert plain.status == "approved" and plain.decision == "auto" and plain.decided_by == "policy"
    assert _submit(runtime, reason="out_of_scope").status == "escalated"
    assert review_stats(runtime)["decided"] == 0
    runtime.close()


def test_concurrent_review_decisions_have_one_winner(rt: Runtime) -> None:
    item = _submit(rt)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def go(i: int) -> None:
        barrier.wait()
        try:
            decide_draft(rt, item.id, "lena", "approve")
            outcomes.append("ok")
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=go, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["ok"]


def test_free_text_from_reviewers_is_masked_in_the_record(rt: Runtime) -> None:
    item = _submit(rt)
    done = decide_draft(rt, item.id, "lena", "approve", comment="customer asked me to call +1 415 555 0100")
    assert "415 555 0100" not in (done.comment or "")
    rows = audit_rows(rt, f"review:{item.id}")
    assert all("415 555 0100" not in str(r.details) for r in rows)


@pytest.mark.parametrize("reason", [None, "low_groundedness"])
def test_submit_returns_exactly_what_is_stored(rt: Runtime, reason: str | None) -> None:
    """submit_draft builds its result without reading the row back; it must equal the stored row."""
    item = _submit(rt, reason=reason, clock=ManualClock())
    assert item == get_review(rt, item.id)
