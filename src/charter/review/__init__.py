"""Human decisions: approval requests for tool actions, the review queue for drafts, SLAs and escalation.

* :func:`decide_approval` approves or rejects an approval request (approving runs the action exactly once).
* :func:`submit_draft` queues a draft; :func:`decide_draft` approves, edits or rejects it.
* :func:`tick` expires and escalates whatever is due; the :class:`Clock` is injectable (:class:`ManualClock`).
"""

from charter.review._approvals import approver_roles, decide_approval, get_approval, list_approvals
from charter.review._clock import Clock, ManualClock, SystemClock, clock_or_default
from charter.review._drafts import (
    ESCALATION_REASONS,
    REJECT_REASONS,
    REVIEW_STATES,
    ReviewItem,
    decide_draft,
    get_review,
    list_reviews,
    review_stats,
    reviewer_roles,
    submit_draft,
)
from charter.review._tick import TickReport, tick

__all__ = [
    "ESCALATION_REASONS",
    "REJECT_REASONS",
    "REVIEW_STATES",
    "Clock",
    "ManualClock",
    "ReviewItem",
    "SystemClock",
    "TickReport",
    "approver_roles",
    "clock_or_default",
    "decide_approval",
    "decide_draft",
    "get_approval",
    "get_review",
    "list_approvals",
    "list_reviews",
    "review_stats",
    "reviewer_roles",
    "submit_draft",
    "tick",
]
