"""Preconditions a charter can require of a tool call (``tools[].requires``), checked by the system.

A precondition is a function ``(runtime, args, principal) -> None`` that raises :class:`Denied` when the
call must not run; register one with ``@precondition("name")``. Built-in: ``draft_approved`` — the call's
``review_id`` argument names a draft that a reviewer approved (or edited), or that needed no review.
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
    from charter.review import get_review

    review_id = args.get("review_id")
    if not isinstance(review_id, str) or not review_id:
        raise Denied(
            "requires an approved draft: the call has no review_id",
            reasons=["requires: draft_approved (no review_id argument)"],
        )
    try:
        item = get_review(runtime, review_id)
    except NotFound:
        raise Denied(
            f"requires an approved draft: review {review_id!r} does not exist",
            reasons=["requires: draft_approved"],
        ) from None
    if item.status != "approved":
        raise Denied(
            f"requires an approved draft: review {review_id} is {item.status}",
            reasons=[f"requires: draft_approved (review {review_id} is {item.status})"],
        )
