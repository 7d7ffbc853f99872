"""Human decisions: approval requests for tool actions, the review queue for drafts, SLAs and escalation.

* :func:`decide_approval` approves or rejects an approval request (approving runs the action exactly once).
* :func:`submit_draft` queues a draft; :func:`decide_draft` approves, edits or rejects it.
* :func:`tick` expires and escalates whatever is due; the :class:`Clock` is injectable (:class:`ManualClock`).
* :func:`visible_review`, :func:`redact_review`, :func:`visible_approval`, :func:`eligible_reviewers`,
  :func:`assigned_to` — who may see and decide which item (:mod:`charter.access`'s rules on these records).
"""

from charter.review._approvals import approver_roles, decide_approval, get_approval, list_approvals
from charter.review._authority import role_chain
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
from charter.review._visibility import (
    assigned_to,
    eligible_reviewers,
    is_eligible_reviewer,
    may_see_review,
    redact_review,
    visible_approval,
    visible_review,
)
from charter.store.clock import Clock, ManualClock, SystemClock, clock_or_default

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
    "assigned_to",
    "clock_or_default",
    "decide_approval",
    "decide_draft",
    "eligible_reviewers",
    "get_approval",
    "get_review",
    "is_eligible_reviewer",
    "list_approvals",
    "list_reviews",
    "may_see_review",
    "redact_review",
    "review_stats",
    "reviewer_roles",
    "role_chain",
    "submit_draft",
    "tick",
    "visible_approval",
    "visible_review",
]
