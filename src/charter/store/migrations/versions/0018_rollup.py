"""The monitoring rollup: daily additive aggregates kept by triggers, so 90-day trends read cells, not traces.

``monitor_rollup`` holds, per (UTC day, prompt version, model, index version), what
:func:`charter.telemetry._trends.load_cells` aggregates from the raw rows: requests, served, errors,
refusals, tool refusals, cost and groundedness sums, feedback up/down, review outcomes (one *base* row,
``kind = ''``), and the counts per escalation reason (``esc``), latency bucket of served requests
(``lat``), review rejection reason (``rej``), thumbs-down reason (``down``), failure category of the
production-failure view (``fail``: refusing requests, error types, thumbs-down reasons with ``unspecified``
for an empty list).

**It cannot drift.** Database triggers on ``traces``, ``feedback`` and ``review_items`` add a row's
contribution when it is inserted, subtract it when it is deleted (retention), and both when an aggregated
column is updated (a review decision) — inside the writing statement's transaction, whatever code writes.
A review or feedback row counts only while its request's trace exists, exactly as the raw joins do.
The upgrade backfills existing rows with the same rules (grouped ``INSERT … SELECT``).

A later migration that *rebuilds* one of these tables on SQLite (``batch_alter_table`` copy-and-move)
drops its triggers with it and must create them again (``trigger_ddl``); the oracle test fails otherwise.

The trigger SQL is written out here per dialect (a migration must not change with later code); the
oracle test (``tests/telemetry/test_rollup.py``) compares the rollup with the raw aggregation on both.

Revision ID: 0018_rollup
Revises: 0017
"""

import sqlalchemy as sa
from alembic import op

revision = "0018_rollup"
down_revision = "0017"
branch_labels = None
depends_on = None

KEY = ("day", "prompt_version", "model", "index_version", "kind", "label")
COUNTS = (
    "n",
    "served",
    "errors",
    "refused",
    "tool_refusals",
    "cost_usd",
    "g_sum",
    "g_n",
    "fb_up",
    "fb_down",
    "unchanged",
    "edited",
    "rejected",
)
SERVED = "('answered', 'needs_human')"
DECIDED = "('approved', 'edited', 'rejected')"


def _day(dialect: str, col: str) -> str:
    if dialect == "sqlite":  # naive-UTC ISO text: the first ten characters are the day
        return f"substr({col}, 1, 10)"
    return f"to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD')"


def _int(dialect: str, expr: str) -> str:
    """Truncation to an integer (latencies are ≥ 0): SQLite's CAST truncates, PostgreSQL's rounds."""
    return f"CAST({expr} AS INTEGER)" if dialect == "sqlite" else f"CAST(floor({expr}) AS INTEGER)"


def _bucket(dialect: str, col: str) -> str:
    """The latency bucket, as :func:`charter.telemetry._trends.latency_bucket` computes it."""

    def i(expr: str) -> str:
        return _int(dialect, expr)

    return (
        f"CASE WHEN {col} < 100 THEN {i(col)} "
        f"WHEN {col} < 1000 THEN 100 + {i(col + ' / 10.0')} - 10 "
        f"WHEN {col} < 10000 THEN 190 + {i(col + ' / 100.0')} - 10 "
        f"WHEN {col} < 100000 THEN 280 + {i(col + ' / 1000.0')} - 10 ELSE 370 END"
    )


def _dims(dialect: str, t: str) -> str:
    return (
        f"{_day(dialect, t + '.started_at')}, coalesce(nullif({t}.prompt_version, ''), '-'), "
        f"coalesce(nullif({t}.model, ''), '-'), coalesce(nullif({t}.index_version, ''), '-')"
    )


