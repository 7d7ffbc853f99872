"""Sync keeps the index true to the sources: incremental, deletions, ACL-only changes, fail-closed ACLs."""

from __future__ import annotations

import json
import os
import socket
from datetime import timedelta

import pytest
from sqlalchemy import select

from charter.errors import Conflict
from charter.retrieval import Index
from charter.sources import acl_hash, source_documents_listing
from charter.store import utcnow
from charter.store.tables import source_state, sync_runs
from tests.sources._embedder import CountingEmbedder
from tests.sources.conftest import DOCS_SOURCE, Workspace, md

REFUNDS = "# Refunds\n\nAnnual plans are refunded pro-rata within 30 days of purchase.\n"
INVOICES = "# Invoices\n\nInvoices are emailed to the billing contact on the first of the month.\n"
SECRET = "# Pricing\n\nThe canary PINEAPPLE-7731 marks the confidential price change.\n"


def index(ws: Workspace) -> Index:
    return Index.for_runtime(ws.rt)


def search_ids(ws: Workspace, user: str, query: str, k: int = 10) -> set[str]:
    tokens = ws.rt.charter.principal(user).acl_tokens
    return {h.doc_id for h in index(ws).search(tokens, query, k=k)}


def seed(ws: Workspace) -> None:
    ws.write("refunds.md", md(REFUNDS, acl="[group:support]"))
    ws.write("invoices.md", md(INVOICES, acl="[public]"))
    ws.write("pricing/secret.md", md(SECRET, acl="[group:pricing-committee]"))


def test_first_sync_adds_everything_and_records_run_state_and_audit(ws: Workspace) -> None:
    seed(ws)
    s = ws.sync()["docs"]
    assert s.status == "succeeded"
    assert s.counts() == {
        "added": 3,
        "updated": 0,
        "acl_changed": 0,
        "deleted": 0,
        "moved": 0,
        "unchanged": 0,
        "private_by_default": 0,
        "failed": 0,
    }
    states = index(ws).document_states("docs")
    assert set(states) == {"refunds.md", "invoices.md", "pricing/secret.md"}
    assert states["pricing/secret.md"].acl_hash == acl_hash(frozenset({"group:pricing-committee"}))
    with ws.rt.store.connect() as conn:
        run = conn.execute(select(sync_runs).where(sync_runs.c.id == s.run_id)).one()
        state = conn.execute(select(source_state).where(source_state.c.source_id == "docs")).one()
    assert run.status == "succeeded" and run.summary["added"] == 3 and run.finished_at is not None
    assert state.last_success_at == run.finished_at and state.last_success_run == s.run_id
    [event] = ws.rt.audit.tail(5, action="sources.synced")
    assert event.resource == "source:docs" and event.outcome == "success"
    assert event.details["added"] == 3 and event.details["run_id"] == s.run_id


def test_second_sync_is_all_unchanged_and_embeds_nothing(ws: Workspace) -> None:
    seed(ws)
    ws.sync()
    before = CountingEmbedder.texts
    s = ws.sync()["docs"]
    assert s.counts()["unchanged"] == 3 and s.added == s.updated == s.acl_changed == s.deleted == 0
    assert CountingEmbedder.texts == before


def test_content_change_updates_one_document_and_reembeds_only_it(ws: Workspace) -> None:
    seed(ws)
    ws.sync()
    before = CountingEmbedder.texts
    ws.write("refunds.md", md(REFUNDS + "\nMonthly plans are not refundable.\n", acl="[group:support]"))
    s = ws.sync()["docs"]
    assert (s.updated, s.unchanged, s.added) == (1, 2, 0)
    embedded = CountingEmbedder.texts - before
    # its chunk(s), and the one new sentence (the extractive drafter's sentence vectors, embedded at sync)
    assert 0 < embedded <= index(ws).document_states("docs")["refunds.md"].chunk_count + 1
    assert "refunds.md" in search_ids(ws, "ana", "monthly plans not refundable")


def test_acl_only_change_does_not_reembed_and_the_next_query_sees_it(ws: Workspace) -> None:
    seed(ws)
    ws.sync()
    assert "refunds.md" in search_ids(ws, "ana", "annual plans refunded pro-rata")
    assert "refunds.md" not in search_ids(ws, "farid", "annual plans refunded pro-rata")
    before = CountingEmbedder.texts
    ws.write("refunds.md", md(REFUNDS, acl="[group:finance]"))
    s = ws.sync()["docs"]
    assert (s.acl_changed, s.updated, s.unchanged) == (1, 0, 2)
    assert CountingEmbedder.texts == before
    assert index(ws).current_acl("docs", "refunds.md") == frozenset({"group:finance"})
    assert "refunds.md" not in search_ids(ws, "ana", "annual plans refunded pro-rata")
    assert "refunds.md" in search_ids(ws, "farid", "annual plans refunded pro-rata")


