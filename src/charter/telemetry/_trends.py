"""Trends over time: the monitoring aggregates that the report, the console and the alerts all read.

:func:`build_trends` answers *is it getting better or worse, and since which change?* for a window
(default: the last 28 days): per day and per ISO week, and per prompt version, index version and model —
requests, review acceptance / edit / rejection rates with reasons, negative feedback with reasons,
escalation rate by reason, tool refusals, groundedness, eval pass rate across stored eval runs, cost per
task and p50/p95 latency of served requests — plus the **change points** in the window (prompt activated,
source synced, model changed) with the rates before and after each.

**One implementation, over a daily rollup.** Every number is an additive aggregate of a *cell* — one per
(UTC day, prompt version, model, index version) — and the rollups (days → weeks, cells → dimensions) add
cells, never rows. :func:`load_cells` reads the whole days of a window from ``monitor_rollup`` (kept by
database triggers on every write of ``traces``, ``feedback`` and ``review_items``, migration
``0018_rollup``) and aggregates only the partial days at its edges from the raw rows
(:func:`raw_cells`); the result equals :func:`raw_cells` over the whole window (``tests/telemetry/
test_rollup.py`` is the oracle). Latency percentiles come from a per-cell histogram with 1 ms buckets
below 100 ms, 10 ms below 1 s, 100 ms below 10 s, 1 s below 100 s and one above, so p50/p95 are exact to
that resolution (the reported value is the bucket's upper edge, never optimistic).

**Comparisons carry their uncertainty.** A rate compared between two periods (this period vs. the
previous one, before vs. after a change point) comes with Wilson 95% intervals for both sides and
Newcombe's interval for the difference; when either side has fewer than :data:`MIN_SAMPLE` observations the
comparison says so (``note``) and is never called significant. Before/after a change point uses whole
days: the day of the change belongs to neither side (the cells are daily), the sides are the
``change_window`` days before it and after it.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, and_, case, cast, func, literal, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql import ColumnElement

from charter.store import utcnow
from charter.store.tables import feedback, traces

if TYPE_CHECKING:
    from charter.store import Store
    from charter.telemetry._runtime import TelemetryRuntime

log = logging.getLogger("charter.monitor")
Z95 = 1.959963984540054
#: Below this many observations on either side, a comparison is reported but never called significant.
MIN_SAMPLE = 30
#: Statuses of requests that were served (an answer or a draft for a human); their latency is the SLO's.
SERVED = ("answered", "needs_human")
DIMENSIONS = ("prompt_version", "index_version", "model")


# ------------------------------------------------------------------------------------------- statistics
def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k/n`` (``(0, 1)`` when ``n == 0``)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(k: int, n: int) -> dict[str, Any]:
    """A proportion with its Wilson 95% interval: ``{"k", "n", "rate", "low", "high"}``."""
    lo, hi = wilson_interval(k, n)
    return {"k": k, "n": n, "rate": (k / n) if n else None, "low": round(lo, 4), "high": round(hi, 4)}


def compare_rates(
    before: tuple[int, int], after: tuple[int, int], min_sample: int = MIN_SAMPLE
) -> dict[str, Any]:
    """``after`` vs ``before`` (each ``(k, n)``): both rates, the difference with Newcombe's 95% interval
    (hybrid Wilson score), ``significant`` when that interval excludes 0 and both sides reach
    ``min_sample``, and a ``note`` saying why a comparison is not conclusive."""
    (k1, n1), (k2, n2) = before, after
    b, a = rate(k1, n1), rate(k2, n2)
    out: dict[str, Any] = {"before": b, "after": a, "change": None, "low": None, "high": None}
    if n1 and n2:
        p1, p2 = k1 / n1, k2 / n2
        l1, u1 = wilson_interval(k1, n1)
        l2, u2 = wilson_interval(k2, n2)
        d = p2 - p1
        out.update(
            change=d,
            low=round(d - math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2), 4),
            high=round(d + math.sqrt((u2 - p2) ** 2 + (p1 - l1) ** 2), 4),
        )
    small = min(n1, n2) < min_sample
    out["min_sample"] = min_sample
    out["significant"] = bool(not small and out["low"] is not None and (out["low"] > 0 or out["high"] < 0))
    if small:
        out["note"] = f"too few to compare (n={n1} before, n={n2} after; need ≥ {min_sample} each)"
    elif out["significant"]:
        out["note"] = "difference significant at 95% (Newcombe interval excludes 0)"
    else:
        out["note"] = "no significant difference at 95% (Newcombe interval includes 0)"
    return out


# ------------------------------------------------------------------------------------------- SQL pieces
def day_expr(store: Store, column: Any) -> ColumnElement[str]:
    """``YYYY-MM-DD`` (UTC) of a timestamp column, computed by the database."""
    if store.dialect == "sqlite":  # stored as naive-UTC ISO text: the first ten characters are the day
        return func.substr(column, 1, 10)
    return func.to_char(func.timezone("UTC", column), "YYYY-MM-DD")


def latency_bucket(column: Any, dialect: str = "sqlite") -> ColumnElement[int]:
    """The latency histogram bucket of a millisecond column (see the module docstring). Values are
    truncated into their bucket on every backend (SQLite's CAST truncates; PostgreSQL's rounds, so there
    the value is floored first). The rollup triggers (migration ``0018_rollup``) compute the same."""

    def trunc(v: Any) -> ColumnElement[int]:
        return cast(v if dialect == "sqlite" else func.floor(v), Integer)

    return case(
        (column < 100, trunc(column)),
        (column < 1_000, 100 + trunc(column / 10.0) - 10),
        (column < 10_000, 190 + trunc(column / 100.0) - 10),
        (column < 100_000, 280 + trunc(column / 1_000.0) - 10),
        else_=literal(370),
    )


def bucket_upper_ms(b: int) -> float:
    """The upper edge (ms) of latency bucket ``b``."""
    if b < 100:
        return float(b + 1)
    if b < 190:
        return float((b - 100 + 10 + 1) * 10)
    if b < 280:
        return float((b - 190 + 10 + 1) * 100)
    if b < 370:
        return float((b - 280 + 10 + 1) * 1_000)
    return math.inf


def _hist_percentile(hist: Counter[int], q: float) -> float | None:
    total = sum(hist.values())
    if not total:
        return None
    need = max(1, math.ceil(q * total))  # nearest rank
    seen = 0
    for b in sorted(hist):
        seen += hist[b]
        if seen >= need:
            return bucket_upper_ms(b)
    return None  # pragma: no cover - unreachable


# ------------------------------------------------------------------------------------------- the cells
@dataclass
class Agg:
    """Additive aggregates of one cell (or of a rollup of cells)."""

    requests: int = 0
    served: int = 0
    errors: int = 0
    refused: int = 0
    escalations: Counter[str] = field(default_factory=Counter)
    tool_refusals: int = 0
    cost_usd: float = 0.0
    g_sum: float = 0.0
    g_n: int = 0
    latency: Counter[int] = field(default_factory=Counter)
    reviews: Counter[str] = field(default_factory=Counter)  # unchanged / edited / rejected
    reject_reasons: Counter[str] = field(default_factory=Counter)
    fb_up: int = 0
    fb_down: int = 0
    down_reasons: Counter[str] = field(default_factory=Counter)

    def add(self, o: Agg) -> None:
        self.requests += o.requests
        self.served += o.served
        self.errors += o.errors
        self.refused += o.refused
        self.escalations.update(o.escalations)
        self.tool_refusals += o.tool_refusals
        self.cost_usd += o.cost_usd
        self.g_sum += o.g_sum
        self.g_n += o.g_n
        self.latency.update(o.latency)
        self.reviews.update(o.reviews)
        self.reject_reasons.update(o.reject_reasons)
        self.fb_up += o.fb_up
        self.fb_down += o.fb_down
        self.down_reasons.update(o.down_reasons)

    @property
    def decided(self) -> int:
        return sum(self.reviews.values())

    @property
    def escalated(self) -> int:
        return sum(self.escalations.values())

    def counts(self) -> dict[str, tuple[int, int]]:
        """``(k, n)`` of every rate, for comparisons."""
        d, r = self.decided, self.requests
        return {
            "acceptance_rate": (self.reviews["unchanged"] + self.reviews["edited"], d),
            "edit_rate": (self.reviews["edited"], d),
            "rejection_rate": (self.reviews["rejected"], d),
            "negative_feedback_rate": (self.fb_down, self.fb_up + self.fb_down),
            "escalation_rate": (self.escalated, r),
            "error_rate": (self.errors, r),
        }

    def summary(self) -> dict[str, Any]:
        """The JSON-ready numbers of this cell."""
        c = self.counts()
        return {
            "requests": self.requests,
            "served": self.served,
            "errors": self.errors,
            "refused": self.refused,
            "review": {
                "decided": self.decided,
                "unchanged": self.reviews["unchanged"],
                "edited": self.reviews["edited"],
                "rejected": self.reviews["rejected"],
                "reject_reasons": dict(self.reject_reasons.most_common()),
            },
            "acceptance_rate": _r(*c["acceptance_rate"]),
            "edit_rate": _r(*c["edit_rate"]),
            "rejection_rate": _r(*c["rejection_rate"]),
            "feedback": {
                "up": self.fb_up,
                "down": self.fb_down,
                "down_reasons": dict(self.down_reasons.most_common()),
            },
            "negative_feedback_rate": _r(*c["negative_feedback_rate"]),
            "escalations": self.escalated,
            "escalation_rate": _r(*c["escalation_rate"]),
            "escalations_by_reason": {
                k: {"count": v, "rate": _r(v, self.requests)} for k, v in self.escalations.most_common()
            },
            "tool_refusals": self.tool_refusals,
            "groundedness_mean": (self.g_sum / self.g_n) if self.g_n else None,
            "cost_usd": round(self.cost_usd, 9),
            "cost_per_task_usd": (self.cost_usd / self.requests) if self.requests else None,
            "latency_p50_ms": _hist_percentile(self.latency, 0.50),
            "latency_p95_ms": _hist_percentile(self.latency, 0.95),
        }


def _r(k: int, n: int) -> float | None:
    return (k / n) if n else None


Key = tuple[str, str, str, str]  # (day, prompt_version, model, index_version)


def _key(day: Any, pv: Any, model: Any, iv: Any) -> Key:
    return (str(day), pv or "-", model or "-", iv or "-")


def day_split(
    start: datetime, end: datetime
) -> tuple[list[tuple[datetime, datetime]], tuple[str, str] | None]:
    """Split ``[start, end)`` into the whole UTC days the rollup answers (``(first_day, end_day)``, end
    exclusive, ``None`` when there is none) and the partial days at either edge, read from raw rows."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)
    if end <= start:
        return [], None
    first = datetime.combine(start.date(), datetime.min.time(), UTC)
    if first < start:
        first += timedelta(days=1)
    last = datetime.combine(end.date(), datetime.min.time(), UTC)
    if first >= last:
        return [(start, end)], None
    raw = [(a, b) for a, b in ((start, first), (last, end)) if a < b]
    return raw, (first.date().isoformat(), last.date().isoformat())


