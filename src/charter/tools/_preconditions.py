"""Preconditions a charter can require of a tool call (``tools[].requires``), checked by the system.

A precondition is a function ``(runtime, args, principal) -> None`` that raises :class:`Denied` when the
call must not run; register one with ``@precondition("name")``. One that also declares a keyword
parameter ``tool`` receives the charter's tool entry (:class:`charter.spec.Tool`). Built-in:
``draft_approved`` — the call's ``review_id`` argument names a draft that a reviewer approved (or an edit a
second reviewer approved), or that needed no review, submitted by the caller (or a role in
``review.senders``) for the call's subject (the tool's ``subject_argument``). Unknown precondition names
deny (fail closed).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from charter.errors import Denied
from charter.plugins import Registry, origin_of
from charter.store.tables import review_items

if TYPE_CHECKING:
    from charter.runtime import Runtime
    from charter.spec import Principal, Tool

Precondition = Callable[..., None]  # (runtime, args, principal[, *, tool]) -> None, raises Denied


@dataclass(frozen=True)
class _Registered:
    fn: Precondition
    wants_tool: bool  # declares a ``tool`` parameter: gets the charter's tool entry


def _as_registered(name: str, fn: Any) -> _Registered:
    if not callable(fn):
        raise TypeError(f"@precondition({name!r}) needs a function")
    return _Registered(fn, "tool" in inspect.signature(fn).parameters)


#: the preconditions ``tools[].requires`` may name; entry-point group ``charter.preconditions``
preconditions: Registry[_Registered] = Registry(
    "precondition", group="charter.preconditions", adapt=_as_registered
)


def precondition(name: str) -> Callable[[Precondition], Precondition]:
    """Register a precondition under ``name`` (usable in ``tools[].requires``); a name another definition
    already holds is refused (:class:`charter.plugins.PluginError`)."""

    def register(fn: Precondition) -> Precondition:
        preconditions.add(name, _as_registered(name, fn), origin=origin_of(fn))
        return fn

    return register


def check_preconditions(rt: Runtime, tool: Tool, args: dict[str, Any], principal: Principal) -> None:
    """Run every precondition ``tool.requires`` names; the first that refuses raises :class:`Denied`."""
    for name in tool.requires:
        if name not in preconditions:
            raise Denied(
                f"unknown precondition {name!r}: denied", reasons=[f"requires: {name} (not registered)"]
            )
        registered = preconditions.get(name)
        if registered.wants_tool:
            registered.fn(rt, args, principal, tool=tool)
        else:
            registered.fn(rt, args, principal)


@precondition("draft_approved")
def draft_approved(
    rt: Runtime, args: dict[str, Any], principal: Principal, *, tool: Tool | None = None
) -> None:
    """The ``review_id`` names an approved draft that is bound to this call's context: the caller submitted it
    (or holds a role in ``review.senders``), and the tool's ``subject_argument`` (when it declares one) names
    the draft's subject. A missing draft and someone else's draft get the same answer (ids cannot be
    probed). The draft's submitter, status and subject are read from ``review_items`` (none of them is
    sealed), below :mod:`charter.review`, which builds on the tools."""
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
    with rt.store.connect() as conn:
        item = conn.execute(
            select(review_items.c.submitter, review_items.c.status, review_items.c.subject_id).where(
                review_items.c.id == review_id
            )
        ).first()
    if item is None:
        raise not_yours
    senders = set(getattr(rt.spec.review, "senders", []) or [])
    if item.submitter != principal.id and not (senders & set(principal.roles)):
        raise not_yours
    if item.status != "approved":
        raise Denied(
            f"requires an approved draft: review {review_id} is {item.status}",
            reasons=[f"requires: draft_approved (review {review_id} is {item.status})"],
        )
    argument = tool.subject_argument if tool is not None else None
    if argument is not None:
        if item.subject_id is None:
            raise Denied(
                f"review {review_id} names no subject; ask again naming whom the conversation is about "
                "(`charter ask --subject ID`, `subject_id` in the API) so the reply is bound to them",
                reasons=["requires: draft_approved (draft has no subject)"],
            )
        if args.get(argument) != item.subject_id:
            raise Denied(
                f"review {review_id} is about someone else; a draft is sent only to its own subject "
                f"({argument} must be the draft's)",
                reasons=[f"requires: draft_approved ({argument} differs from the draft's subject)"],
            )