def test_content_and_acl_change_together_store_the_new_acl(ws: Workspace) -> None:
    seed(ws)
    ws.sync()
    ws.write("refunds.md", md(REFUNDS + "\nNew paragraph.\n", acl="[user:lena]"))
    s = ws.sync()["docs"]
    assert s.updated == 1
    assert index(ws).current_acl("docs", "refunds.md") == frozenset({"user:lena"})
    assert "refunds.md" not in search_ids(ws, "ana", "annual plans refunded")


def test_deleted_file_disappears_from_index_catalog_and_search(ws: Workspace) -> None:
    seed(ws)
    ws.sync()
    (ws.docs / "invoices.md").unlink()
    s = ws.sync()["docs"]
    assert (s.deleted, s.unchanged) == (1, 2)
    assert "invoices.md" not in index(ws).document_states("docs")
    assert "invoices.md" not in {d["doc_id"] for d in source_documents_listing(ws.rt, "docs")}
    assert "invoices.md" not in search_ids(ws, "lena", "invoices emailed billing contact")


def test_missing_or_broken_acl_is_private_to_the_owner_and_reported(ws: Workspace) -> None:
    ws.write("no-acl.md", "# Offsite notes\n\nThe team discussed macro cleanup.\n")
    ws.write("bad-acl.md", "---\nacl: {{{\n---\n# Macro cleanup\n\nRetire the old refund macros.\n")
    ws.write("typo.md", md("# Typo\n\nmacro typo text\n", acl="[groups:support]"))
    s = ws.sync()["docs"]
    assert s.private_by_default == 3 and s.added == 3 and s.failed == 0
    reasons = {p["doc_id"]: p["reason"] for p in s.private}
    assert reasons["no-acl.md"] == "no ACL"
    assert "not valid YAML" in reasons["bad-acl.md"]
    assert "groups:support" in reasons["typo.md"]
    for doc_id in reasons:
        assert index(ws).current_acl("docs", doc_id) == frozenset({"user:omar"})
    assert index(ws).counts()["docs"]["private_by_default"] == 3
    for user in ("ana", "lena", "farid", "casey", "svc-helpdesk"):
        assert search_ids(ws, user, "macro cleanup offsite typo") == set(), user
    assert search_ids(ws, "omar", "macro cleanup offsite typo") == set(reasons)
    listing = {d["doc_id"]: d for d in source_documents_listing(ws.rt, "docs")}
    assert listing["bad-acl.md"]["private_by_default"] and listing["bad-acl.md"]["acl"] == ["user:omar"]
    # fixing the ACL is an ACL-only change
    ws.write("typo.md", md("# Typo\n\nmacro typo text\n", acl="[group:support]"))
    s2 = ws.sync()["docs"]
    assert (s2.acl_changed, s2.private_by_default) == (1, 2)
    assert "typo.md" in search_ids(ws, "ana", "macro typo text")


def test_owner_change_moves_private_documents_to_the_new_owner(ws: Workspace) -> None:
    ws.write("no-acl.md", "# Offsite\n\nnotes\n")
    ws.sync()
    ws.configure([{**DOCS_SOURCE, "owner": "lena"}])
    s = ws.sync()["docs"]
    assert s.acl_changed == 1
    assert index(ws).current_acl("docs", "no-acl.md") == frozenset({"user:lena"})


@pytest.mark.parametrize(
    "permissions, expected",
    [
        ({"model": "public"}, {"public"}),
        ({"model": "groups", "groups": ["support", "finance"]}, {"group:support", "group:finance"}),
    ],
)
def test_source_permission_models_override_document_acls(
    ws: Workspace, permissions: dict[str, object], expected: set[str]
) -> None:
    ws.configure([{**DOCS_SOURCE, "permissions": permissions}])
    ws.write("a.md", md(REFUNDS, acl="[user:farid]"))
    ws.write("b.md", "# No ACL at all\n\ntext")
    s = ws.sync()["docs"]
    assert s.private_by_default == 0
    for doc in ("a.md", "b.md"):
        assert index(ws).current_acl("docs", doc) == frozenset(expected)