#: Raw cells of partial days already aggregated, by ``(start, end)``: one builder of several windows ending
#: at the same moment (the report: its period, the previous one, the trends, the month's spend) passes one
#: dictionary, so an edge they share (today) is aggregated from the raw rows once.
EdgeMemo = dict[tuple[datetime, datetime], dict[Key, Agg]]


def _edge_cells(store: Store, a: datetime, b: datetime, memo: EdgeMemo | None) -> dict[Key, Agg]:
    if memo is None:
        return raw_cells(store, a, b)
    if (a, b) not in memo:
        memo[(a, b)] = raw_cells(store, a, b)
    return memo[(a, b)]


def load_cells(
    rt: TelemetryRuntime, start: datetime, end: datetime, memo: EdgeMemo | None = None
) -> dict[Key, Agg]:
    """Aggregate ``[start, end)`` into cells by (day, prompt version, model, index version): whole UTC days
    from the daily rollup (``monitor_rollup``, kept by triggers on every write, migration
    ``0018_rollup``), the partial days at the edges (today, and the window's first day unless it starts at
    midnight) from the raw rows — the same numbers :func:`raw_cells` computes for the whole window.
    ``memo`` (:data:`EdgeMemo`) shares the edges' raw cells between windows; the cells returned are the
    memo's own objects, which callers only read (every rollup adds them into new :class:`Agg` objects)."""
    raw, days = day_split(start, end)
    cells: dict[Key, Agg] = {}
    for a, b in raw:
        cells.update(_edge_cells(rt.store, a, b, memo))
    if days is not None:
        cells.update(rollup_cells(rt.store, *days))
    return cells


