"""The source registry as operators see it: counts, freshness and approval status per source."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from charter.sources._sync import source_config_hash
from charter.spec import Source
from charter.store import utcnow
from charter.store.tables import source_documents, source_state, sync_runs

if TYPE_CHECKING:
    from charter.context import RuntimeContext
    from charter.retrieval import Index


@dataclass(frozen=True)
class Freshness:
    """How old a source's index is versus its policy. ``state``: ``fresh``, ``stale`` or ``never synced``."""

    state: str
    last_success_at: datetime | None
    age_seconds: float | None
    max_age_seconds: float
    on_stale: str  # "flag" | "exclude"

    @property
    def is_fresh(self) -> bool:
        return self.state == "fresh"

    def as_dict(self) -> dict[str, Any]:
        last = self.last_success_at.isoformat() if self.last_success_at else None
        return {
            "state": self.state,
            "last_success_at": last,
            "age_seconds": self.age_seconds,
            "max_age_seconds": self.max_age_seconds,
            "on_stale": self.on_stale,
        }


def freshness(source: Source, last_success_at: datetime | None, now: datetime) -> Freshness:
    """Freshness of ``source`` given its last successful sync. Never synced counts as not fresh."""
    max_age = source.freshness.max_age.total_seconds()
    if last_success_at is None:
        return Freshness("never synced", None, None, max_age, source.freshness.on_stale)
    age = max(0.0, (now - last_success_at).total_seconds())
    return Freshness(
        "fresh" if age <= max_age else "stale", last_success_at, age, max_age, source.freshness.on_stale
    )


def acl_freshness(source: Source, acl_synced_at: datetime | None, now: datetime) -> Freshness:
    """Freshness of ``source``'s ACLs (last full or ``--acl-only`` sync) against ``freshness.acl_max_age``
    (default ``max_age``); ``on_stale`` is ``freshness.on_acl_stale`` (default ``exclude``: fail closed)."""
    policy = source.freshness
    max_age = (policy.acl_max_age or policy.max_age).total_seconds()
    if acl_synced_at is None:
        return Freshness("never synced", None, None, max_age, policy.on_acl_stale)
    age = max(0.0, (now - acl_synced_at).total_seconds())
    return Freshness("fresh" if age <= max_age else "stale", acl_synced_at, age, max_age, policy.on_acl_stale)


_LAST_SUCCESS = select(source_state.c.source_id, source_state.c.last_success_at).where(
    source_state.c.last_success_at.is_not(None)
)


def last_successful_syncs(rt: RuntimeContext) -> dict[str, datetime]:
    """Last successful sync time per source id."""
    with rt.store.connect() as conn:
        return dict(conn.execute(_LAST_SUCCESS).tuples().all())


def source_freshness(rt: RuntimeContext, now: datetime | None = None) -> dict[str, Freshness]:
    """Freshness of every source in the charter (the retrieve stage flags or excludes stale ones)."""
    now = now or utcnow()
    last = last_successful_syncs(rt)
    return {s.id: freshness(s, last.get(s.id), now) for s in rt.spec.sources}


#: RuntimeContext state key of a source's approval recorded in the database (``charter sources approve SOURCE``).
APPROVAL_KEY_PREFIX = "sources.approval."


def recorded_approval(rt: RuntimeContext, source_id: str) -> dict[str, Any] | None:
    """The approval recorded in the database for ``source_id`` (``{by, at, config_hash}``), or None."""
    value = rt.get_state(APPROVAL_KEY_PREFIX + source_id)
    return dict(value) if isinstance(value, dict) else None


def approve_source(rt: RuntimeContext, source: Source, actor: str) -> dict[str, Any]:
    """Record ``actor``'s approval of ``source``'s current configuration in the database (audited).

    Like prompt approvals, it lives in the database, not the charter: approving a source does not change
    the charter's fingerprint, so eval runs and gate evidence bound to it stay valid. The caller checks
    that ``actor`` may approve (the source owner or ``owners.sources``)."""
    record = {"by": actor, "at": utcnow().isoformat(), "config_hash": source_config_hash(source)}
    rt.set_state(APPROVAL_KEY_PREFIX + source.id, record)
    rt.audit.append(
        actor=actor,
        action="sources.approved",
        resource=f"source:{source.id}",
        outcome="approved",
        details=record,
    )
    return record


