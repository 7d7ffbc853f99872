"""The review queue for drafts: submission by the pipeline, decisions by reviewers, escalation.

``submit_draft`` stores a draft with its citations, agent notes, groundedness and escalation reason.
Which drafts need a human is the charter's ``review.drafts`` (``all``, ``escalated``, ``none``); a draft
with an escalation reason always does. It goes to the role of the first ``review.escalations`` rule for
its reason (else to ``review.reviewer_role``) with that rule's SLA; ``tick`` moves it on to ``then``.

Reviewers approve, edit (the edited text and a unified diff are stored) or reject (a reason from
:data:`REJECT_REASONS` plus free text). Decisions are the ground truth for review acceptance.
"""

from __future__ import annotations

import difflib
import json
import math
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, get_args

from sqlalchemy import select

from charter import access
from charter.errors import Conflict, Denied, NotFound, UsageError
from charter.review._authority import escalation_rule, require_authority, role_chain
from charter.spec import Escalation
from charter.store import sealer_for
from charter.store.clock import Clock, clock_or_default
from charter.store.switches import is_restricted
from charter.store.tables import chunks, documents, review_items
from charter.tools import masked, resolve_principal

if TYPE_CHECKING:
    from charter.runtime import Runtime
    from charter.spec import Principal

#: Why a reviewer rejects a draft (``comment`` adds free text).
REJECT_REASONS: tuple[str, ...] = (
    "inaccurate",
    "unsupported_by_sources",
    "incomplete",
    "wrong_tone",
    "out_of_scope",
    "sensitive_data",
    "policy_violation",
    "other",
)
#: Escalation reasons the pipeline may give: the triggers of ``review.escalations`` (from the schema, so the
#: two never drift apart) other than ``approval_sla`` and ``always``.
ESCALATION_REASONS: tuple[str, ...] = tuple(
    t for t in get_args(Escalation.model_fields["when"].annotation) if t not in ("approval_sla", "always")
)
OPEN_REVIEW_STATES = ("pending", "escalated")
REVIEW_STATES = ("pending", "escalated", "approved", "rejected")
DraftDecision = Literal["approve", "edit", "reject"]


@dataclass(frozen=True)
class ReviewItem:
    """A draft in (or through) the review queue."""

    id: str
    request_id: str | None
    submitter: str
    question: str
    draft: str
    citations: list[Any]
    agent_notes: Any
    groundedness: float | None
    escalation_reason: str | None
    status: str
    assigned_role: str | None
    escalation_level: int
    sla_due_at: datetime | None
    created_at: datetime
    updated_at: datetime
    decision: str | None  # approved | edited | rejected | auto
    decided_by: str | None
    decided_at: datetime | None
    final_text: str | None
    diff: str | None
    reject_reason: str | None
    comment: str | None
    version: int
    assigned_user: str | None = None  # escalated to this user: no holder of the role may read its sources
    routing: str | None = None  # why it is routed the way it is (said to the people who see it)
    subject_id: str | None = None  # whom the conversation is about: a tool's subject_argument must name them
    edited_by: str | None = None  # a reviewer's edit waits for another reviewer's approval (four-eyes)
    edit_checks: Any = None  # what the checks found in that edit (groundedness, flags)

    def to_dict(self) -> dict[str, Any]:
        return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in asdict(self).items()}


_SEALED_TEXT = ("question", "draft", "final_text", "diff")


def _item(row: Any, rt: Runtime) -> ReviewItem:
    """A stored row as an item; the work product (question, draft, edit, diff, notes) is unsealed here."""
    sealer = sealer_for(rt)
    values = {c.name: getattr(row, c.name) for c in review_items.columns}
    for name in _SEALED_TEXT:
        values[name] = sealer.open(values[name])
    values["agent_notes"] = sealer.open_json(values["agent_notes"])
    return ReviewItem(**values)


def route(rt: Runtime, item: ReviewItem, role: str | None) -> tuple[str | None, str | None]:
    """Who ``item`` goes to when it is with ``role``: ``(None, None)`` when a holder of the role (other than
    the submitter) may read every source it cites; else ``(owner, why)``, the owner of the restricting
    source (``sources[].owner``, else ``owners.sources``) who may read them; else ``(None, why)``: nobody
    qualifies and the item waits for an operator, which ``why`` says."""
    from charter.review._visibility import eligible_reviewers  # built on this module's reads

    if role is None:
        return None, None
    if eligible_reviewers(rt, item, [role]):
        return None, None
    members = [p.id for p in rt.charter.principals.values() if role in p.roles and p.active]
    owners = access.restricting_owners(rt, item, members)
    names = ", ".join(sorted({r.source_id for r in access.item_sources(item)})) or "its sources"
    for owner in owners:
        who = rt.charter.principals.get(owner)
        if (
            who is not None
            and who.id != item.submitter
            and who.active
            and access.may_read_item(rt, who, item)
        ):
            return owner, (
                f"no {role} may read every source of this draft ({names}); escalated to {owner}, "
                "owner of the restricting source"
            )
    return None, (
        f"no {role} may read every source of this draft ({names}) and no source owner other than the "
        f"submitter may ({', '.join(owners) or 'no owner'}); an operator must assign a reader"
    )


