"""Losing the PostgreSQL server: clean, retryable errors while it is down, no partial writes, and the same
Store works again once it is back (no restart of the application)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from tests._pg import PgCluster

from charter.errors import ProviderError
from charter.store import StoreUnavailable, open_store, utcnow
from charter.store.tables import state

pytestmark = pytest.mark.postgres


def test_a_server_restart_fails_in_flight_work_cleanly_and_the_pool_recovers(
    pg_cluster: PgCluster, pg_url: str
) -> None:
    store = open_store(pg_url)
    with store.connect() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1  # a pooled connection that the restart will break
    try:
        with pytest.raises(StoreUnavailable) as err, store.begin() as conn:
            conn.execute(state.insert().values(key="half", value={"v": 1}, updated_at=utcnow()))
            pg_cluster.stop()  # the server goes away with the transaction open
            conn.execute(state.insert().values(key="half-2", value={"v": 2}, updated_at=utcnow()))
        assert isinstance(err.value, ProviderError) and err.value.retryable  # the server answers 503
        assert "postgres" not in str(err.value).lower()  # no connection details in the message
        with pytest.raises(StoreUnavailable), store.connect() as conn:  # while it is down
            conn.execute(text("SELECT 1"))
    finally:
        pg_cluster.start()
    with store.connect() as conn:  # back: the same Store reconnects by itself
        rows = conn.execute(select(func.count()).select_from(state).where(state.c.key.like("half%"))).scalar()
    assert rows == 0  # nothing of the interrupted transaction was written
    with store.begin() as conn:
        conn.execute(state.insert().values(key="after", value={"v": 3}, updated_at=utcnow()))
    store.dispose()


def test_concurrent_migrations_upgrade_once(pg_cluster: PgCluster) -> None:
    """Workers starting together against an empty database: the advisory lock lets one migrate."""
    import threading

    url = pg_cluster.create_database(migrated=False)
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            open_store(url).dispose()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = open_store(url, migrate=False)
    with store.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    store.dispose()
    pg_cluster.drop_database(url)
