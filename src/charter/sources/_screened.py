"""Reads of the instruction-screening state of indexed documents (``source_screening``, written by
:mod:`charter.screening` at sync)."""

from __future__ import annotations

from typing import Any


def screened_documents(rt: Any, source_id: str | None = None) -> list[dict[str, Any]]:
    """The flagged documents (of one source, or all), newest first: ``source``, ``doc_id``, ``title``,
    ``state`` (``excluded`` | ``quarantined`` | ``approved``), ``reasons``, ``sentences``, ``content_hash``,
    ``flagged_at``, ``approved_by``, ``approved_at``. Sentences are the screened text itself: show them
    only to the source's owner (they come from its documents)."""
    from sqlalchemy import select

    from charter.store.tables import source_screening as t

    query = select(t).order_by(t.c.flagged_at.desc(), t.c.source_id, t.c.doc_id)
    if source_id is not None:
        query = query.where(t.c.source_id == source_id)
    with rt.store.connect() as conn:
        rows = conn.execute(query).all()
    return [
        {
            "source": r.source_id,
            "doc_id": r.doc_id,
            "title": r.title,
            "state": r.state,
            "reasons": list(r.reasons or []),
            "sentences": list(r.sentences or []),
            "content_hash": r.content_hash,
            "flagged_at": r.flagged_at.isoformat() if r.flagged_at else None,
            "approved_by": r.approved_by,
            "approved_at": r.approved_at.isoformat() if r.approved_at else None,
        }
        for r in rows
    ]