def _upsert(select: str) -> str:
    """An upsert adding the counts of ``select``'s rows (SQLite needs a WHERE before ``ON CONFLICT``)."""
    cols = ", ".join((*KEY, *COUNTS))
    sets = ", ".join(f"{c} = monitor_rollup.{c} + excluded.{c}" for c in COUNTS)
    return f"INSERT INTO monitor_rollup ({cols}) {select} ON CONFLICT ({', '.join(KEY)}) DO UPDATE SET {sets}"


def _vals(**given: str) -> str:
    """The 13 count columns in order, 0 where not given."""
    return ", ".join(given.get(c, "0") for c in COUNTS)


def _reasons(dialect: str, col: str) -> tuple[str, str]:
    """(FROM-clause item yielding ``j.value`` per element of a JSON list column, empty for a non-list)."""
    if dialect == "sqlite":
        return f"json_each(CASE WHEN json_type({col}) = 'array' THEN {col} ELSE '[]' END) j", "j.value"
    return (
        f"json_array_elements_text(CASE WHEN json_typeof(CAST({col} AS json)) = 'array' "
        f"THEN CAST({col} AS json) ELSE CAST('[]' AS json) END) j(value)",
        "j.value",
    )


def _is_empty_list(dialect: str, col: str) -> str:
    if dialect == "sqlite":
        return f"(json_type({col}) <> 'array' OR json_array_length({col}) = 0)"
    return (
        f"(json_typeof(CAST({col} AS json)) <> 'array' OR json_array_length("
        f"CASE WHEN json_typeof(CAST({col} AS json)) = 'array' THEN CAST({col} AS json) "
        f"ELSE CAST('[]' AS json) END) = 0)"
    )


def _b(cond: str, s: str = "1") -> str:
    return f"{s} * (CASE WHEN {cond} THEN 1 ELSE 0 END)"


# --------------------------------------------------------------------------------- per-row statements
def trace_statements(d: str, r: str, s: str) -> list[str]:
    """Add ``s`` (1 or -1) × the contribution of trace record ``r`` (NEW/OLD) and of the feedback and review
    rows already attached to it."""
    key = _dims(d, r)
    fb_from, fb_val = _reasons(d, "f.reasons")
    base = _vals(
        n=s,
        served=_b(f"{r}.status IN {SERVED}", s),
        errors=_b(f"{r}.status = 'error'", s),
        refused=_b(f"{r}.status = 'refused'", s),
        tool_refusals=f"{s} * coalesce({r}.tool_refusals, 0)",
        cost_usd=f"{s} * coalesce({r}.cost_usd, 0.0)",
        g_sum=f"{s} * coalesce({r}.groundedness, 0.0)",
        g_n=_b(f"{r}.groundedness IS NOT NULL", s),
    )
    return [
        _upsert(f"SELECT {key}, '', '', {base} WHERE 1 = 1"),
        _upsert(
            f"SELECT {key}, 'esc', {r}.escalation, {_vals(n=s)} "
            f"WHERE {r}.escalation IS NOT NULL AND {r}.escalation <> ''"
        ),
        _upsert(
            f"SELECT {key}, 'lat', CAST({_bucket(d, r + '.latency_ms')} AS TEXT), {_vals(n=s)} "
            f"WHERE {r}.status IN {SERVED}"
        ),
        _upsert(
            f"SELECT {key}, 'fail', 'tool_refused', {_vals(n=s)} WHERE coalesce({r}.tool_refusals, 0) > 0"
        ),
        _upsert(
            f"SELECT {key}, 'fail', 'error:' || coalesce({r}.error_type, 'Error'), {_vals(n=s)} "
            f"WHERE {r}.status = 'error'"
        ),
        # review decisions and feedback recorded before the trace (or still there when it is deleted)
        _upsert(
            f"SELECT {key}, '', '', "
            + _vals(
                unchanged=f"{s} * sum(CASE WHEN ri.decision = 'approved' THEN 1 ELSE 0 END)",
                edited=f"{s} * sum(CASE WHEN ri.decision = 'edited' THEN 1 ELSE 0 END)",
                rejected=f"{s} * sum(CASE WHEN ri.decision = 'rejected' THEN 1 ELSE 0 END)",
            )
            + f" FROM review_items ri WHERE ri.request_id = {r}.request_id AND ri.decision IN {DECIDED}"
            " GROUP BY ri.request_id"
        ),
        _upsert(
            f"SELECT {key}, 'rej', coalesce(nullif(ri.reject_reason, ''), 'unspecified'), "
            + _vals(n=f"{s} * count(*)")
            + f" FROM review_items ri WHERE ri.request_id = {r}.request_id AND ri.decision = 'rejected'"
            " GROUP BY coalesce(nullif(ri.reject_reason, ''), 'unspecified')"
        ),
        _upsert(
            f"SELECT {key}, '', '', "
            + _vals(
                fb_up=f"{s} * sum(CASE WHEN f.rating > 0 THEN 1 ELSE 0 END)",
                fb_down=f"{s} * sum(CASE WHEN f.rating > 0 THEN 0 ELSE 1 END)",
            )
            + f" FROM feedback f WHERE f.request_id = {r}.request_id GROUP BY f.request_id"
        ),
        _upsert(
            f"SELECT {key}, 'down', {fb_val}, {_vals(n=f'{s} * count(*)')} FROM feedback f, {fb_from} "
            f"WHERE f.request_id = {r}.request_id AND f.rating <= 0 GROUP BY {fb_val}"
        ),
        _upsert(
            f"SELECT {key}, 'fail', 'negative_feedback:' || {fb_val}, {_vals(n=f'{s} * count(*)')} "
            f"FROM feedback f, {fb_from} WHERE f.request_id = {r}.request_id AND f.rating < 0 GROUP BY {fb_val}"
        ),
        _upsert(
            f"SELECT {key}, 'fail', 'negative_feedback:unspecified', {_vals(n=f'{s} * count(*)')} "
            f"FROM feedback f WHERE f.request_id = {r}.request_id AND f.rating < 0 "
            f"AND {_is_empty_list(d, 'f.reasons')} GROUP BY f.request_id"
        ),
    ]


