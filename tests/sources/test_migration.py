"""Migration 0003 upgrades a database that stopped at 0002 and keeps what was there."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, select

from charter.store import open_store, utcnow
from charter.store.tables import source_documents, source_state, state, sync_runs


def test_upgrade_from_0002_adds_the_sources_tables(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'old.db'}", migrate=False)
    try:
        store.migrate("0002")
        assert store.current_revision() == "0002"
        with store.begin() as conn:
            conn.execute(state.insert().values(key="k", value={"kept": True}, updated_at=utcnow()))
        assert "sync_runs" not in inspect(store.engine).get_table_names()
        store.migrate("0003")
        names = set(inspect(store.engine).get_table_names())
        assert {"sync_runs", "source_state", "source_documents"} <= names
        with store.begin() as conn:
            conn.execute(
                sync_runs.insert().values(
                    source_id="s", actor="a", status="running", started_at=utcnow(), summary={}
                )
            )
            conn.execute(source_state.insert().values(source_id="s", last_success_at=utcnow()))
            conn.execute(
                source_documents.insert().values(
                    source_id="s",
                    doc_id="d",
                    title="t",
                    format="markdown",
                    acl_tokens=["public"],
                    private_by_default=False,
                    content_hash="h",
                    recorded_at=utcnow(),
                )
            )
            assert conn.execute(select(state.c.value).where(state.c.key == "k")).scalar() == {"kept": True}
        store.migrate("head")
    finally:
        store.dispose()
