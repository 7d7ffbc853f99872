"""Approvals the launch gate needs that the charter file cannot carry: the role and policy set, and the
acknowledgement of documents that are private by default (no or broken ACL).

Both are records in the runtime state table (no migration), written only by the responsible owner and
audited:

* ``gate.policies_approval`` — ``{by, at, hash}``: the scope owner (``owners.scope``) approves the exact
  policy set the authorizer runs (generated from the roles and tools, plus the custom ``.cedar`` files),
  by its SHA-256 (:func:`policy_set_hash`). Any change to roles, tools or policy files changes the hash.
* ``gate.private_ack.<source>`` — ``{by, at, documents}``: the source's owner acknowledges the listed
  private-by-default documents; a document that becomes private-by-default later is not covered.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from charter.errors import Denied, NotFound
from charter.store import utcnow

if TYPE_CHECKING:
    from charter.runtime import Runtime
    from charter.spec import Principal

POLICIES_KEY = "gate.policies_approval"
PRIVATE_ACK_PREFIX = "gate.private_ack."


def policy_set_hash(rt: Runtime) -> str:
    """SHA-256 of the policy set text the authorizer evaluates."""
    return "sha256:" + hashlib.sha256(rt.authorizer.text.encode("utf-8")).hexdigest()


def policies_approval(rt: Runtime) -> dict[str, Any] | None:
    value = rt.get_state(POLICIES_KEY)
    return dict(value) if isinstance(value, dict) else None


def approve_policies(rt: Runtime, principal: Principal) -> dict[str, Any]:
    """Record the scope owner's approval of the current policy set (audited). Others are refused."""
    owner = rt.spec.owners.scope
    if principal.id != owner:
        rt.audit.append(
            actor=principal.id,
            action="gate.policies_approval",
            resource="policies",
            outcome="denied",
            details={"reason": f"only the scope owner ({owner}) approves"},
        )
        raise Denied(
            f"only the scope owner ({owner}) may approve the policy set", reasons=[f"owners.scope: {owner}"]
        )
    record = {
        "by": principal.id,
        "at": utcnow().isoformat(),
        "hash": policy_set_hash(rt),
        "policies": len(rt.authorizer.policies),
    }
    rt.set_state(POLICIES_KEY, record)
    rt.audit.append(
        actor=principal.id,
        action="gate.policies_approval",
        resource="policies",
        outcome="approved",
        details=record,
    )
    return record


def private_documents(rt: Runtime, source_id: str) -> list[str]:
    """Ids of the source's documents that are private by default (as the last sync recorded them)."""
    from sqlalchemy import select

    from charter.store.tables import source_documents as t

    with rt.store.connect() as conn:
        rows = conn.execute(
            select(t.c.doc_id).where(t.c.source_id == source_id, t.c.private_by_default.is_(True))
        )
        return sorted(r.doc_id for r in rows)


def private_ack(rt: Runtime, source_id: str) -> dict[str, Any] | None:
    value = rt.get_state(PRIVATE_ACK_PREFIX + source_id)
    return dict(value) if isinstance(value, dict) else None


def acknowledge_private(rt: Runtime, source_id: str, principal: Principal) -> dict[str, Any]:
    """The source owner acknowledges its current private-by-default documents (audited)."""
    try:
        source = rt.spec.source(source_id)
    except KeyError:
        raise NotFound(f"no source {source_id!r} in the charter") from None
    if principal.id != source.owner:
        rt.audit.append(
            actor=principal.id,
            action="gate.private_ack",
            resource=f"source:{source_id}",
            outcome="denied",
            details={"reason": f"only the source owner ({source.owner})"},
        )
        raise Denied(
            f"only the source's owner ({source.owner}) may acknowledge its private documents",
            reasons=[f"sources[{source_id}].owner: {source.owner}"],
        )
    record = {"by": principal.id, "at": utcnow().isoformat(), "documents": private_documents(rt, source_id)}
    rt.set_state(PRIVATE_ACK_PREFIX + source_id, record)
    rt.audit.append(
        actor=principal.id,
        action="gate.private_ack",
        resource=f"source:{source_id}",
        outcome="acknowledged",
        details=record,
    )
    return record
