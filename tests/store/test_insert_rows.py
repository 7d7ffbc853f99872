"""``Store.insert_rows`` (the trace writer's fast path): what it stores is exactly what a normal
``Connection.execute`` insert stores, all batches commit together or not at all, and errors are
SQLAlchemy's — on both backends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from charter.store import Store, open_store
from charter.store.tables import trace_spans, traces

_chars = st.characters(exclude_characters="\x00")  # PostgreSQL text cannot hold NUL, on either path


def _text(n: int, m: int = 0) -> st.SearchStrategy[str]:
    return st.text(_chars, min_size=m, max_size=n)


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | _text(30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text(10), inner, max_size=4),
    max_leaves=12,
)
_span = st.fixed_dictionaries(
    {
        "stage": _text(50, 1),
        "started_at": st.datetimes(
            min_value=datetime(1990, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)
        ),
        "duration_ms": st.floats(allow_nan=False, allow_infinity=False, width=32),
        "status": st.sampled_from(["ok", "error", "refused"]),
        "attributes": st.dictionaries(_text(12), _json, max_size=5),
        "error": st.none() | _text(80),
    }
)


@pytest.fixture
def store(db_url: str) -> Any:
    s = open_store(db_url)
    yield s
    s.dispose()


def _spans(store: Store, request_id: str) -> list[dict[str, Any]]:
    with store.connect() as conn:
        rows = conn.execute(
            select(trace_spans).where(trace_spans.c.request_id == request_id).order_by(trace_spans.c.seq)
        )
        return [{k: v for k, v in r._mapping.items() if k != "request_id"} for r in rows]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spans=st.lists(_span, min_size=1, max_size=6))
def test_rows_read_back_exactly_as_the_normal_insert_stores_them(
    store: Store, spans: list[dict[str, Any]]
) -> None:
    with store.begin() as conn:
        conn.execute(delete(trace_spans))
    fast = [(trace_spans, [{"request_id": "fast", "seq": i, **s} for i, s in enumerate(spans)])]
    try:
        with store.begin() as conn:
            conn.execute(
                trace_spans.insert(), [{"request_id": "normal", "seq": i, **s} for i, s in enumerate(spans)]
            )
    except Exception as normal_error:  # e.g. a lone surrogate no driver can encode: the same refusal
        with pytest.raises(type(normal_error)):
            store.insert_rows(fast)
        assert _spans(store, "fast") == [] and _spans(store, "normal") == []
        return
    store.insert_rows(fast)
    assert _spans(store, "fast") == _spans(store, "normal")
    assert len(_spans(store, "fast")) == len(spans)


def _trace(request_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "workflow": "w",
        "principal_id": "p",
        "started_at": datetime(2026, 12, 4, 10, 0, tzinfo=UTC) + timedelta(microseconds=7),
        "status": "answered",
        "body": {"question": "Straße — “quoted” \u202e", "n": [1, 2.5, None]},
        **extra,
    }


def test_a_failing_batch_rolls_back_every_batch_and_raises_sqlalchemys_error(store: Store) -> None:
    store.insert_rows([(traces, [_trace("t-1")])])
    span = {"request_id": "t-2", "seq": 0, "stage": "s", "started_at": datetime.now(UTC)}
    span |= {"duration_ms": 1.0, "status": "ok", "attributes": {}, "error": None}
    with pytest.raises(IntegrityError):  # second batch repeats a primary key: nothing of the call is kept
        store.insert_rows([(traces, [_trace("t-2")]), (trace_spans, [span, span])])
    with store.connect() as conn:
        ids = conn.execute(select(traces.c.request_id)).scalars().all()
        assert ids == ["t-1"] and conn.execute(select(trace_spans)).first() is None
    store.insert_rows([(traces, [_trace("t-2")]), (trace_spans, [span])])  # the store still works
    with store.connect() as conn:
        row = conn.execute(select(traces).where(traces.c.request_id == "t-2")).one()._mapping
    assert row["cost_usd"] == 0.0 and row["input_tokens"] == 0  # missing keys take the column defaults
    assert row["started_at"] == _trace("t-2")["started_at"] and row["body"] == _trace("t-2")["body"]
