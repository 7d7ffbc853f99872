"""``charter db upgrade`` and ``charter db status``: the schema's Alembic revision.

Every command that opens the database upgrades it first (migrations are append-only and run under an
advisory lock on PostgreSQL, so workers starting together migrate once). ``charter db upgrade`` does only
that, as an explicit deployment step (a Kubernetes Job, an ``ExecStartPre``), and ``charter db status``
reports the revision without changing anything.
"""

from __future__ import annotations

from typing import Any

import typer

from charter.cli._app import app
from charter.cli._common import CharterOpt, JsonOpt, console, emit

db_app = typer.Typer(help="The database schema: upgrade it, or show its revision.", no_args_is_help=True)
app.add_typer(db_app, name="db")


def _head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from charter.store import MIGRATIONS_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    head = ScriptDirectory.from_config(cfg).get_current_head()
    return str(head)


def _url(charter: Any) -> str:
    from charter.policy import load_checked_charter
    from charter.store import resolve_database_url

    return resolve_database_url(load_checked_charter(charter).base_dir)


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@db_app.command("status")
def status(charter: CharterOpt = None, as_json: JsonOpt = False) -> None:
    """The database's schema revision and the newest this version of Charter knows (exit 1 if behind)."""
    from charter.store import open_store

    url = _url(charter)
    store = open_store(url, migrate=False)
    try:
        current = store.current_revision()
    finally:
        store.dispose()
    head = _head()
    doc = {"database": _redacted(url), "revision": current, "head": head, "up_to_date": current == head}
    emit(
        doc,
        as_json,
        lambda d: console.print(
            f"{d['database']}: revision {d['revision'] or 'none (empty database)'}; newest {d['head']} — "
            + ("[green]up to date[/]" if d["up_to_date"] else "[yellow]run `charter db upgrade`[/]"),
            highlight=False,
        ),
    )
    if current != head:
        raise typer.Exit(1)


@db_app.command("upgrade")
def upgrade(charter: CharterOpt = None, as_json: JsonOpt = False) -> None:
    """Apply every pending migration (idempotent; safe to run from several machines at once)."""
    from charter.store import open_store

    url = _url(charter)
    store = open_store(url, migrate=False)
    try:
        before = store.current_revision()
        store.migrate()
        after = store.current_revision()
    finally:
        store.dispose()
    doc = {"database": _redacted(url), "from": before, "to": after, "changed": before != after}
    emit(
        doc,
        as_json,
        lambda d: console.print(
            f"{d['database']}: "
            + (f"upgraded {d['from'] or 'empty'} → {d['to']}" if d["changed"] else f"already at {d['to']}"),
            highlight=False,
        ),
    )
