"""The daily monitoring rollup equals the aggregates computed from the raw rows (the oracle), on SQLite and
PostgreSQL, for generated histories written through the production paths.

A history mixes traces (any prompt/model/index labels, statuses, escalations, latencies on and around the
histogram's bucket edges, costs, groundedness, refused tool calls, error types), feedback (through
:func:`record_feedback`, and inserted directly with arbitrary reason lists), review decisions (also decided
*before* their trace is written), and retention deleting the oldest part. After it, for a generated window:

* :func:`load_cells` (whole days from the rollup, edge days raw) equals :func:`raw_cells` over the window;
* the failure counts per category and day equal the raw union of failure rows;
* :func:`sum_cost` equals the raw sum;
* the trigger-maintained rollup equals the migration's backfill of the same rows.
"""

from __future__ import annotations

import importlib
import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from _monitoring_helpers import write_history
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, text
from tests.access._world import LEO, add_user

from charter.runtime import Runtime
from charter.store.tables import feedback, monitor_rollup, traces
from charter.telemetry import apply_retention
from charter.telemetry._clusters import _failure_rows, _feedback_failures, failure_counts
from charter.telemetry._trends import day_expr, day_split, load_cells, raw_cells, sum_cost

NOW = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)
MIGRATION = importlib.import_module("charter.store.migrations.versions.0018_rollup")

# latencies on, just under and just over every bucket edge, plus anything
EDGES = [0.0, 0.4, 99.99, 100.0, 100.5, 999.99, 1000.0, 1005.0, 9999.9, 10000.0, 99999.0, 100000.0, 250000.0]
label = st.sampled_from([None, "", "-", "v1", "v2 (canary)", "idx-1", "ünïcode, 'quoted'"])
reason_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12
)

trace_op = st.fixed_dictionaries(
    {
        "op": st.just("trace"),
        "minutes": st.integers(0, 60 * 24 * 12),
        "prompt_version": label,
        "model": st.sampled_from([None, "extractive", "local-smollm2"]),
        "index_version": label,
        "status": st.sampled_from(["answered", "needs_human", "refused", "error"]),
        "escalation": st.sampled_from([None, "no_sources", "out_of_scope", "sensitive topic; (x)"]),
        "latency": st.one_of(st.sampled_from(EDGES), st.floats(0, 200_000, allow_nan=False)),
        "cost": st.floats(0, 0.05, allow_nan=False),
        "groundedness": st.one_of(st.none(), st.floats(0, 1, allow_nan=False)),
        "refused_tools": st.integers(0, 2),
        "error": st.sampled_from([None, ("ProviderError", "generate", "m"), ("Timeout", "generate", "m")]),
        "review": st.sampled_from([None, "approve", "edit", "reject"]),
        "review_first": st.booleans(),
        "reject_reason": st.sampled_from(["inaccurate", "incomplete", "unsupported_by_sources"]),
        "ratings": st.sampled_from([[], ["up"], ["down"]]),
        "reasons": st.lists(
            st.sampled_from(["outdated", "inaccurate", "incomplete", "wrong_tone"]), max_size=2
        ),
        "raw_feedback": st.one_of(
            st.none(), st.tuples(st.sampled_from([1, -1]), st.lists(reason_text, max_size=3))
        ),
    }
)
history = st.fixed_dictionaries(
    {
        "traces": st.lists(trace_op, max_size=10),
        "retention_days": st.one_of(st.none(), st.integers(2, 12)),
        "since_hours": st.integers(1, 24 * 14),
        "end": st.sampled_from(["now", "midnight", "tomorrow"]),
        "repeat_update": st.booleans(),
    }
)


@pytest.fixture
def rt(db_url: str, project: Path) -> Iterator[Runtime]:
    add_user(project, LEO)  # the second lead who approves edits (four-eyes)
    runtime = Runtime.open(project, database_url=db_url)
    yield runtime
    runtime.close()


def _wipe(rt: Runtime) -> None:
    from charter.store.tables import review_items

    with rt.store.begin() as conn:
        for table in (feedback, review_items, traces):
            conn.execute(delete(table))
        # the delete triggers subtracted everything: only zero rows may remain
        left = conn.execute(
            select(func.count()).where(
                (monitor_rollup.c.n != 0) | (monitor_rollup.c.fb_up != 0) | (monitor_rollup.c.unchanged != 0)
            )
        ).scalar()
        assert left == 0
        conn.execute(delete(monitor_rollup))


def _summaries(cells: dict[Any, Any]) -> dict[Any, dict[str, Any]]:
    return {k: a.summary() for k, a in cells.items()}


def _close(a: Any, b: Any, path: str = "") -> None:
    if isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None, path
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (path, a, b)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (path, a, b)
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    else:
        assert a == b, (path, a, b)


def _raw_failures(rt: Runtime, start: datetime, end: datetime) -> dict[str, Counter[str]]:
    sub = _failure_rows(rt, start, end)
    day = day_expr(rt.store, sub.c.started_at)
    out: dict[str, Counter[str]] = defaultdict(Counter)
    with rt.store.connect() as conn:
        for cat, d, n in conn.execute(
            select(sub.c.category, day, func.count()).group_by(sub.c.category, day)
        ):
            out[cat][str(d)] += int(n)
    for _rid, at, cat in _feedback_failures(rt, start, end):
        out[cat][at.date().isoformat()] += 1
    return dict(out)