def approval_status(rt: RuntimeContext, source: Source) -> dict[str, Any]:
    """Who approved the source and whether the approval still covers its current configuration.

    The approval is the one recorded in the database (``charter sources approve SOURCE``) when there is
    one, else the charter's ``sources[].approval``. ``state``: ``approved`` (bound to the current config
    hash), ``approved_unbound`` (no ``config_hash`` recorded), ``config_changed`` (the config changed since
    it was approved) or ``unapproved``. ``recorded_in``: ``database``, ``charter`` or None.
    """
    current = source_config_hash(source)
    recorded = recorded_approval(rt, source.id)
    a = source.approval
    if recorded is not None:
        by, at, bound, where = recorded.get("by"), recorded.get("at"), recorded.get("config_hash"), "database"
    elif a is not None:
        by, at, bound, where = a.by, a.at.isoformat(), a.config_hash, "charter"
    else:
        return {
            "state": "unapproved",
            "by": None,
            "at": None,
            "config_hash": None,
            "current_config_hash": current,
            "matches": None,
            "approver_active": None,
            "recorded_in": None,
        }
    approver = rt.charter.principals.get(str(by))
    matches = None if bound is None else bound == current
    state = "approved_unbound" if matches is None else "approved" if matches else "config_changed"
    return {
        "state": state,
        "by": by,
        "at": at,
        "config_hash": bound,
        "current_config_hash": current,
        "matches": matches,
        "approver_active": bool(approver and approver.active),
        "recorded_in": where,
    }


def source_statuses(
    rt: RuntimeContext,
    *,
    index: Index | None = None,
    now: datetime | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> list[dict[str, Any]]:
    """One row per source in the charter: governance metadata, counts, freshness and approval."""
    if index is None:
        from charter.retrieval import Index as _Index

        index = _Index.for_runtime(rt)
    now = now or clock()
    counts = index.counts()
    with rt.store.connect() as conn:
        states = {r.source_id: r for r in conn.execute(select(source_state))}
        t = sync_runs
        latest = select(func.max(t.c.id)).group_by(t.c.source_id).scalar_subquery()
        last_runs: dict[str, Any] = {
            r.source_id: r
            for r in conn.execute(
                select(t.c.source_id, t.c.id, t.c.status, t.c.finished_at, t.c.summary, t.c.error).where(
                    t.c.id.in_(latest)
                )
            )
        }
    out = []
    for s in rt.spec.sources:
        st = states.get(s.id)
        fresh = freshness(s, st.last_success_at if st else None, now)
        acl_fresh = acl_freshness(s, st.acl_synced_at if st else None, now)
        c = counts.get(s.id, {})
        run = last_runs.get(s.id)
        out.append(
            {
                "id": s.id,
                "title": s.title or s.id,
                "connector": s.connector,
                "location": s.location,
                "owner": s.owner,
                "sensitivity": s.sensitivity,
                "permission_model": s.permissions.model,
                "groups": list(s.permissions.groups),
                "allowed_in_prompts": s.allowed_in_prompts,
                "cadence": s.cadence,
                "documents": int(c.get("documents", 0)),
                "chunks": int(c.get("chunks", 0)),
                "private_by_default": int(c.get("private_by_default", 0)),
                "last_successful_sync": fresh.last_success_at.isoformat() if fresh.last_success_at else None,
                "age_seconds": fresh.age_seconds,
                "max_age_seconds": fresh.max_age_seconds,
                "freshness": fresh.state,
                "on_stale": fresh.on_stale,
                "acl_synced_at": acl_fresh.last_success_at.isoformat() if acl_fresh.last_success_at else None,
                "acl_freshness": acl_fresh.state,
                "on_acl_stale": acl_fresh.on_stale,
                "last_run": None
                if run is None
                else {
                    "id": run.id,
                    "status": run.status,
                    "finished_at": run.finished_at.isoformat() if run.finished_at else None,
                    "failed": int((run.summary or {}).get("failed", 0)),
                    "error": run.error,
                },
                "config_hash": source_config_hash(s),
                "approval": approval_status(rt, s),
            }
        )
    return out


def source_documents_listing(
    rt: RuntimeContext, source_id: str, *, index: Index | None = None
) -> list[dict[str, Any]]:
    """Documents of one source as the last sync recorded them, with chunk counts from the index."""
    if index is None:
        from charter.retrieval import Index as _Index

        index = _Index.for_runtime(rt)
    states = index.document_states(source_id)
    t = source_documents
    with rt.store.connect() as conn:
        rows = conn.execute(select(t).where(t.c.source_id == source_id).order_by(t.c.doc_id)).all()
    out = []
    for r in rows:
        st = states.get(r.doc_id)
        out.append(
            {
                "doc_id": r.doc_id,
                "title": r.title,
                "url": r.url,
                "format": r.format,
                "acl": list(r.acl_tokens),
                "private_by_default": bool(r.private_by_default),
                "acl_error": r.acl_error,
                "chunks": st.chunk_count if st else 0,
                "indexed": st is not None,
                "updated_at": r.updated_at.isoformat() if r.updated_at else None,
                "failed_reason": r.failed_reason,
            }
        )
    return out