def test_corrupt_file_fails_alone_and_keeps_its_previous_version(ws: Workspace) -> None:
    seed(ws)
    ws.write("junk.md", b"\x00\x00binary")
    s = ws.sync()["docs"]
    assert s.status == "partial" and s.failed == 1 and s.added == 3
    assert s.failures == [
        {"doc_id": "junk.md", "line": None, "reason": "binary content (NUL bytes) in a text file"}
    ]
    # a document that was fine becomes unreadable: reported, previous version kept, not deleted
    ws.write("refunds.md", b"\xff\xfe not utf-8 \x00")
    s2 = ws.sync()["docs"]
    assert s2.failed == 2 and s2.deleted == 0
    assert "refunds.md" in index(ws).document_states("docs")
    listing = {d["doc_id"]: d for d in source_documents_listing(ws.rt, "docs")}
    assert listing["refunds.md"]["failed_reason"]
    with ws.rt.store.connect() as conn:
        state = conn.execute(select(source_state).where(source_state.c.source_id == "docs")).one()
    assert state.last_success_run == s2.run_id  # the source was read completely: still a successful sync


def test_unavailable_source_fails_and_deletes_nothing(ws: Workspace) -> None:
    seed(ws)
    first = ws.sync()["docs"]
    ws.docs.rename(ws.base / "moved")
    s = ws.sync()["docs"]
    assert s.status == "failed" and "folder not found" in (s.error or "")
    assert s.deleted == 0 and len(index(ws).document_states("docs")) == 3
    with ws.rt.store.connect() as conn:
        state = conn.execute(select(source_state).where(source_state.c.source_id == "docs")).one()
    assert state.last_success_run == first.run_id and state.last_status == "failed"
    [event] = ws.rt.audit.tail(1, action="sources.synced")
    assert event.outcome == "failure"


def test_jsonl_source_with_a_bad_line(ws: Workspace) -> None:
    lines = [
        {"id": "kb-1", "title": "Refunds", "text": REFUNDS, "acl": ["group:support"]},
        {"id": "kb-2", "title": "Invoices", "text": INVOICES, "acl": ["public"]},
    ]
    kb = ws.base / "kb.jsonl"
    kb.write_text("\n".join(json.dumps(x) for x in lines) + "\n{not json\n", encoding="utf-8")
    ws.configure([{**DOCS_SOURCE, "id": "kb", "connector": "jsonl", "location": "kb.jsonl"}])
    s = ws.sync()["kb"]
    assert (s.added, s.failed) == (2, 1)
    assert s.failures[0]["line"] == 3 and "not valid JSON" in s.failures[0]["reason"]
    # a line whose id is still recognisable keeps its previous version
    kb.write_text(json.dumps(lines[0]) + '\n{"id": "kb-2", "text": broken\n', encoding="utf-8")
    s2 = ws.sync()["kb"]
    assert (s2.failed, s2.deleted, s2.unchanged) == (1, 0, 1)
    assert "kb-2" in index(ws).document_states("kb")


def test_duplicate_jsonl_ids_keep_the_first(ws: Workspace) -> None:
    kb = ws.base / "kb.jsonl"
    kb.write_text(
        json.dumps({"id": "a", "text": "first", "acl": "public"})
        + "\n"
        + json.dumps({"id": "a", "text": "second", "acl": "public"})
        + "\n",
        encoding="utf-8",
    )
    ws.configure([{**DOCS_SOURCE, "id": "kb", "connector": "jsonl", "location": "kb.jsonl"}])
    s = ws.sync()["kb"]
    assert (s.added, s.failed) == (1, 1) and "duplicate" in s.failures[0]["reason"]


def test_chunking_change_rechunks_everything_once(ws: Workspace) -> None:
    seed(ws)
    ws.sync()
    ws.configure([{**DOCS_SOURCE, "chunking": {"max_tokens": 40, "overlap": 4}}])
    s = ws.sync()["docs"]
    assert s.rechunked and s.updated == 3
    s2 = ws.sync()["docs"]
    assert not s2.rechunked and s2.unchanged == 3


def test_full_sync_prunes_sources_removed_from_the_charter(ws: Workspace) -> None:
    seed(ws)
    ws.sync()
    ws.configure([{**DOCS_SOURCE, "id": "other", "location": "elsewhere"}])
    (ws.base / "elsewhere").mkdir()
    assert ws.sync("other")["other"].status == "succeeded"
    assert "docs" in index(ws).counts()  # a single-source sync prunes nothing
    out = ws.sync()
    assert out["docs"].status == "removed" and out["docs"].deleted == 3
    assert "docs" not in index(ws).counts()
    assert ws.rt.audit.tail(1, action="sources.removed")[0].resource == "source:docs"


