"""``Store.execute_in`` (the governed tool call's fast path): what it stores and reads back is exactly what
``Connection.execute`` stores and reads, it runs inside the caller's transaction (rolled back with it), and
errors are SQLAlchemy's — on both backends."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError

from charter.store import Store, open_store
from charter.store.tables import tool_actions
from charter.tools._records import _update_for

_chars = st.characters(
    exclude_characters="\x00", exclude_categories=("Cs",)
)  # what a database stores as text
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(_chars, max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(_chars, max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
_when = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC))
_INSERT = tool_actions.insert()
_READ = select(tool_actions).where(tool_actions.c.id == bindparam("id"))


@pytest.fixture
def store(db_url: str) -> Any:
    s = open_store(db_url)
    yield s
    s.dispose()


def _row(args: Any, reason: str, when: datetime, needs: bool) -> dict[str, Any]:
    return {
        "id": "act_" + secrets.token_hex(12),
        "request_id": None,
        "tool": "t",
        "requester": "ana",
        "origin": "api",
        "args": args,
        "args_hash": "0" * 64,
        "reason": reason,
        "status": "pending",
        "needs_approval": needs,
        "required_role": None,
        "assigned_role": None,
        "escalation_level": 0,
        "created_at": when,
        "updated_at": when,
        "expires_at": when + timedelta(days=1) if needs else None,
        "sla_due_at": None,
        "decided_by": None,
        "decided_at": None,
        "decision_reason": None,
        "version": 0,
    }


def _as_dict(row: Any) -> dict[str, Any]:
    return {c.name: getattr(row, c.name) for c in tool_actions.columns}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=_json, reason=st.text(_chars, max_size=40), when=_when, needs=st.booleans(), result=_json)
def test_the_fast_path_stores_and_reads_what_sqlalchemy_does(
    store: Store, args: Any, reason: str, when: datetime, needs: bool, result: Any
) -> None:
    fast, slow = _row(args, reason, when, needs), _row(args, reason, when, needs)
    with store.begin() as conn:
        assert store.execute_in(conn, _INSERT, fast) == []
        conn.execute(_INSERT, slow)
    with store.connect() as conn:
        read_fast = store.execute_in(conn, _READ, {"id": fast["id"]})
        read_slow = conn.execute(_READ, {"id": slow["id"]}).all()
    assert len(read_fast) == len(read_slow) == 1
    a, b = _as_dict(read_fast[0]), _as_dict(read_slow[0])
    assert {**a, "id": None} == {**b, "id": None}
    assert a["created_at"] == when and a["created_at"].tzinfo is not None

    # the optimistic-concurrency move, RETURNING the moved row, converted like SQLAlchemy converts it
    stmt = _update_for(("result", "status", "version"), 2)
    params = {"set_result": result, "set_status": "executed", "set_version": 1, "w_version": 0}
    params |= {"w_from_0": "approved", "w_from_1": "pending"}
    with store.begin() as conn:
        moved_fast = store.execute_in(conn, stmt, {**params, "w_id": fast["id"]})
        moved_slow = conn.execute(stmt, {**params, "w_id": slow["id"]}).all()
    assert len(moved_fast) == len(moved_slow) == 1
    assert {**_as_dict(moved_fast[0]), "id": None} == {**_as_dict(moved_slow[0]), "id": None}
    assert moved_fast[0].result == result and moved_fast[0].version == 1
    with store.begin() as conn:  # a stale version moves nothing, on both paths
        assert store.execute_in(conn, stmt, {**params, "w_id": fast["id"]}) == []
        assert conn.execute(stmt, {**params, "w_id": slow["id"]}).all() == []


def test_it_runs_inside_the_callers_transaction(store: Store) -> None:
    row = _row({"a": 1}, "r", datetime.now(UTC), False)
    with pytest.raises(RuntimeError), store.begin() as conn:
        store.execute_in(conn, _INSERT, row)
        raise RuntimeError("the caller fails after the insert")
    with store.connect() as conn:
        assert store.execute_in(conn, _READ, {"id": row["id"]}) == []  # rolled back with the caller


def test_errors_are_sqlalchemys(store: Store) -> None:
    row = _row({"a": 1}, "r", datetime.now(UTC), False)
    with store.begin() as conn:
        store.execute_in(conn, _INSERT, row)
    with pytest.raises(IntegrityError), store.begin() as conn:  # the same primary key again
        store.execute_in(conn, _INSERT, row)