def _seal(rt: Runtime, values: dict[str, Any]) -> dict[str, Any]:
    """Seal the work-product columns before they are written (see charter.store._sealing)."""
    sealer = sealer_for(rt)
    out = dict(values)
    for name in _SEALED_TEXT:
        if name in out and out[name] is not None:
            out[name] = sealer.seal(out[name])
    if "agent_notes" in out:
        out["agent_notes"] = sealer.seal_json(out["agent_notes"])
    return out


def get_review(rt: Runtime, item_id: str) -> ReviewItem:
    with rt.store.connect() as conn:
        row = conn.execute(select(review_items).where(review_items.c.id == item_id)).first()
    if row is None:
        raise NotFound(f"no review item {item_id!r}")
    return _item(row, rt)


def list_reviews(
    rt: Runtime,
    *,
    status: str | list[str] | None = None,
    principal: Principal | str | None = None,
    request_id: str | None = None,
    limit: int = 200,
) -> list[ReviewItem]:
    """Review items, newest first. With ``principal``: those they submitted or may decide now."""
    query = select(review_items).order_by(review_items.c.created_at.desc(), review_items.c.id).limit(limit)
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        bad = [s for s in statuses if s not in REVIEW_STATES]
        if bad:
            raise UsageError(f"unknown status {bad[0]!r}; expected one of: {', '.join(REVIEW_STATES)}")
        query = query.where(review_items.c.status.in_(statuses))
    if request_id is not None:
        query = query.where(review_items.c.request_id == request_id)
    with rt.store.connect() as conn:
        items = [_item(r, rt) for r in conn.execute(query)]
    if principal is None:
        return items
    from charter.review._visibility import may_see_review  # built on this module's reads

    who = resolve_principal(rt, principal)
    return [i for i in items if may_see_review(rt, who, i)]


def reviewer_roles(rt: Runtime, item: ReviewItem) -> list[str]:
    """Roles that may decide ``item`` now: the first assignee and each role it escalated to."""
    trigger = item.escalation_reason or "always"
    first = _initial_role(rt, item.escalation_reason)
    return role_chain(rt, trigger, first, item.escalation_level)


def _initial_role(rt: Runtime, reason: str | None) -> str:
    rule = escalation_rule(rt, reason or "always", None)
    return rule.to if rule is not None else rt.spec.review.reviewer_role


def _check_submission(escalation_reason: str | None, groundedness: float | None, citations: Any) -> None:
    if escalation_reason is not None and escalation_reason not in ESCALATION_REASONS:
        raise UsageError(
            f"unknown escalation reason {escalation_reason!r}; expected one of: "
            f"{', '.join(ESCALATION_REASONS)}"
        )
    if groundedness is not None and (
        isinstance(groundedness, bool)
        or not isinstance(groundedness, int | float)
        or not math.isfinite(groundedness)
        or not 0 <= groundedness <= 1
    ):
        raise UsageError("groundedness must be a number between 0 and 1")
    if not isinstance(citations, list):
        raise UsageError("citations must be a list")


def _place(
    rt: Runtime,
    row: dict[str, Any],
    *,
    needs_review: bool,
    escalation_reason: str | None,
    draft: str,
    now: datetime,
) -> None:
    """Set a new item's status and assignment on ``row``: queued for the escalation rule's role (and routed
    to a reviewer who may read its sources, :func:`route`), or approved by policy."""
    if needs_review:
        rule = escalation_rule(rt, escalation_reason or "always", None)
        row.update(
            status="escalated" if escalation_reason else "pending",
            assigned_role=rule.to if rule else rt.spec.review.reviewer_role,
            sla_due_at=now + rule.sla if rule else None,
        )
    else:
        row.update(
            status="approved",
            assigned_role=None,
            sla_due_at=None,
            decision="auto",
            decided_by="policy",
            decided_at=now,
            final_text=draft,
        )
    if needs_review:
        columns: dict[str, Any] = {c.name: row.get(c.name) for c in review_items.columns}
        draft_item = ReviewItem(**columns)
        row["assigned_user"], row["routing"] = route(rt, draft_item, row["assigned_role"])
        if row["routing"] is not None:
            row["status"] = "escalated"


