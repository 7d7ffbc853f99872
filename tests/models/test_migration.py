"""Migration 0004 upgrades a 0003 database and creates exactly the tables ``store/tables/models.py`` declares."""

from __future__ import annotations

from sqlalchemy import inspect

from charter.store import open_store
from charter.store.tables import budget_months, budget_reservations, prompt_activations, prompt_approvals

MINE = {t.name: t for t in (budget_months, budget_reservations, prompt_approvals, prompt_activations)}


def test_upgrade_from_0003_creates_the_models_tables(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'old.db'}", migrate=False)
    store.migrate("0003")
    assert not set(MINE) & set(inspect(store.engine).get_table_names())
    store.migrate("0004")
    insp = inspect(store.engine)
    assert set(MINE) <= set(insp.get_table_names())
    for name, table in MINE.items():
        assert {c["name"] for c in insp.get_columns(name)} == {c.name for c in table.columns}
        declared = {tuple(ix.columns.keys()) for ix in table.indexes}
        created = {tuple(ix["column_names"]) for ix in insp.get_indexes(name)}
        assert declared == created
    store.migrate("head")
    assert store.current_revision() is not None
    store.dispose()