def sum_cost(rt: TelemetryRuntime, start: datetime, end: datetime, memo: EdgeMemo | None = None) -> float:
    """Total ``cost_usd`` of the traces started in ``[start, end)``: whole days from the rollup, the edge
    days from the raw rows (as :func:`load_cells`; an edge already in ``memo`` from its cells)."""
    from charter.store.tables import monitor_rollup as mr

    raw, days = day_split(start, end)
    total = 0.0
    t = traces.c
    with rt.store.connect() as conn:
        for a, b in raw:
            if memo is not None and (a, b) in memo:
                total += sum(c.cost_usd for c in memo[(a, b)].values())
                continue
            q = select(func.coalesce(func.sum(t.cost_usd), 0.0)).where(
                (t.started_at >= a) & (t.started_at < b)
            )
            total += float(conn.execute(q).scalar() or 0.0)
        if days is not None:
            q = select(func.coalesce(func.sum(mr.c.cost_usd), 0.0)).where(
                (mr.c.day >= days[0]) & (mr.c.day < days[1]) & (mr.c.kind == "")
            )
            total += float(conn.execute(q).scalar() or 0.0)
    return total


ROLLUP_COUNTS = (
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


def rollup_labels(store: Store, first_day: str, end_day: str, kinds: tuple[str, ...]) -> list[Any]:
    """``(day, prompt_version, model, index_version, kind, label, n)`` of the rollup's non-zero label rows
    of ``kinds`` for the days ``[first_day, end_day)`` (``YYYY-MM-DD``)."""
    from charter.store.tables import monitor_rollup as mr

    c = mr.c
    q = select(c.day, c.prompt_version, c.model, c.index_version, c.kind, c.label, c.n).where(
        (c.day >= first_day) & (c.day < end_day) & c.kind.in_(kinds) & (c.n != 0)
    )
    with store.connect() as conn:
        return list(conn.execute(q).fetchall())


def rollup_cells(store: Store, first_day: str, end_day: str) -> dict[Key, Agg]:
    """The cells of the days ``[first_day, end_day)`` from the rollup (a cell exists while it has a trace)."""
    from charter.store.tables import monitor_rollup as mr

    c = mr.c
    q = select(c.day, c.prompt_version, c.model, c.index_version, *(c[n] for n in ROLLUP_COUNTS)).where(
        (c.day >= first_day) & (c.day < end_day) & (c.kind == "") & (c.n != 0)
    )
    cells: dict[Key, Agg] = {}
    with store.connect() as conn:
        rows = conn.execute(q).fetchall()
    for day, pv, m, iv, n, srv, err, ref, tref, cost, gs, gn, up, down, unch, edit, rej in rows:
        a = cells[(day, pv, m, iv)] = Agg()
        a.requests, a.served, a.errors, a.refused = int(n), int(srv), int(err), int(ref)
        a.tool_refusals, a.cost_usd, a.g_sum, a.g_n = int(tref), float(cost), float(gs), int(gn)
        a.fb_up, a.fb_down = int(up), int(down)
        for outcome, v in (("unchanged", unch), ("edited", edit), ("rejected", rej)):
            if v:
                a.reviews[outcome] = int(v)
    for day, pv, m, iv, kind, label, n in rollup_labels(
        store, first_day, end_day, ("esc", "lat", "rej", "down")
    ):
        cell = cells.get((day, pv, m, iv))
        if cell is None:
            continue  # cannot happen while the triggers hold: a label counts traces of its cell
        if kind == "esc":
            cell.escalations[label] += int(n)
        elif kind == "lat":
            cell.latency[int(label)] += int(n)
        elif kind == "rej":
            cell.reject_reasons[label] += int(n)
        else:
            cell.down_reasons[label] += int(n)
    return cells


def raw_cells(store: Store, start: datetime, end: datetime) -> dict[Key, Agg]:
    """Aggregate ``[start, end)`` into cells from the raw rows, in SQL (grouped scans of the window)."""
    t = traces.c
    day = day_expr(store, t.started_at)
    dims = (day, t.prompt_version, t.model, t.index_version)
    window = and_(t.started_at >= start, t.started_at < end)
    cells: dict[Key, Agg] = defaultdict(Agg)
    served = t.status.in_(SERVED)
    with store.connect() as conn:
        q1 = (
            select(
                *dims,
                t.escalation,
                func.count(),
                func.sum(case((served, 1), else_=0)),
                func.sum(case((t.status == "error", 1), else_=0)),
                func.sum(case((t.status == "refused", 1), else_=0)),
                func.coalesce(func.sum(t.tool_refusals), 0),
                func.coalesce(func.sum(t.cost_usd), 0.0),
                func.coalesce(func.sum(t.groundedness), 0.0),
                func.count(t.groundedness),
            )
            .where(window)
            .group_by(*dims, t.escalation)
        )
        for d, pv, m, iv, esc, n, srv, err, ref, tref, cost, gs, gn in conn.execute(q1):
            a = cells[_key(d, pv, m, iv)]
            a.requests += int(n)
            a.served += int(srv or 0)
            a.errors += int(err or 0)
            a.refused += int(ref or 0)
            a.tool_refusals += int(tref or 0)
            a.cost_usd += float(cost or 0.0)
            a.g_sum += float(gs or 0.0)
            a.g_n += int(gn or 0)
            if esc:
                a.escalations[esc] += int(n)
        lb = latency_bucket(t.latency_ms, store.dialect)
        q2 = select(*dims, lb, func.count()).where(window & served).group_by(*dims, lb)
        for d, pv, m, iv, b, n in conn.execute(q2):
            cells[_key(d, pv, m, iv)].latency[int(b)] += int(n)
        fb = feedback.c
        q4 = (
            select(*dims, fb.rating, cast(fb.reasons, _text_type(store)), func.count())
            .select_from(feedback.join(traces, t.request_id == fb.request_id))
            .where(window)
            .group_by(*dims, fb.rating, cast(fb.reasons, _text_type(store)))
        )
        for d, pv, m, iv, rating, reasons, n in conn.execute(q4):
            a = cells[_key(d, pv, m, iv)]
            if int(rating) > 0:
                a.fb_up += int(n)
            else:
                a.fb_down += int(n)
                for reason in _json_list(reasons):
                    a.down_reasons[reason] += int(n)
        if _has_reviews(store):
            from charter.store.tables import review_items as ri
            from charter.telemetry._feedback import REVIEW_OUTCOMES

            q3 = (
                select(*dims, ri.c.decision, ri.c.reject_reason, func.count())
                .select_from(ri.join(traces, t.request_id == ri.c.request_id))
                .where(window & ri.c.decision.in_(list(REVIEW_OUTCOMES)))
                .group_by(*dims, ri.c.decision, ri.c.reject_reason)
            )
            for d, pv, m, iv, decision, reason, n in conn.execute(q3):
                a = cells[_key(d, pv, m, iv)]
                outcome = REVIEW_OUTCOMES[decision]
                a.reviews[outcome] += int(n)
                if outcome == "rejected":
                    a.reject_reasons[reason or "unspecified"] += int(n)
    return dict(cells)


def _text_type(store: Store) -> Any:
    from sqlalchemy import Text

    return Text()


def _json_list(value: Any) -> list[str]:
    import json

    if isinstance(value, list):
        return [str(v) for v in value]
    if not value:
        return []
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        return []
    return [str(v) for v in parsed] if isinstance(parsed, list) else []


def _has_reviews(store: Store) -> bool:
    from charter.telemetry._feedback import _has_table

    return _has_table(store, "review_items")


# ------------------------------------------------------------------------------------------- change points
def _prompt_changes(conn: Any, wf: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        from charter.store.tables import prompt_activations as pa

        previous: dict[str, str] = {}
        for r in conn.execute(
            select(pa.c.prompt, pa.c.version, pa.c.activated_by, pa.c.activated_at)
            .where((pa.c.workflow_id == wf) & (pa.c.activated_at < end))
            .order_by(pa.c.activated_at, pa.c.id)
        ):
            before, previous[r.prompt] = previous.get(r.prompt), r.version
            if before is None or before == r.version or r.activated_at < start:
                continue  # the first record is the baseline; re-activating the same version changes nothing
            out.append(
                {
                    "kind": "prompt_activated",
                    "at": r.activated_at,
                    "label": f"prompt {r.prompt} → {r.version}",
                    "detail": {
                        "prompt": r.prompt,
                        "version": r.version,
                        "previous": before,
                        "by": r.activated_by,
                    },
                }
            )
    except SQLAlchemyError:  # table not migrated in this store: no prompt change points
        log.debug("no prompt activations table", exc_info=True)
    return out


def _sync_changes(conn: Any, start: datetime, end: datetime) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        from charter.store.tables import sync_runs as sr

        for sync in conn.execute(
            select(sr.c.source_id, sr.c.finished_at, sr.c.summary).where(
                sr.c.status.in_(("succeeded", "partial"))
                & (sr.c.finished_at >= start)
                & (sr.c.finished_at < end)
            )
        ):
            summary = sync.summary if isinstance(sync.summary, dict) else {}
            changed = sum(int(summary.get(k) or 0) for k in ("added", "updated", "deleted", "changed"))
            if summary and not changed and any(k in summary for k in ("added", "updated", "deleted")):
                continue  # a sync that changed nothing cannot explain a change
            out.append(
                {
                    "kind": "source_synced",
                    "at": sync.finished_at,
                    "label": f"source {sync.source_id} synced",
                    # counts only: the summary's failures/private/warnings name documents, and
                    # report readers see a document's id only if they may read it (charter.access)
                    "detail": {
                        "source": sync.source_id,
                        "summary": {
                            k: v
                            for k, v in summary.items()
                            if isinstance(v, (int, float, str)) and k != "error"
                        },
                    },
                }
            )
    except SQLAlchemyError:  # pragma: no cover - sources tables missing
        log.debug("no sync runs table", exc_info=True)
    return out


def _traffic_changes(cells: dict[Key, Agg]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    # models and index versions: the first day each value shows up after the window's first day
    first_day: dict[tuple[str, str], str] = {}
    days = sorted({k[0] for k in cells})
    for (d, _pv, m, iv), _a in sorted(cells.items()):
        for kind, v in (("model", m), ("index_version", iv)):
            if v != "-":
                first_day.setdefault((kind, v), d)
    for (kind, v), d in first_day.items():
        if days and d != days[0]:
            out.append(
                {
                    "kind": "model_changed" if kind == "model" else "index_changed",
                    "at": datetime.fromisoformat(d).replace(tzinfo=UTC),
                    "label": f"{'model' if kind == 'model' else 'index'} {v} first used",
                    "detail": {kind: v},
                }
            )
    return out


def change_points(
    rt: TelemetryRuntime, start: datetime, end: datetime, cells: dict[Key, Agg]
) -> list[dict[str, Any]]:
    """What changed in ``[start, end)``: prompt activations and successful source syncs (from their
    tables, exact times) and models / index versions first seen in the traffic (day resolution)."""
    wf = rt.spec.workflow.id
    with rt.store.connect() as conn:
        out = _prompt_changes(conn, wf, start, end) + _sync_changes(conn, start, end)
    out += _traffic_changes(cells)
    out.sort(key=lambda c: (c["at"], c["kind"]))
    return out


# ------------------------------------------------------------------------------------------- rollups
def _week(day: str) -> str:
    d = date.fromisoformat(day)
    monday = d - timedelta(days=d.weekday())
    return monday.isoformat()


def rollup(cells: dict[Key, Agg], key: Any) -> dict[str, Agg]:
    out: dict[str, Agg] = defaultdict(Agg)
    for k, a in cells.items():
        out[key(k)].add(a)
    return dict(out)


def _total(cells: dict[Key, Agg], days: set[str] | None = None) -> Agg:
    total = Agg()
    for k, a in cells.items():
        if days is None or k[0] in days:
            total.add(a)
    return total


def _before_after(cells: dict[Key, Agg], at: datetime, window_days: int) -> dict[str, Any]:
    change_day = at.date()
    before = {(change_day - timedelta(days=i)).isoformat() for i in range(1, window_days + 1)}
    after = {(change_day + timedelta(days=i)).isoformat() for i in range(1, window_days + 1)}
    b, a = _total(cells, before), _total(cells, after)
    bc, ac = b.counts(), a.counts()
    return {
        "before_days": [min(before), max(before)],
        "after_days": [min(after), max(after)],
        "before_requests": b.requests,
        "after_requests": a.requests,
        "rates": {k: compare_rates(bc[k], ac[k]) for k in bc},
        "cost_per_task_usd": {
            "before": b.summary()["cost_per_task_usd"],
            "after": a.summary()["cost_per_task_usd"],
        },
        "latency_p95_ms": {"before": b.summary()["latency_p95_ms"], "after": a.summary()["latency_p95_ms"]},
    }


def eval_pass_rates(rt: TelemetryRuntime, start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Every stored eval run in the window with its case pass rate (results without a failure / all)."""
    try:
        from charter.store.tables import eval_results as er
        from charter.store.tables import eval_runs as ev
    except Exception:  # pragma: no cover
        return []
    q = (
        select(
            ev.c.id,
            ev.c.created_at,
            ev.c.prompt_version,
            ev.c.model,
            ev.c.index_version,
            ev.c.passed,
            func.count(er.c.id),
            func.sum(case((er.c.failure.is_(None), 1), else_=0)),
        )
        .select_from(ev.outerjoin(er, er.c.run_id == ev.c.id))
        .where((ev.c.workflow == rt.spec.workflow.id) & (ev.c.created_at >= start) & (ev.c.created_at < end))
        .group_by(ev.c.id, ev.c.created_at, ev.c.prompt_version, ev.c.model, ev.c.index_version, ev.c.passed)
        .order_by(ev.c.created_at)
    )
    try:
        with rt.store.connect() as conn:
            rows = list(conn.execute(q))
    except Exception:  # eval tables not in this store
        return []
    return [
        {
            "run": r[0],
            "at": r[1].isoformat(),
            "day": r[1].date().isoformat(),
            "prompt_version": r[2],
            "model": r[3],
            "index_version": r[4],
            "gate_passed": bool(r[5]),
            "cases": int(r[6] or 0),
            "pass_rate": (int(r[7] or 0) / int(r[6])) if r[6] else None,
        }
        for r in rows
    ]


def _eval_by(runs: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[str(r[key] or "-")].append(r)
    out = {}
    for k, rs in groups.items():
        cases = sum(r["cases"] for r in rs)
        passed = sum(round((r["pass_rate"] or 0) * r["cases"]) for r in rs)
        out[k] = {"runs": len(rs), "cases": cases, "pass_rate": (passed / cases) if cases else None}
    return out


def build_trends(
    rt: TelemetryRuntime,
    *,
    since: timedelta = timedelta(days=28),
    now: datetime | None = None,
    change_window_days: int = 7,
    memo: EdgeMemo | None = None,
) -> dict[str, Any]:
    """The trend aggregates for ``[now - since, now)`` (JSON-ready; see the module docstring); ``memo``
    as for :func:`load_cells`."""
    end = now or utcnow()
    start = end - since
    cells = load_cells(rt, start, end, memo)
    days = [
        (start.date() + timedelta(days=i)).isoformat() for i in range((end.date() - start.date()).days + 1)
    ]
    by_day = rollup(cells, lambda k: k[0])
    weeks = sorted({_week(d) for d in days})
    by_week = rollup(cells, lambda k: _week(k[0]))
    evals = eval_pass_rates(rt, start, end)
    ev_day, ev_week = (
        _eval_by(evals, "day"),
        _eval_by([{**r, "week": _week(r["day"])} for r in evals], "week"),
    )

    def series(
        groups: dict[str, Agg], keys: list[str], ev: dict[str, dict[str, Any]]
    ) -> list[dict[str, Any]]:
        return [
            {"period": k, **groups.get(k, Agg()).summary(), "eval_pass_rate": ev.get(k, {}).get("pass_rate")}
            for k in keys
        ]

    dims: dict[str, list[dict[str, Any]]] = {}
    for i, name in enumerate(DIMENSIONS):
        col = {"prompt_version": 1, "model": 2, "index_version": 3}[name]
        groups = rollup(cells, lambda k, c=col: k[c])
        ev = _eval_by(evals, name)
        first_seen: dict[str, str] = {}
        for k in sorted(cells):
            first_seen.setdefault(k[col], k[0])
        dims[name] = [
            {
                name: v,
                "first_day": first_seen.get(v),
                **a.summary(),
                "eval_pass_rate": ev.get(v, {}).get("pass_rate"),
            }
            for v, a in sorted(groups.items(), key=lambda kv: (first_seen.get(kv[0], ""), kv[0]))
        ]
        del i
    points = change_points(rt, start, end, cells)
    for p in points:
        p.update(_before_after(cells, p["at"], change_window_days))
        p["at"] = p["at"].isoformat()
        p["day"] = p["at"][:10]
    total = _total(cells)
    return {
        "window": {"start": start.isoformat(), "end": end.isoformat(), "days": len(days)},
        "min_sample": MIN_SAMPLE,
        "latency_resolution": "1 ms <100 ms, 10 ms <1 s, 100 ms <10 s, 1 s above (upper bucket edge)",
        "totals": {
            **total.summary(),
            "eval_pass_rate": _eval_by([{**r, "all": "all"} for r in evals], "all")
            .get("all", {})
            .get("pass_rate"),
        },
        "by_day": series(by_day, days, ev_day),
        "by_week": series(by_week, weeks, ev_week),
        "by": dims,
        "eval_runs": evals,
        "change_points": points,
    }


def compare_periods(cur: Agg, prev: Agg) -> dict[str, Any]:
    """Each rate of ``cur`` against ``prev`` with intervals and the minimum-sample note."""
    c, p = cur.counts(), prev.counts()
    return {k: compare_rates(p[k], c[k]) for k in c}


def period_aggregates(
    rt: TelemetryRuntime, start: datetime, end: datetime, memo: EdgeMemo | None = None
) -> Agg:
    """All of ``[start, end)`` as one :class:`Agg` (same SQL as the trends)."""
    return _total(load_cells(rt, start, end, memo))