def review_statements(d: str, r: str, s: str) -> list[str]:
    """``s`` × the contribution of review item ``r``: counted only with its trace, only when decided."""
    key = _dims(d, "t")
    return [
        _upsert(
            f"SELECT {key}, '', '', "
            + _vals(
                unchanged=_b(f"{r}.decision = 'approved'", s),
                edited=_b(f"{r}.decision = 'edited'", s),
                rejected=_b(f"{r}.decision = 'rejected'", s),
            )
            + f" FROM traces t WHERE t.request_id = {r}.request_id AND {r}.decision IN {DECIDED}"
        ),
        _upsert(
            f"SELECT {key}, 'rej', coalesce(nullif({r}.reject_reason, ''), 'unspecified'), {_vals(n=s)} "
            f"FROM traces t WHERE t.request_id = {r}.request_id AND {r}.decision = 'rejected'"
        ),
    ]


def feedback_statements(d: str, r: str, s: str) -> list[str]:
    """``s`` × the contribution of feedback row ``r``: counted only with its trace."""
    key = _dims(d, "t")
    frm, val = _reasons(d, f"{r}.reasons")
    return [
        _upsert(
            f"SELECT {key}, '', '', "
            + _vals(fb_up=_b(f"{r}.rating > 0", s), fb_down=_b(f"{r}.rating <= 0", s))
            + f" FROM traces t WHERE t.request_id = {r}.request_id"
        ),
        _upsert(
            f"SELECT {key}, 'down', {val}, {_vals(n=f'{s} * count(*)')} FROM traces t, {frm} "
            f"WHERE t.request_id = {r}.request_id AND {r}.rating <= 0 GROUP BY {key}, {val}"
        ),
        _upsert(
            f"SELECT {key}, 'fail', 'negative_feedback:' || {val}, {_vals(n=f'{s} * count(*)')} "
            f"FROM traces t, {frm} WHERE t.request_id = {r}.request_id AND {r}.rating < 0 GROUP BY {key}, {val}"
        ),
        _upsert(
            f"SELECT {key}, 'fail', 'negative_feedback:unspecified', {_vals(n=s)} FROM traces t "
            f"WHERE t.request_id = {r}.request_id AND {r}.rating < 0 AND {_is_empty_list(d, r + '.reasons')}"
        ),
    ]


