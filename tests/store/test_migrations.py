"""Migrations are append-only: a database created by the first migration upgrades with its data intact.

Every test runs on SQLite and on PostgreSQL (``empty_db_url``, ``tests/_pg.py``)."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, DateTime, MetaData, Table, select

from charter.store import metadata, open_store, utcnow
from charter.store._engine import MIGRATIONS_DIR
from charter.store.tables import audit_checkpoints, audit_log, state
from charter.telemetry.audit import AuditLog


def _head() -> str:
    head = ScriptDirectory.from_config(_cfg()).get_current_head()
    assert head is not None
    return head


def test_upgrade_from_0001_keeps_data(tmp_path: Path, empty_db_url: str) -> None:
    store = open_store(empty_db_url, migrate=False)
    store.migrate("0001")
    assert store.current_revision() == "0001"
    log = AuditLog(store, key_dir=tmp_path / "keys", checkpoint_every=5)
    for i in range(12):
        log.append(
            actor="ana",
            action="token.used",
            resource="workflow:billing-support",
            outcome="allowed",
            details={"i": i, "text": "àé"},
        )
    with store.begin() as conn:
        conn.execute(
            state.insert().values(key="charter.fingerprint", value={"v": "sha256:abc"}, updated_at=utcnow())
        )
    head_before = log.head()

    store.migrate()

    assert store.current_revision() == _head()
    assert log.head() == head_before
    result = log.verify()
    assert result.ok and result.entries_verified == 12 and result.checkpoints_verified == 2
    with store.connect() as conn:
        assert conn.execute(select(state.c.value).where(state.c.key == "charter.fingerprint")).scalar() == {
            "v": "sha256:abc"
        }
    log.append(
        actor="omar", action="charter.changed", resource="workflow:billing-support", outcome="recorded"
    )
    assert log.verify().ok
    store.dispose()


def _audit_only(obj: object, name: str | None, type_: str, _reflected: bool, _other: object) -> bool:
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", "")
    return str(table).startswith("audit_")


def test_audit_tables_match_the_migrations(empty_db_url: str) -> None:
    """The table definitions in ``store/tables/audit.py`` and the migrations describe the same schema."""
    store = open_store(empty_db_url)
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"include_object": _audit_only, "compare_type": True})
        assert compare_metadata(ctx, metadata) == []
        # and the comparison can fail: a stale definition of the table is noticed
        stale = MetaData()
        Table(
            "audit_log",
            stale,
            *[c.copy() for c in audit_log.columns if c.name != "ts"],
            Column("ts", DateTime, nullable=False),
        )
        Table("audit_checkpoints", stale, *[c.copy() for c in audit_checkpoints.columns])
        assert compare_metadata(ctx, stale) != []
    store.dispose()


# Created by migration 0009 on PostgreSQL only and queried with SQL of their own (charter.retrieval._pg).
POSTGRES_SEARCH_TABLES = {"retrieval_chunk_vectors", "retrieval_postings"}


def test_every_table_matches_the_migrations(empty_db_url: str) -> None:
    """Every table in ``charter.store.tables`` and the migrations describe the same tables, on both backends."""
    import charter.store.tables  # noqa: F401  (the complete metadata)

    store = open_store(empty_db_url)
    with store.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": False})
        diff = [
            d
            for d in compare_metadata(ctx, metadata)
            if d[0] in ("add_table", "remove_table", "add_column", "remove_column")
            and not (d[0] == "remove_table" and d[1].name in POSTGRES_SEARCH_TABLES)
        ]
        assert diff == []
    store.dispose()


def _review_triggers(conn: object) -> set[str]:
    from sqlalchemy import text

    c = conn  # a Connection
    if c.dialect.name == "sqlite":  # type: ignore[attr-defined]
        rows = c.execute(  # type: ignore[attr-defined]
            text("SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'review_items'")
        )
    else:
        rows = c.execute(  # type: ignore[attr-defined]
            text(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = 'review_items'::regclass AND NOT tgisinternal"
            )
        )
    return {r[0] for r in rows}


def test_0019_renames_the_drafts_customer_to_its_subject_and_keeps_the_rollup_triggers(
    empty_db_url: str,
) -> None:
    """A draft written before 0019 keeps whom it is about (``customer_id`` → ``subject_id``), and the table is
    renamed in place: the monitoring rollup's triggers on it (0018) survive."""
    from sqlalchemy import text

    store = open_store(empty_db_url, migrate=False)
    store.migrate("0018_rollup")
    now = utcnow().replace(tzinfo=None) if store.is_sqlite else utcnow()
    with store.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO review_items (id, submitter, question, draft, citations, agent_notes, status, "
                "escalation_level, created_at, updated_at, version, customer_id) VALUES ('rev_1', 'ana', 'q', "
                "'d', '[]', '[]', 'pending', 0, :now, :now, 1, 'cus_1001')"
            ),
            {"now": now},
        )
        triggers = _review_triggers(conn)
    assert triggers, "0018 installs rollup triggers on review_items"
    store.migrate()
    with store.connect() as conn:
        assert (
            conn.execute(text("SELECT subject_id FROM review_items WHERE id = 'rev_1'")).scalar()
            == "cus_1001"
        )
        assert _review_triggers(conn) == triggers
    store.dispose()


