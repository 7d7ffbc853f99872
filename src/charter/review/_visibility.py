"""Who may see which review items and approval requests: :mod:`charter.access`'s rules applied to the
review queue's own records (the roles an item is with come from here, the document rules from there).

Any principal who may not open an item gets :class:`~charter.errors.NotFound` with the *same* message as a
missing id, so probing ids reveals nothing; what they may open is shown with every part from a document
they cannot read redacted (:func:`redact_review`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from charter import access
from charter.errors import NotFound
from charter.review._approvals import approver_roles, get_approval
from charter.review._drafts import ReviewItem, get_review, reviewer_roles
from charter.store.tables import review_items

if TYPE_CHECKING:
    from charter.context import RuntimeContext
    from charter.runtime import Runtime
    from charter.spec import Principal


def is_eligible_reviewer(rt: Runtime, principal: Principal, item: ReviewItem) -> bool:
    """May decide ``item`` now, as far as roles and reading go: holds a role it is with (or is the user it
    escalated to), is not the submitter, is active, and may read every source it cites."""
    if principal.id == item.submitter or not principal.active:
        return False
    assigned_user = getattr(item, "assigned_user", None)
    by_role = bool(set(reviewer_roles(rt, item)) & set(principal.roles))
    if not by_role and principal.id != assigned_user:
        return False
    return access.may_read_item(rt, principal, item)


def eligible_reviewers(rt: Runtime, item: ReviewItem, roles: Iterable[str] | None = None) -> list[str]:
    """Ids of principals who hold one of ``roles`` (default: the roles the item is with), are not the
    submitter, and may read every source the item cites."""
    wanted = set(reviewer_roles(rt, item) if roles is None else roles)
    out = []
    for p in rt.charter.principals.values():
        if p.id == item.submitter or not p.active or not (set(p.roles) & wanted):
            continue
        if access.may_read_item(rt, p, item):
            out.append(p.id)
    return sorted(out)


def may_see_review(rt: Runtime, principal: Principal, item: ReviewItem) -> bool:
    """The submitter, or an eligible reviewer (see :func:`is_eligible_reviewer`)."""
    return item.submitter == principal.id or is_eligible_reviewer(rt, principal, item)


def visible_review(rt: Runtime, principal: Principal, item_id: str) -> ReviewItem:
    """The review item, or NotFound with the same message whether it is missing or not visible."""
    try:
        item = get_review(rt, item_id)
    except NotFound:
        raise NotFound(f"no review item {item_id!r}") from None
    if not may_see_review(rt, principal, item):
        raise NotFound(f"no review item {item_id!r}")
    return item


def redact_review(rt: Runtime, principal: Principal, item: ReviewItem) -> dict[str, Any]:
    """``item`` as a dict for ``principal``: parts from unreadable documents redacted (draft, notes, edit,
    diff), and the reviewer roles / eligibility it is routed by."""
    reader = access.Reader(rt, principal)
    d = item.to_dict()
    citations, texts, unreadable = access.redact_parts(
        reader,
        citations=list(item.citations or []),
        texts={
            "draft": item.draft,
            "agent_notes": item.agent_notes if isinstance(item.agent_notes, str) else None,
            "final_text": item.final_text,
            "diff": item.diff,
        },
    )
    d["citations"] = citations
    for k, v in texts.items():
        if k == "agent_notes" and not isinstance(item.agent_notes, str):
            notes = item.agent_notes if isinstance(item.agent_notes, list) else []
            d[k] = [
                access.redact_text(n, {}, set(unreadable), tainted=bool(unreadable))
                if isinstance(n, str)
                else n
                for n in notes
            ]
        else:
            d[k] = v
    if unreadable:
        d["redacted_sources"] = len(unreadable)
    d["reviewer_roles"] = reviewer_roles(rt, item)
    return d


def visible_approval(rt: Runtime, principal: Principal, approval_id: str) -> Any:
    """An approval request: the requester's, or one a holder of an approver role may see; NotFound (the
    same as a missing id) otherwise."""
    try:
        action = get_approval(rt, approval_id)
    except NotFound:
        raise NotFound(f"no approval request {approval_id!r}") from None
    if action.requester != principal.id and not set(approver_roles(rt, action)) & set(principal.roles):
        raise NotFound(f"no approval request {approval_id!r}")
    return action


def assigned_to(rt: RuntimeContext, principal: Principal, item_id: str | None = None) -> bool:
    """Whether an open draft (``item_id``, or any) escalated to ``principal`` as the owner of a restricting
    source: that escalation is their grant to use the review queue, as ``review.escalations`` is for roles."""
    q = select(review_items.c.id).where(
        review_items.c.assigned_user == principal.id, review_items.c.status.in_(("pending", "escalated"))
    )
    if item_id is not None:
        q = q.where(review_items.c.id == item_id)
    with rt.store.connect() as conn:
        return conn.execute(q.limit(1)).first() is not None