TABLES = {
    "traces": (
        trace_statements,
        "started_at, status, prompt_version, model, index_version, tool_refusals, cost_usd, latency_ms, "
        "escalation, groundedness, error_type, request_id",
    ),
    "review_items": (review_statements, "decision, reject_reason, request_id"),
    "feedback": (feedback_statements, "rating, reasons, request_id"),
}


# --------------------------------------------------------------------------------- backfill
def backfill_statements(d: str) -> list[str]:
    """Grouped ``INSERT … SELECT`` of everything already stored (the triggers' rules, in bulk)."""
    key = _dims(d, "t")
    fb_from, fb_val = _reasons(d, "f.reasons")
    g = f"GROUP BY {key}"
    return [
        _upsert(
            f"SELECT {key}, '', '', "
            + _vals(
                n="count(*)",
                served=f"sum(CASE WHEN t.status IN {SERVED} THEN 1 ELSE 0 END)",
                errors="sum(CASE WHEN t.status = 'error' THEN 1 ELSE 0 END)",
                refused="sum(CASE WHEN t.status = 'refused' THEN 1 ELSE 0 END)",
                tool_refusals="coalesce(sum(t.tool_refusals), 0)",
                cost_usd="coalesce(sum(t.cost_usd), 0.0)",
                g_sum="coalesce(sum(t.groundedness), 0.0)",
                g_n="count(t.groundedness)",
            )
            + f" FROM traces t WHERE 1 = 1 {g}"
        ),
        _upsert(
            f"SELECT {key}, 'esc', t.escalation, {_vals(n='count(*)')} FROM traces t "
            f"WHERE t.escalation IS NOT NULL AND t.escalation <> '' {g}, t.escalation"
        ),
        _upsert(
            f"SELECT {key}, 'lat', CAST({_bucket(d, 't.latency_ms')} AS TEXT), {_vals(n='count(*)')} "
            f"FROM traces t WHERE t.status IN {SERVED} {g}, CAST({_bucket(d, 't.latency_ms')} AS TEXT)"
        ),
        _upsert(
            f"SELECT {key}, 'fail', 'tool_refused', {_vals(n='count(*)')} FROM traces t "
            f"WHERE coalesce(t.tool_refusals, 0) > 0 {g}"
        ),
        _upsert(
            f"SELECT {key}, 'fail', 'error:' || coalesce(t.error_type, 'Error'), {_vals(n='count(*)')} "
            f"FROM traces t WHERE t.status = 'error' {g}, 'error:' || coalesce(t.error_type, 'Error')"
        ),
        _upsert(
            f"SELECT {key}, '', '', "
            + _vals(
                unchanged="sum(CASE WHEN ri.decision = 'approved' THEN 1 ELSE 0 END)",
                edited="sum(CASE WHEN ri.decision = 'edited' THEN 1 ELSE 0 END)",
                rejected="sum(CASE WHEN ri.decision = 'rejected' THEN 1 ELSE 0 END)",
            )
            + f" FROM review_items ri JOIN traces t ON t.request_id = ri.request_id "
            f"WHERE ri.decision IN {DECIDED} {g}"
        ),
        _upsert(
            f"SELECT {key}, 'rej', coalesce(nullif(ri.reject_reason, ''), 'unspecified'), "
            + _vals(n="count(*)")
            + " FROM review_items ri JOIN traces t ON t.request_id = ri.request_id "
            f"WHERE ri.decision = 'rejected' {g}, coalesce(nullif(ri.reject_reason, ''), 'unspecified')"
        ),
        _upsert(
            f"SELECT {key}, '', '', "
            + _vals(
                fb_up="sum(CASE WHEN f.rating > 0 THEN 1 ELSE 0 END)",
                fb_down="sum(CASE WHEN f.rating > 0 THEN 0 ELSE 1 END)",
            )
            + f" FROM feedback f JOIN traces t ON t.request_id = f.request_id WHERE 1 = 1 {g}"
        ),
        _upsert(
            f"SELECT {key}, 'down', {fb_val}, {_vals(n='count(*)')} "
            f"FROM feedback f JOIN traces t ON t.request_id = f.request_id CROSS JOIN {fb_from} "
            f"WHERE f.rating <= 0 {g}, {fb_val}"
        ),
        _upsert(
            f"SELECT {key}, 'fail', 'negative_feedback:' || {fb_val}, {_vals(n='count(*)')} "
            f"FROM feedback f JOIN traces t ON t.request_id = f.request_id CROSS JOIN {fb_from} "
            f"WHERE f.rating < 0 {g}, {fb_val}"
        ),
        _upsert(
            f"SELECT {key}, 'fail', 'negative_feedback:unspecified', {_vals(n='count(*)')} "
            f"FROM feedback f JOIN traces t ON t.request_id = f.request_id "
            f"WHERE f.rating < 0 AND {_is_empty_list(d, 'f.reasons')} {g}"
        ),
    ]