def _rollup_table(rt: Runtime) -> dict[tuple[Any, ...], tuple[float, ...]]:
    c = monitor_rollup.c
    cols = [c[n] for n in MIGRATION.COUNTS]
    with rt.store.connect() as conn:
        rows = conn.execute(select(*(c[k] for k in MIGRATION.KEY), *cols)).fetchall()
    return {tuple(r[:6]): tuple(float(v) for v in r[6:]) for r in rows if any(r[6:])}


def _check(rt: Runtime, h: dict[str, Any]) -> None:
    end = {
        "now": NOW,
        "midnight": NOW.replace(hour=0, minute=0),
        "tomorrow": NOW.replace(hour=0, minute=0) + timedelta(days=1),
    }[h["end"]]
    start = end - timedelta(hours=h["since_hours"])
    _close(_summaries(load_cells(rt, start, end)), _summaries(raw_cells(rt.store, start, end)), "cells")
    assert failure_counts(rt, start, end) == _raw_failures(rt, start, end)
    with rt.store.connect() as conn:
        raw_cost = conn.execute(
            select(func.coalesce(func.sum(traces.c.cost_usd), 0.0)).where(
                (traces.c.started_at >= start) & (traces.c.started_at < end)
            )
        ).scalar()
    assert math.isclose(sum_cost(rt, start, end), float(raw_cost or 0.0), rel_tol=1e-9, abs_tol=1e-9)
    # the trigger-maintained rollup equals the migration's backfill of the same rows
    kept = _rollup_table(rt)
    with rt.store.begin() as conn:
        conn.execute(delete(monitor_rollup))
        for sql in MIGRATION.backfill_statements(rt.store.dialect):
            conn.execute(text(sql))
    rebuilt = _rollup_table(rt)
    assert kept.keys() == rebuilt.keys()
    for k, v in kept.items():
        assert all(
            math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9) for x, y in zip(v, rebuilt[k], strict=True)
        ), k


def _history_test(rt: Runtime, h: dict[str, Any]) -> None:
    _wipe(rt)
    write_history(rt, h["traces"], NOW)
    if h["repeat_update"]:  # an UPDATE that changes an aggregated column moves the row's contribution
        with rt.store.begin() as conn:
            conn.execute(traces.update().values(latency_ms=traces.c.latency_ms + 950.0))
    if h["retention_days"] is not None:
        apply_retention(rt, now=NOW, retention=timedelta(days=h["retention_days"]), audit=False)
    _check(rt, h)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(h=history)
def test_rollup_equals_raw_aggregates(rt: Runtime, h: dict[str, Any]) -> None:
    _history_test(rt, h)


def test_day_split_edges() -> None:
    """Whole days go to the rollup, the partial days at either edge to the raw rows; nothing twice."""
    mid = datetime(2026, 3, 1, tzinfo=UTC)
    assert day_split(mid, mid + timedelta(days=2)) == ([], ("2026-03-01", "2026-03-03"))
    assert day_split(mid + timedelta(hours=5), mid + timedelta(hours=9)) == (
        [(mid + timedelta(hours=5), mid + timedelta(hours=9))],
        None,
    )
    raw, days = day_split(mid - timedelta(hours=1), mid + timedelta(days=1, hours=2))
    assert days == ("2026-03-01", "2026-03-02")
    assert raw == [
        (mid - timedelta(hours=1), mid),
        (mid + timedelta(days=1), mid + timedelta(days=1, hours=2)),
    ]
    assert day_split(mid, mid) == ([], None)


def test_migration_backfills_existing_rows(tmp_path: Path) -> None:
    """Rows written before 0018_rollup (no triggers yet) are in the rollup after the upgrade."""
    from charter.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'old.db'}", migrate=False)
    store.migrate("0017")
    with store.begin() as conn:
        for i, (status, esc) in enumerate(
            [("answered", None), ("needs_human", "no_sources"), ("error", None)]
        ):
            conn.execute(
                traces.insert().values(
                    request_id=f"r{i}",
                    workflow="w",
                    principal_id="p",
                    started_at=NOW - timedelta(days=i),
                    status=status,
                    prompt_version="v1",
                    cost_usd=0.5,
                    latency_ms=150.0,
                    escalation=esc,
                    body={},
                )
            )
        conn.execute(
            feedback.insert().values(
                id="f1", request_id="r1", created_at=NOW, principal_id="p", rating=-1, reasons=["outdated"]
            )
        )
    store.migrate()
    c = monitor_rollup.c
    with store.connect() as conn:
        rows = {
            (r.day, r.kind, r.label): (int(r.n), int(r.fb_down))
            for r in conn.execute(select(c.day, c.kind, c.label, c.n, c.fb_down))
        }
    d = [(NOW - timedelta(days=i)).date().isoformat() for i in range(3)]
    assert rows == {
        (d[0], "", ""): (1, 0),
        (d[0], "lat", "105"): (1, 0),
        (d[1], "", ""): (1, 1),
        (d[1], "esc", "no_sources"): (1, 0),
        (d[1], "lat", "105"): (1, 0),
        (d[1], "down", "outdated"): (1, 0),
        (d[1], "fail", "negative_feedback:outdated"): (1, 0),
        (d[2], "", ""): (1, 0),
        (d[2], "fail", "error:Error"): (1, 0),
    }
    assert json.dumps(sorted(rows))  # plain values
    store.dispose()