def submit_draft(
    rt: Runtime,
    *,
    request_id: str | None,
    principal: Principal | str,
    question: str,
    draft: str,
    citations: list[Any],
    agent_notes: Any = None,
    groundedness: float | None = None,
    escalation_reason: str | None = None,
    subject_id: str | None = None,
    clock: Clock | None = None,
) -> ReviewItem:
    """Queue a draft for review (or record it as approved by policy when the charter needs no review).

    It is routed only to reviewers who may read every source it cites (see :func:`route`)."""
    now = clock_or_default(clock).now()
    who = resolve_principal(rt, principal)
    _check_submission(escalation_reason, groundedness, citations)
    mode = rt.spec.review_drafts
    needs_review = escalation_reason is not None or mode == "all" or is_restricted(rt)
    row: dict[str, Any] = {
        "id": "rev_" + secrets.token_hex(12),
        "request_id": request_id,
        "submitter": who.id,
        "question": question,
        "draft": draft,
        "citations": citations,
        "agent_notes": agent_notes or [],
        "groundedness": float(groundedness) if groundedness is not None else None,
        "escalation_reason": escalation_reason,
        "escalation_level": 0,
        "subject_id": subject_id,
        "created_at": now,
        "updated_at": now,
        "version": 0,
    }
    _place(rt, row, needs_review=needs_review, escalation_reason=escalation_reason, draft=draft, now=now)
    sealed = _seal(rt, row)
    # what a read-back would return, without the round trip: JSON columns as JSON gives them back
    for name in ("citations", "agent_notes"):
        row[name] = json.loads(json.dumps(row[name]))
    stored: dict[str, Any] = {c.name: row.get(c.name) for c in review_items.columns}
    item = ReviewItem(**stored)
    # the queued draft and its audit entry commit together: no item in the queue without its entry
    with rt.audit.transaction() as tx:
        tx.conn.execute(review_items.insert().values(**sealed))
        tx.append(
            actor=who.id,
            action="review.submitted",
            resource=f"review:{item.id}",
            outcome=item.status,
            details={
                "request_id": request_id,
                "assigned_role": item.assigned_role,
                "assigned_user": item.assigned_user,
                "routing": item.routing,
                "escalation_reason": escalation_reason,
                "groundedness": item.groundedness,
                "review_mode": mode,
            },
        )
    return item


def _transition(rt: Runtime, item: ReviewItem, to: str, now: datetime, **values: Any) -> ReviewItem:
    stmt = (
        review_items.update()
        .where(
            review_items.c.id == item.id,
            review_items.c.version == item.version,
            review_items.c.status.in_(OPEN_REVIEW_STATES),
        )
        .values(status=to, version=item.version + 1, updated_at=now, **_seal(rt, values))
    )
    with rt.store.begin() as conn:
        if conn.execute(stmt).rowcount != 1:
            raise Conflict(f"review item {item.id} was changed concurrently; re-read it and retry")
    return get_review(rt, item.id)


def _check_decision(item: ReviewItem, decision: str, text: str | None, reason: str | None) -> None:
    if decision not in ("approve", "edit", "reject"):
        raise UsageError("decision must be approve, edit or reject")
    if decision == "edit" and (not isinstance(text, str) or not text.strip()):
        raise UsageError("an edit needs the edited text")
    if decision == "reject" and reason not in REJECT_REASONS:
        raise UsageError(f"a rejection needs a reason, one of: {', '.join(REJECT_REASONS)}")
    if item.status not in OPEN_REVIEW_STATES:
        raise Conflict(f"review item {item.id} is already {item.status}")


def _refused(rt: Runtime, who: Principal, item: ReviewItem, decision: str, exc: Denied) -> Denied:
    """``exc``, audited as a refused review decision."""
    rt.audit.append(
        actor=who.id,
        action="review.refused",
        resource=f"review:{item.id}",
        outcome="denied",
        details={"decision": decision, "reasons": exc.reasons},
    )
    return exc