def test_0021_indexes_the_cited_documents_by_time_and_keeps_the_rows(empty_db_url: str) -> None:
    """A citation written before 0021_report is still there after it, and ``trace_sources`` has the index the
    report's cited-documents query reads (``cited, started_at, source_id, doc_id``)."""
    from sqlalchemy import inspect, text

    store = open_store(empty_db_url, migrate=False)
    store.migrate("0019")
    now = utcnow().replace(tzinfo=None) if store.is_sqlite else utcnow()
    with store.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO trace_sources (request_id, rank, started_at, source_id, doc_id, chunk_id, score, "
                "cited) VALUES ('req_1', 1, :now, 'help-center', 'refunds.md', 'help-center:refunds.md#0', 0.5, "
                ":cited)"
            ),
            {"now": now, "cited": True},
        )

    def indexes() -> dict[str, list[str]]:
        with store.engine.connect() as conn:
            return {
                str(i["name"]): [str(c) for c in i["column_names"]]
                for i in inspect(conn).get_indexes("trace_sources")
            }

    assert "ix_trace_sources_cited" not in indexes()
    store.migrate()
    assert indexes()["ix_trace_sources_cited"] == ["cited", "started_at", "source_id", "doc_id"]
    with store.connect() as conn:
        assert conn.execute(text("SELECT doc_id FROM trace_sources WHERE cited")).scalars().all() == [
            "refunds.md"
        ]
    store.dispose()


def test_a_database_at_head_is_opened_without_alembic_and_one_behind_is_upgraded(empty_db_url: str) -> None:
    """Opening skips Alembic only when the version table names the head; one revision behind, or a version
    table with two rows, still goes through the migrations (and ends at head)."""
    import alembic.command

    from charter.store._engine import head_revision

    assert head_revision() == _head()
    store = open_store(empty_db_url, migrate=False)
    script = ScriptDirectory.from_config(_cfg())
    previous = script.get_revision(_head()).down_revision
    assert isinstance(previous, str)
    store.migrate(previous)
    calls: list[str] = []
    real = alembic.command.upgrade

    def counting(cfg: Config, revision: str, **kw: object) -> None:
        calls.append(revision)
        real(cfg, revision, **kw)  # type: ignore[arg-type]

    alembic.command.upgrade = counting  # type: ignore[assignment]
    try:
        store.migrate()  # one behind: Alembic runs
        assert calls == ["head"] and store.current_revision() == _head()
        store.migrate()  # at head: nothing to do, Alembic not started
        assert calls == ["head"]
        with store.begin() as conn:  # an ambiguous version table is never taken for "at head"
            conn.execute(alembic_version_insert(), {"v": previous})
        assert store.current_revision() is None
    finally:
        alembic.command.upgrade = real  # type: ignore[assignment]
        store.dispose()


def _cfg() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def alembic_version_insert():  # type: ignore[no-untyped-def]
    from sqlalchemy import text

    return text("INSERT INTO alembic_version (version_num) VALUES (:v)")
