"""Who may open which trace: :mod:`charter.access`'s rules applied to the trace store. Your own traces, or
any with ``traces.read_all``; anything else is :class:`~charter.errors.NotFound` with the same message as a
missing id. What is shown has every part from a document the reader cannot read redacted
(:func:`charter.access.redact_trace`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from charter import access
from charter.errors import NotFound
from charter.telemetry._wiring import trace_store_for

if TYPE_CHECKING:
    from charter.spec import Principal
    from charter.telemetry._runtime import TelemetryRuntime


def trace_list_filter(rt: TelemetryRuntime, principal: Principal) -> str | None:
    """``None`` when the principal may list every request, else the stored key of their own id."""
    return (
        None if access.may_list_all_traces(rt, principal) else trace_store_for(rt).principal_key(principal.id)
    )


def visible_trace(rt: TelemetryRuntime, principal: Principal, request_id: str) -> dict[str, Any]:
    """The trace ``request_id`` as ``principal`` may see it; NotFound (same as a missing id) if not theirs."""
    store = trace_store_for(rt)
    try:
        doc = store.get(request_id)
    except NotFound:
        raise NotFound(f"no trace {request_id!r}") from None
    if doc.get("principal_id") != store.principal_key(principal.id) and not access.may_list_all_traces(
        rt, principal
    ):
        raise NotFound(f"no trace {request_id!r}")
    return access.redact_trace(rt, principal, doc)
