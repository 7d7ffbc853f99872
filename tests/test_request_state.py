"""The per-request state read agrees with the switches' own readers, and is never cached across requests:
turning the kill switch or restricted mode on is seen by the very next read (and by the next ask)."""

from __future__ import annotations

from pathlib import Path

import pytest

from charter.errors import Denied
from charter.gate import is_restricted, set_restricted
from charter.pipeline import ask, read_request_state
from charter.runtime import Runtime
from charter.tools import is_killed, set_kill_switch


def test_state_read_follows_the_switches(project: Path) -> None:
    rt = Runtime.open(project)
    try:
        s = read_request_state(rt)
        assert (s.killed, s.restricted) == (False, False) == (is_killed(rt), is_restricted(rt))
        set_restricted(rt, True, actor="omar", reason="drift")
        s = read_request_state(rt)
        assert (s.killed, s.restricted) == (False, True) == (is_killed(rt), is_restricted(rt))
        set_kill_switch(rt, "omar", True, reason="incident")
        s = read_request_state(rt)
        assert (s.killed, s.restricted) == (True, True) == (is_killed(rt), is_restricted(rt))
        with pytest.raises(Denied, match="kill switch"):
            ask(rt, rt.charter.principal("ana"), "How long does a refund take?", submit_for_review=False)
        set_kill_switch(rt, "omar", False, reason="resolved")
        set_restricted(rt, False, actor="omar", reason="fixed")
        s = read_request_state(rt)
        assert (s.killed, s.restricted) == (False, False)
        assert s.index_version == read_request_state(rt).index_version
    finally:
        rt.close()


@pytest.mark.slow  # syncs a source with the real embedding model
def test_the_one_statement_read_matches_each_tables_own_reader(
    project: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The UNION ALL read converts every column as the per-table reads do (JSON switches, timezone-aware
    sync times, integer counters), on SQLite and PostgreSQL."""
    from charter.retrieval import Index
    from charter.sources import last_successful_syncs, sync_sources

    monkeypatch.setenv("CHARTER_DATABASE_URL", db_url)
    rt = Runtime.open(project)
    try:
        from charter.retrieval import Index as _Index

        empty = read_request_state(rt)
        assert empty.last_syncs == {} and empty.index_version == _Index.for_runtime(rt).version
        sync_sources(rt, "help-center")
        set_kill_switch(rt, "omar", True, reason="drill")
        s = read_request_state(rt)
        assert s.killed and not s.restricted
        assert s.last_syncs == last_successful_syncs(rt) and set(s.last_syncs) == {"help-center"}
        assert all(t.tzinfo is not None for t in s.last_syncs.values())
        index = Index.for_runtime(rt)
        assert s.index_version == index.version
        assert s.index_counters is not None and all(isinstance(c, int) for c in s.index_counters)
    finally:
        rt.close()


def test_search_reuses_the_admission_counters_only_while_they_match_its_snapshot(
    synced_project: Path,
) -> None:
    """The pipeline passes the counters it read at admission; a snapshot at those counters is used without
    a query, a newer store reloads it, and an ACL revoked after the read is still enforced (re-check)."""
    from sqlalchemy import delete, select

    from charter.retrieval import Index
    from charter.store.tables import acl, documents

    rt = Runtime.open(synced_project)
    try:
        ana = rt.charter.principal("ana")
        index = Index.for_runtime(rt)
        q = "How long does a refund take?"
        state = read_request_state(rt)
        first = index.search(ana.acl_tokens, q, k=8, versions=state.index_counters)
        assert first and index.snapshot().content_version == state.index_counters[0]  # type: ignore[index]
        top = first[0]
        # revoke the top document's ACL as a sync does (bumping the ACL counter) after the admission read:
        # the search is handed the old counters, which still match its snapshot
        with rt.store.begin() as conn:
            pk = conn.execute(
                select(documents.c.id).where(
                    (documents.c.source_id == top.source_id) & (documents.c.doc_id == top.doc_id)
                )
            ).scalar_one()
            conn.execute(delete(acl).where(acl.c.doc_pk == pk))
            Index._bump(conn, "acl")
        again = index.search(ana.acl_tokens, q, k=8, versions=state.index_counters)
        assert top.doc_id not in {h.doc_id for h in again}  # the store re-check still applies
        assert len(again) == len(first)  # and the k results are refilled from the reloaded snapshot
    finally:
        rt.close()