def test_a_live_concurrent_sync_is_refused_and_a_dead_one_is_marked_interrupted(ws: Workspace) -> None:
    seed(ws)
    with ws.rt.store.begin() as conn:
        conn.execute(
            sync_runs.insert().values(
                source_id="docs",
                actor="x",
                status="running",
                started_at=utcnow(),
                pid=os.getpid(),
                host=socket.gethostname(),
                summary={},
            )
        )
    with pytest.raises(Conflict, match="already being synced"):
        ws.sync()
    with ws.rt.store.begin() as conn:
        conn.execute(sync_runs.update().where(sync_runs.c.status == "running").values(pid=2**22 + 12345))
    assert ws.sync()["docs"].status == "succeeded"
    with ws.rt.store.connect() as conn:
        statuses = [r.status for r in conn.execute(select(sync_runs.c.status).order_by(sync_runs.c.id))]
    assert statuses == ["interrupted", "succeeded"]


def test_sync_time_comes_from_the_injected_clock(ws: Workspace) -> None:
    seed(ws)
    past = utcnow() - timedelta(days=30)
    ws.sync(now=lambda: past)
    with ws.rt.store.connect() as conn:
        state = conn.execute(select(source_state).where(source_state.c.source_id == "docs")).one()
    assert state.last_success_at == past


def test_acl_naming_an_unknown_group_is_indexed_as_written_and_warned_about(ws: Workspace) -> None:
    ws.write("typo.md", md("# Typo\n\nsome text\n", acl="[group:suport, user:lena]"))
    s = ws.sync()["docs"]
    assert s.private_by_default == 0 and s.added == 1
    assert s.warnings == [
        {
            "doc_id": "typo.md",
            "reason": "ACL names group:suport, which no user or group in the users file has",
        }
    ]
    assert index(ws).current_acl("docs", "typo.md") == frozenset({"group:suport", "user:lena"})
    assert search_ids(ws, "ana", "some text") == set()


def test_ctrl_c_marks_the_run_interrupted_and_the_next_sync_finishes(ws: Workspace) -> None:
    from charter.sources import Syncer

    seed(ws)

    class StopAfterOne:
        def start(self, source_id: str, total: int | None) -> None:
            self.n = 0

        def advance(self, source_id: str) -> None:
            self.n += 1
            if self.n == 2:
                raise KeyboardInterrupt

        def finish(self, source_id: str) -> None:
            pass

    syncer = Syncer(ws.rt, progress=StopAfterOne())
    with pytest.raises(KeyboardInterrupt):
        syncer.sync(ws.rt.spec.source("docs"))
    # documents are read in batches and written one transaction each: fewer than all are indexed
    written = len(index(ws).document_states("docs"))
    assert written < 3
    with ws.rt.store.connect() as conn:
        assert conn.execute(select(sync_runs.c.status)).scalar() == "interrupted"
        assert conn.execute(select(source_state.c.last_success_at)).scalar() is None
    s = ws.sync()["docs"]
    assert (s.status, s.added, s.unchanged) == ("succeeded", 3 - written, written)


def test_a_source_where_every_document_fails_is_a_failed_sync_that_deletes_nothing(ws: Workspace) -> None:
    kb = ws.base / "kb.jsonl"
    kb.write_text(
        json.dumps({"id": "a", "text": "alpha", "acl": "public"})
        + "\n"
        + json.dumps({"id": "b", "text": "beta", "acl": "public"})
        + "\n",
        encoding="utf-8",
    )
    ws.configure([{**DOCS_SOURCE, "id": "kb", "connector": "jsonl", "location": "kb.jsonl"}])
    assert ws.sync()["kb"].added == 2
    kb.write_bytes(b"\x89PNG\r\n\x1a\n garbage that replaced the export\n{{{\n")
    s = ws.sync()["kb"]
    assert s.status == "failed" and s.failed == 4 and "every document failed" in (s.error or "")
    assert s.deleted == 0 and set(index(ws).document_states("kb")) == {"a", "b"}


def test_full_sync_prunes_a_removed_source_even_without_indexed_documents(ws: Workspace) -> None:
    assert ws.sync()["docs"].status == "succeeded"  # empty folder: zero documents, but a recorded state
    ws.configure([{**DOCS_SOURCE, "id": "other"}])
    out = ws.sync()
    assert out["docs"].status == "removed" and out["docs"].deleted == 0
    from charter.sources import last_successful_syncs

    assert set(last_successful_syncs(ws.rt)) == {"other"}