def _reviewer_authority(rt: Runtime, who: Principal, item: ReviewItem, decision: str) -> list[str]:
    """Why ``who`` may take ``decision`` on ``item`` (the authority recorded in the audit entry); raises
    :class:`Denied` when they may not."""
    if who.id != item.submitter and not access.may_read_item(rt, who, item):
        raise Denied(
            f"{who.id} may not read every source this draft cites, so may not review it",
            reasons=["reviewer may not read a cited source"],
        )
    if item.assigned_user is not None and who.id == item.assigned_user:
        if who.id == item.submitter:
            raise Denied(
                f"{who.id} cannot decide their own draft (four-eyes)",
                reasons=["four-eyes: requester == approver"],
            )
        because = [f"escalated to {who.id}: owner of a restricting source"]
    else:
        because = require_authority(
            rt,
            who,
            owner=item.submitter,
            roles=reviewer_roles(rt, item),
            assigned=item.assigned_role,
            escalated=item.escalation_level > 0,
            cedar_action="review.decide",
            resource=None,
            context=None,
            what="draft",
        )
    if decision == "approve" and item.edited_by is not None and who.id == item.edited_by:
        raise Denied(
            f"{who.id} edited this draft; another reviewer must approve the edit (four-eyes)",
            reasons=["four-eyes: editor == approver"],
        )
    return because


def _propose_edit(
    rt: Runtime,
    item: ReviewItem,
    who: Principal,
    text: str,
    checks: dict[str, Any],
    comment: str | None,
    because: list[str],
    now: datetime,
) -> ReviewItem:
    """Store an edit (with its diff and checks) on the open item, which then waits for a second reviewer."""
    diff = "".join(
        difflib.unified_diff(
            item.draft.splitlines(keepends=True),
            text.splitlines(keepends=True),
            fromfile="draft",
            tofile="edited",
        )
    )
    stmt = (
        review_items.update()
        .where(
            review_items.c.id == item.id,
            review_items.c.version == item.version,
            review_items.c.status.in_(OPEN_REVIEW_STATES),
        )
        .values(
            version=item.version + 1,
            updated_at=now,
            edited_by=who.id,
            edit_checks=checks,
            **_seal(rt, {"final_text": text, "diff": diff}),
        )
    )
    with rt.audit.transaction() as tx:
        if tx.conn.execute(stmt).rowcount != 1:
            raise Conflict(f"review item {item.id} was changed concurrently; re-read it and retry")
        tx.append(
            actor=who.id,
            action="review.edit_proposed",
            resource=f"review:{item.id}",
            outcome="needs_second_approval",
            details={
                "request_id": item.request_id,
                "checks": checks,
                "comment": comment,
                "authority": because,
                "at": now.isoformat(),
            },
        )
    return get_review(rt, item.id)


def decide_draft(
    rt: Runtime,
    item_id: str,
    principal: Principal | str,
    decision: DraftDecision,
    *,
    text: str | None = None,
    reason: str | None = None,
    comment: str = "",
    clock: Clock | None = None,
) -> ReviewItem:
    """Approve, edit (``text``) or reject (``reason`` from :data:`REJECT_REASONS`, ``comment``) a draft.

    Only an eligible reviewer decides (a role the item is with, or the user it escalated to; never the
    submitter; able to read every source it cites). An edit runs the draft checks (:func:`check_edit`:
    citations, canaries, personal data refused; groundedness recorded) and stays open: another reviewer
    (not the editor, not the submitter) must approve the edited text (four-eyes), seeing the diff."""
    now = clock_or_default(clock).now()
    who = resolve_principal(rt, principal)
    item = get_review(rt, item_id)
    _check_decision(item, decision, text, reason)
    try:
        because = _reviewer_authority(rt, who, item, decision)
    except Denied as exc:
        raise _refused(rt, who, item, decision, exc) from None
    values: dict[str, Any] = {
        "decided_by": who.id,
        "decided_at": now,
        "comment": masked(rt, comment) or None,
    }
    if decision == "edit":
        assert text is not None
        try:
            checks = check_edit(rt, item, text)
        except Denied as exc:
            raise _refused(rt, who, item, decision, exc) from None
        return _propose_edit(rt, item, who, text, checks, values["comment"], because, now)
    if decision == "approve":
        if item.edited_by is not None:  # approving another reviewer's edit: the edited text is sent
            values.update(decision="edited", final_text=item.final_text, diff=item.diff)
        else:
            values.update(decision="approved", final_text=item.draft)
        to = "approved"
    else:
        values.update(decision="rejected", reject_reason=reason)
        to = "rejected"
    done = _transition(rt, item, to, now, **values)
    rt.audit.append(
        actor=who.id,
        action=f"review.{done.decision}",
        resource=f"review:{item.id}",
        outcome=to,
        details={
            "request_id": item.request_id,
            "reason": reason,
            "comment": values["comment"],
            "authority": because,
            "edited_by": item.edited_by,
            "at": now.isoformat(),
        },
    )
    return done


