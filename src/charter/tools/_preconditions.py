"""Preconditions a charter can require of a tool call (``tools[].requires``), checked by the system.

A precondition is a function ``(runtime, args, principal) -> None`` that raises :class:`Denied` when the
call must not run; register one with ``@precondition("name")``. Built-in: ``draft_approved`` — the call's
``review_id`` argument names a draft that a reviewer approved (or an edit a second reviewer approved), or
that needed no review, submitted by the caller (or a role in ``review.senders``) for the call's customer.
Unknown precondition names deny (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from charter.errors import Denied, NotFound

if TYPE_CHECKING:
    from charter.runtime import Runtime
    from charter.spec import Principal

Precondition = Callable[["Runtime", dict[str, Any], "Principal"], None]
_PRECONDITIONS: dict[str, Precondition] = {}


def precondition(name: str) -> Callable[[Precondition], Precondition]:
    """Register a precondition under ``name`` (usable in ``tools[].requires``)."""

    def register(fn: Precondition) -> Precondition:
        _PRECONDITIONS[name] = fn
        return fn

    return register


def check_preconditions(
    runtime: Runtime, names: list[str], args: dict[str, Any], principal: Principal
) -> None:
    for name in names:
        fn = _PRECONDITIONS.get(name)
        if fn is None:
            raise Denied(
                f"unknown precondition {name!r}: denied", reasons=[f"requires: {name} (not registered)"]
            )
        fn(runtime, args, principal)


@precondition("draft_approved")
def draft_approved(runtime: Runtime, args: dict[str, Any], principal: Principal) -> None:
    """The ``review_id`` names an approved draft that is bound to this call's context: the caller submitted it
    (or holds a role in ``review.senders``), and ``customer_id`` (when the tool takes one) is the draft's
    customer. A missing draft and someone else's draft get the same answer (ids cannot be probed)."""
    from charter.review import get_review

    review_id = args.get("review_id")
    if not isinstance(review_id, str) or not review_id:
        raise Denied(
            "requires an approved draft: the call has no review_id",
            reasons=["requires: draft_approved (no review_id argument)"],
        )
    not_yours = Denied(
        f"requires an approved draft of yours: no review {review_id!r} you may send",
        reasons=["requires: draft_approved (no such draft for this caller)"],
    )
    try:
        item = get_review(runtime, review_id)
    except NotFound:
        raise not_yours from None
    senders = set(getattr(runtime.spec.review, "senders", []) or [])
    if item.submitter != principal.id and not (senders & set(principal.roles)):
        raise not_yours
    if item.status != "approved":
        raise Denied(
            f"requires an approved draft: review {review_id} is {item.status}",
            reasons=[f"requires: draft_approved (review {review_id} is {item.status})"],
        )
    if "customer_id" in args:
        if item.customer_id is None:
            raise Denied(
                f"review {review_id} names no customer; ask again with the customer id so the reply is bound "
                "to them",
                reasons=["requires: draft_approved (draft has no customer)"],
            )
        if args["customer_id"] != item.customer_id:
            raise Denied(
                f"review {review_id} is for another customer; a draft is sent only to its own customer",
                reasons=["requires: draft_approved (customer_id differs from the draft's customer)"],
            )
