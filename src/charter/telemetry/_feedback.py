"""Feedback on answers: thumbs up/down with reason categories and a (masked) comment, linked to the request.

Review decisions are feedback too: :func:`review_decisions` reads them from the review queue (approved
unchanged, edited, rejected) so the report and the trace view need no second copy of them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect, select

from charter.errors import NotFound, UsageError
from charter.store import Store, utcnow
from charter.store.tables import feedback, traces

if TYPE_CHECKING:
    from charter.spec import Principal
    from charter.telemetry._runtime import TelemetryRuntime

#: Why an answer was rated down (or up). Unknown categories are refused.
FEEDBACK_REASONS: tuple[str, ...] = (
    "helpful",
    "accurate",
    "inaccurate",
    "incomplete",
    "wrong_source",
    "outdated",
    "not_grounded",
    "wrong_tone",
    "unsafe",
    "other",
)
#: Review decisions as the report counts them.
REVIEW_OUTCOMES: dict[str, str] = {"approved": "unchanged", "edited": "edited", "rejected": "rejected"}


def record_feedback(
    rt: TelemetryRuntime,
    request_id: str,
    principal: Principal,
    *,
    rating: int | str,
    reasons: Iterable[str] = (),
    comment: str | None = None,
    at: datetime | None = None,
) -> str:
    """Store one rating for ``request_id`` by ``principal`` (the asker, or a user who may read all traces)."""
    from charter.telemetry._wiring import trace_store_for

    score = _rating(rating)
    reasons = sorted(set(reasons))
    unknown = [r for r in reasons if r not in FEEDBACK_REASONS]
    if unknown:
        raise UsageError(f"unknown feedback reason(s) {unknown}; expected some of {list(FEEDBACK_REASONS)}")
    if comment is not None and len(comment) > 4000:
        raise UsageError("feedback comment is longer than 4000 characters")
    store = trace_store_for(rt)
    key = store.principal_key(principal.id)
    with rt.store.connect() as conn:
        owner = conn.execute(select(traces.c.principal_id).where(traces.c.request_id == request_id)).scalar()
    if owner is None:
        raise NotFound(f"no trace {request_id!r}")
    if (
        owner != key
        and not rt.authorizer.authorize(
            principal, "traces.read_all", f"workflow:{rt.spec.workflow.id}"
        ).allowed
    ):
        raise NotFound(f"no trace {request_id!r}")  # same answer as a missing trace: no existence leak
    fid = "fb_" + uuid.uuid4().hex[:20]
    with rt.store.begin() as conn:
        conn.execute(
            feedback.insert().values(
                id=fid,
                request_id=request_id,
                created_at=at or utcnow(),
                principal_id=key,
                rating=score,
                reasons=reasons,
                comment=store.protect(comment, "feedback_comment") if comment else None,
            )
        )
    store.notify_changed()
    return fid


def _rating(rating: int | str) -> int:
    table = {"up": 1, "+1": 1, "1": 1, "down": -1, "-1": -1}
    value = table.get(str(rating).strip().lower())
    if value is None:
        raise UsageError(f"rating must be 'up' or 'down' (got {rating!r})")
    return value


def feedback_for_request(store: Store, request_id: str) -> list[dict[str, Any]]:
    with store.connect() as conn:
        rows = conn.execute(
            select(
                feedback.c.id,
                feedback.c.created_at,
                feedback.c.principal_id,
                feedback.c.rating,
                feedback.c.reasons,
                feedback.c.comment,
            )
            .where(feedback.c.request_id == request_id)
            .order_by(feedback.c.created_at)
        )
        return [{**dict(r._mapping), "created_at": r.created_at.isoformat()} for r in rows]


def _has_table(store: Store, name: str) -> bool:
    with store.connect() as conn:
        return bool(inspect(conn).has_table(name))


def review_decisions(
    store: Store,
    *,
    request_ids: list[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    started: tuple[datetime, datetime] | None = None,
) -> list[dict[str, Any]]:
    """Human review decisions linked to requests: ``outcome`` is unchanged, edited or rejected.
    ``started`` keeps the decisions on requests whose trace started in ``[a, b)`` (a join on ``traces``).

    Only the decision, its reason and time are read — never the draft or edited text.
    """
    if not _has_table(store, "review_items"):
        return []
    from charter.store.tables import review_items as ri

    q = select(ri.c.request_id, ri.c.decision, ri.c.reject_reason, ri.c.decided_at).where(
        ri.c.decision.in_(list(REVIEW_OUTCOMES))
    )
    if request_ids is not None:
        q = q.where(ri.c.request_id.in_(request_ids))
    if since is not None:
        q = q.where(ri.c.decided_at >= since)
    if until is not None:
        q = q.where(ri.c.decided_at < until)
    if started is not None:
        q = q.join_from(ri, traces, traces.c.request_id == ri.c.request_id).where(
            (traces.c.started_at >= started[0]) & (traces.c.started_at < started[1])
        )
    with store.connect() as conn:
        return [
            {
                "request_id": r.request_id,
                "outcome": REVIEW_OUTCOMES[r.decision],
                "reason": r.reject_reason,
                "decided_at": r.decided_at.isoformat() if r.decided_at else None,
            }
            for r in conn.execute(q)
        ]