# --------------------------------------------------------------------------------- triggers
def trigger_ddl(d: str) -> list[str]:
    out = []
    for table, (statements, columns) in TABLES.items():
        name = f"monitor_rollup_{table}"
        if d == "sqlite":
            ins = ";\n  ".join(statements(d, "NEW", "1"))
            dele = ";\n  ".join(statements(d, "OLD", "-1"))
            out += [
                f"CREATE TRIGGER {name}_ins AFTER INSERT ON {table} BEGIN\n  {ins};\nEND",
                f"CREATE TRIGGER {name}_del AFTER DELETE ON {table} BEGIN\n  {dele};\nEND",
                f"CREATE TRIGGER {name}_upd AFTER UPDATE OF {columns} ON {table} BEGIN\n  {dele};\n  {ins};\nEND",
            ]
        else:
            old = ";\n    ".join(statements(d, "OLD", "-1"))
            new = ";\n    ".join(statements(d, "NEW", "1"))
            out += [
                f"CREATE OR REPLACE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $fn$\n"
                f"BEGIN\n  IF TG_OP IN ('UPDATE', 'DELETE') THEN\n    {old};\n  END IF;\n"
                f"  IF TG_OP IN ('UPDATE', 'INSERT') THEN\n    {new};\n  END IF;\n  RETURN NULL;\nEND\n$fn$",
                f"CREATE TRIGGER {name} AFTER INSERT OR DELETE OR UPDATE OF {columns} ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {name}()",
            ]
    return out


def upgrade() -> None:
    op.create_table(
        "monitor_rollup",
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("prompt_version", sa.String(100), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("index_version", sa.String(100), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        *(
            sa.Column(c, sa.Float if c in ("cost_usd", "g_sum") else sa.BigInteger, nullable=False)
            for c in COUNTS
        ),
        sa.PrimaryKeyConstraint(*KEY, name="pk_monitor_rollup"),
    )
    d = op.get_bind().dialect.name
    for sql in backfill_statements(d):
        op.execute(sql)
    for sql in trigger_ddl(d):
        op.execute(sql)


def downgrade() -> None:
    d = op.get_bind().dialect.name
    for table in TABLES:
        name = f"monitor_rollup_{table}"
        if d == "sqlite":
            for suffix in ("ins", "del", "upd"):
                op.execute(f"DROP TRIGGER IF EXISTS {name}_{suffix}")
        else:
            op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
            op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.drop_table("monitor_rollup")
