"""The sync on a real PostgreSQL started by the fixture (``pgserver``): same semantics as on SQLite.
The server is the session's (``tests/_pg.py``); fails (does not skip) when pgserver or psycopg is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from charter.retrieval import Index
from charter.runtime import Runtime
from charter.sources import source_statuses, sync_sources
from tests.sources.conftest import DOCS_SOURCE, Workspace, md

pytestmark = pytest.mark.postgres


def test_sync_on_postgres(project: Path, pg_url: str) -> None:
    ws = Workspace(project)
    ws.configure([DOCS_SOURCE])
    body = "# Refunds\n\nAnnual plans are refunded pro-rata.\n"
    ws.write("refunds.md", md(body, acl="[group:support]"))
    ws.write("orphan.md", "# Orphan\n\nno ACL\n")
    ws.write("gone.md", md("# Gone\n\nsoon deleted\n", acl="[public]"))
    rt = Runtime.open(ws.charter, database_url=pg_url)
    try:
        assert not rt.store.is_sqlite
        [s] = sync_sources(rt)
        assert (s.status, s.added, s.private_by_default) == ("succeeded", 3, 1)
        [s] = sync_sources(rt)
        assert s.unchanged == 3
        ws.write("refunds.md", md(body, acl="[group:finance]"))
        (ws.docs / "gone.md").unlink()
        [s] = sync_sources(rt)
        assert (s.acl_changed, s.deleted, s.unchanged) == (1, 1, 1)
        index = Index.for_runtime(rt)
        assert index.current_acl("docs", "refunds.md") == frozenset({"group:finance"})
        assert index.current_acl("docs", "orphan.md") == frozenset({"user:omar"})
        [row] = source_statuses(rt)
        assert (row["documents"], row["private_by_default"], row["freshness"]) == (2, 1, "fresh")
        assert rt.audit.tail(1, action="sources.synced")[0].details["acl_changed"] == 1
    finally:
        rt.close()