def _cited_passages(rt: Runtime, item: ReviewItem) -> dict[str, str]:
    """Text of each passage the draft cites (``S1`` → chunk text), read from the index."""
    from sqlalchemy import select as sel

    out: dict[str, str] = {}
    with rt.store.connect() as conn:
        for c in item.citations or []:
            if not isinstance(c, dict) or not isinstance(c.get("id"), str):
                continue
            chunk_id = str(c.get("chunk_id") or "")
            position = int(chunk_id.rsplit("#", 1)[-1]) if chunk_id.rsplit("#", 1)[-1].isdigit() else 0
            text = conn.execute(
                sel(chunks.c.text)
                .join(documents, documents.c.id == chunks.c.doc_pk)
                .where(
                    documents.c.source_id == c.get("source_id"),
                    documents.c.doc_id == c.get("doc_id"),
                    chunks.c.position == position,
                )
            ).scalar()
            if text:
                out[c["id"]] = str(text)
    return out


def check_edit(rt: Runtime, item: ReviewItem, text: str) -> dict[str, Any]:
    """The draft checks on a reviewer's edit, with the pipeline's own functions: citations must refer to the
    draft's passages, no canary token, no personal data or secret that no cited passage holds (refused with
    :class:`Denied`); groundedness is scored and recorded (``low_groundedness`` flags it for the second
    reviewer)."""
    from charter import _answer_checks as checks

    passages = _cited_passages(rt, item)
    cited_ids = {
        c["id"] for c in item.citations or [] if isinstance(c, dict) and isinstance(c.get("id"), str)
    }
    normalised = checks.normalise(text)
    cit = checks.validate_citations(normalised, cited_ids)
    problems: list[str] = []
    if cit.removed:
        problems.append(
            f"citations to passages this draft does not have: {', '.join(sorted(set(cit.removed)))}"
        )
    canaries = checks.find_canaries(normalised, normalised=True)
    if canaries:
        problems.append(f"{len(canaries)} canary token(s)")
    pii = checks.new_pii(normalised, passages)
    if pii:
        problems.append(f"personal data or secrets not in the cited passages: {', '.join(pii)}")
    if problems:
        raise Denied("the edit fails the draft checks: " + "; ".join(problems), reasons=problems)
    scores = checks.score_sentences(cit.text, passages, checks.embedder_for(rt), normalised=True)
    verdict = checks.grounding_verdict(scores, rt.spec.review.grounding)  # the check stage's rule
    flags = ["low_groundedness"] if verdict.low(rt.spec.review.groundedness_threshold) else []
    return {
        "groundedness": None if verdict.score is None else round(verdict.score, 4),
        "citations": cit.valid,
        "flags": flags,
    }


def tick_reviews(rt: Runtime, now: datetime) -> list[str]:
    """Move open drafts past their SLA to their escalation rule's ``then`` role."""
    moved: list[str] = []
    for item in list_reviews(rt, status=list(OPEN_REVIEW_STATES), limit=100_000):
        if item.sla_due_at is None or now < item.sla_due_at:
            continue
        trigger = item.escalation_reason or "always"
        rule = escalation_rule(rt, trigger, item.assigned_role)
        if rule is None or rule.then is None or rule.then == item.assigned_role:
            continue
        following = escalation_rule(rt, trigger, rule.then)
        assigned_user, routing = route(rt, item, rule.then)
        try:
            after = _transition(
                rt,
                item,
                "escalated",
                now,
                assigned_role=rule.then,
                escalation_level=item.escalation_level + 1,
                sla_due_at=now + following.sla if following else None,
                assigned_user=assigned_user or item.assigned_user,
                routing=routing,
            )
        except Conflict:
            continue
        rt.audit.append(
            actor="system",
            action="review.escalated",
            resource=f"review:{item.id}",
            outcome="escalated",
            details={
                "from": item.assigned_role,
                "to": rule.then,
                "assigned_user": after.assigned_user,
                "routing": routing,
                "trigger": trigger,
                "sla_due_at": after.sla_due_at.isoformat() if after.sla_due_at else None,
            },
        )
        moved.append(item.id)
    return moved


def review_stats(rt: Runtime) -> dict[str, Any]:
    """Counts of human decisions (``auto`` excluded) and the acceptance rate: approved as-is / decided."""
    with rt.store.connect() as conn:
        rows = conn.execute(select(review_items.c.decision).where(review_items.c.decision.is_not(None))).all()
    counts = {"approved": 0, "edited": 0, "rejected": 0, "auto": 0}
    for (d,) in rows:
        counts[d] = counts.get(d, 0) + 1
    human = counts["approved"] + counts["edited"] + counts["rejected"]
    return {**counts, "decided": human, "acceptance": counts["approved"] / human if human else None}
