"""Alert conditions, evaluated from the store: the same six conditions as the shipped Prometheus rules
(``deploy/prometheus/charter-alerts.yaml``), for deployments without Prometheus (the drift loop calls
:func:`alerts_once`) and for the metrics those rules read (:func:`budget_projection`).

=====================  ==========================================================================  ==========
alert                  fires when                                                                  owner
=====================  ==========================================================================  ==========
budget_burn            this month's spend, projected to the month's end, exceeds                    cost
                       ``drift.alerts.budget_projection_ratio`` × ``budgets.monthly_usd``
escalation_spike:R     escalation reason R: in the last ``escalation_window`` at least
                       ``escalation_min_count`` escalations and a rate ≥ ``escalation_factor`` × the
                       rate in the ``escalation_baseline`` before it                               per reason
latency_slo_burn       the share of served requests slower than ``latency.p95_ms`` burns the error
                       budget (1 − ``latency_objective``) fast in a long *and* a short window
                       (SRE workbook, multiwindow multi-burn-rate: 1h & 5m at 14.4×, 6h & 30m at
                       6× → page; 3d & 6h at 1× → ticket)                                          incidents
sync_freshness:S       source S has no successful sync within its ``freshness.max_age``            sources
audit_verification     the audit chain does not verify                                             incidents
kill_switch            the workflow's kill switch is on                                            incidents
=====================  ==========================================================================  ==========

Every function takes ``now`` (an injectable clock) and reads only aggregates.
"""

from __future__ import annotations

import logging
from calendar import monthrange
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, case, func, select

from charter.store import utcnow
from charter.store.switches import read_kill_switch
from charter.store.tables import traces
from charter.telemetry._trends import SERVED, period_aggregates, sum_cost

if TYPE_CHECKING:
    from charter.telemetry._runtime import TelemetryRuntime

_drift_log = logging.getLogger("charter.gate")  # what drift.notify sends is logged as the gate's
log = logging.getLogger("charter.monitor")
ALERTS_STATE_KEY = "monitor.alerts"
AUDIT_VERIFY_KEY = "monitor.audit_verify"
#: (long window, short window, burn-rate factor, severity) — the SRE workbook's recommended pairs.
BURN_WINDOWS: tuple[tuple[timedelta, timedelta, float, str], ...] = (
    (timedelta(hours=1), timedelta(minutes=5), 14.4, "page"),
    (timedelta(hours=6), timedelta(minutes=30), 6.0, "page"),
    (timedelta(days=3), timedelta(hours=6), 1.0, "ticket"),
)


@dataclass
class Alert:
    """One firing alert."""

    id: str  # stable: "escalation_spike:no_sources"
    alert: str  # the rule name: "escalation_spike"
    severity: str  # page | ticket
    summary: str
    owner: dict[str, str]
    value: float | None = None
    threshold: float | None = None
    labels: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _owner(rt: TelemetryRuntime, duty: str) -> dict[str, str]:
    return {"duty": duty, "principal": str(getattr(rt.spec.owners, duty))}


def _month_start(now: datetime) -> datetime:
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


# ------------------------------------------------------------------------------------------- budget
def budget_projection(rt: TelemetryRuntime, now: datetime | None = None) -> dict[str, float]:
    """Month-to-date spend (from the traces) and its projection to the month's end at the current pace."""
    now = now or utcnow()
    start = _month_start(now)
    spent = sum_cost(rt, start, now)
    days = monthrange(now.year, now.month)[1]
    elapsed = (now - start).total_seconds() / 86400
    floor = rt.spec.drift.alerts.budget_min_elapsed.total_seconds() / 86400
    projected = spent / max(elapsed, floor, 1e-9) * days
    return {
        "spent_usd": spent,
        "projected_usd": projected,
        "elapsed_days": elapsed,
        "days_in_month": float(days),
        "budget_usd": rt.spec.budgets.monthly_usd,
    }


def _budget(rt: TelemetryRuntime, now: datetime) -> list[Alert]:
    b = budget_projection(rt, now)
    limit = rt.spec.drift.alerts.budget_projection_ratio * rt.spec.budgets.monthly_usd
    if b["projected_usd"] <= limit:
        return []
    return [
        Alert(
            id="budget_burn",
            alert="budget_burn",
            severity="page" if b["spent_usd"] >= rt.spec.budgets.monthly_usd else "ticket",
            summary=(
                f"projected month spend {b['projected_usd']:.2f} USD exceeds {limit:.2f} USD "
                f"({b['spent_usd']:.2f} USD spent in {b['elapsed_days']:.1f} of {b['days_in_month']:.0f} days)"
            ),
            owner=_owner(rt, "cost"),
            value=round(b["projected_usd"], 6),
            threshold=limit,
        )
    ]


# ------------------------------------------------------------------------------------------- escalations
def escalation_rates(rt: TelemetryRuntime, now: datetime) -> dict[str, Any]:
    """Requests and escalations per reason in the recent window and in the baseline before it."""
    a = rt.spec.drift.alerts
    cut = now - a.escalation_window
    start = cut - a.escalation_baseline
    base, cur = period_aggregates(rt, start, cut), period_aggregates(rt, cut, now)
    n = [base.requests, cur.requests]  # baseline, recent
    by: dict[str, list[int]] = {}
    for i, agg in enumerate((base, cur)):
        for reason, count in agg.escalations.items():
            if count:
                by.setdefault(reason, [0, 0])[i] += count
    return {"baseline_requests": n[0], "recent_requests": n[1], "by_reason": by}


def _escalations(rt: TelemetryRuntime, now: datetime) -> list[Alert]:
    a = rt.spec.drift.alerts
    r = escalation_rates(rt, now)
    nb, nr = r["baseline_requests"], r["recent_requests"]
    out: list[Alert] = []
    if not nb or not nr:
        return out
    from charter.telemetry._clusters import owner_duty

    for reason, (kb, kr) in sorted(r["by_reason"].items()):
        base, cur = kb / nb, kr / nr
        if kr >= a.escalation_min_count and cur >= a.escalation_factor * base:
            out.append(
                Alert(
                    id=f"escalation_spike:{reason}",
                    alert="escalation_spike",
                    severity="page",
                    summary=(
                        f"escalations for {reason}: {kr} of {nr} requests ({cur:.1%}) in the last "
                        f"{a.escalation_window}, vs {base:.1%} ({kb} of {nb}) in the {a.escalation_baseline} before"
                    ),
                    owner=_owner(rt, owner_duty(f"escalation:{reason}")),
                    value=round(cur, 6),
                    threshold=round(a.escalation_factor * base, 6),
                    labels={"reason": reason},
                )
            )
    return out


# ------------------------------------------------------------------------------------------- latency SLO
def latency_burn(rt: TelemetryRuntime, now: datetime) -> dict[str, dict[str, float]]:
    """Per window: served requests, those slower than ``latency.p95_ms``, and the burn rate."""
    target = rt.spec.latency.p95_ms
    budget = 1 - rt.spec.drift.alerts.latency_objective
    windows = sorted({w for long, short, _, _ in BURN_WINDOWS for w in (long, short)})
    t = traces.c
    slow = t.latency_ms > target
    cols = []
    for w in windows:
        inside = t.started_at >= now - w
        cols += [func.sum(case((inside, 1), else_=0)), func.sum(case((inside & slow, 1), else_=0))]
    q = select(*cols).where(and_(t.started_at >= now - windows[-1], t.started_at < now, t.status.in_(SERVED)))
    with rt.store.connect() as conn:
        row = conn.execute(q).one()
    out = {}
    for i, w in enumerate(windows):
        n, bad = int(row[2 * i] or 0), int(row[2 * i + 1] or 0)
        ratio = bad / n if n else 0.0
        out[str(w)] = {"served": n, "slow": bad, "ratio": ratio, "burn_rate": ratio / budget}
    return out


def _latency(rt: TelemetryRuntime, now: datetime) -> list[Alert]:
    burn = latency_burn(rt, now)
    for long, short, factor, severity in BURN_WINDOWS:
        lw, sw = burn[str(long)], burn[str(short)]
        if lw["burn_rate"] > factor and sw["burn_rate"] > factor:
            return [
                Alert(
                    id="latency_slo_burn",
                    alert="latency_slo_burn",
                    severity=severity,
                    summary=(
                        f"latency SLO ({rt.spec.drift.alerts.latency_objective:.0%} under "
                        f"{rt.spec.latency.p95_ms:.0f} ms) burning {lw['burn_rate']:.1f}× over {long} and "
                        f"{sw['burn_rate']:.1f}× over {short} (threshold {factor}×)"
                    ),
                    owner=_owner(rt, "incidents"),
                    value=round(lw["burn_rate"], 4),
                    threshold=factor,
                    labels={"long_window": str(long), "short_window": str(short)},
                )
            ]
    return []


# ------------------------------------------------------------------------------------------- the rest
def _freshness(rt: TelemetryRuntime, now: datetime) -> list[Alert]:
    from charter.sources import last_successful_syncs

    try:
        last = last_successful_syncs(rt)
    except Exception:  # sources tables missing: every source is unsynced
        last = {}
    out = []
    for s in rt.spec.sources:
        at = last.get(s.id)
        if at is None or now - at > s.freshness.max_age:
            age = "never synced" if at is None else f"last synced {now - at} ago"
            out.append(
                Alert(
                    id=f"sync_freshness:{s.id}",
                    alert="sync_freshness",
                    severity="ticket",
                    summary=f"source {s.id}: {age} (freshness.max_age {s.freshness.max_age})",
                    owner=_owner(rt, "sources"),
                    value=(now - at).total_seconds() if at else None,
                    threshold=s.freshness.max_age.total_seconds(),
                    labels={"source": s.id},
                )
            )
    return out


def verify_audit(rt: TelemetryRuntime, now: datetime | None = None) -> dict[str, Any]:
    """Verify the audit chain and remember the result (the ``charter_audit_verify_ok`` metric reads it)."""
    v = rt.audit.verify()
    record = {
        "ok": bool(v.ok),
        "at": (now or utcnow()).isoformat(),
        "first_bad_seq": v.first_bad_seq,
        "reason": v.reason,
        "entries": v.entries_verified,
    }
    rt.set_state(AUDIT_VERIFY_KEY, record)
    return record


def _audit(rt: TelemetryRuntime, now: datetime) -> list[Alert]:
    v = verify_audit(rt, now)
    if v["ok"]:
        return []
    return [
        Alert(
            id="audit_verification",
            alert="audit_verification",
            severity="page",
            summary=f"audit chain does not verify: broken at seq {v['first_bad_seq']}: {v['reason']}",
            owner=_owner(rt, "incidents"),
        )
    ]


def _kill(rt: TelemetryRuntime, now: datetime) -> list[Alert]:
    if not read_kill_switch(rt.store):
        return []
    return [
        Alert(
            id="kill_switch",
            alert="kill_switch",
            severity="page",
            summary=f"the kill switch of workflow {rt.spec.workflow.id} is on",
            owner=_owner(rt, "incidents"),
        )
    ]


CONDITIONS = {
    "budget_burn": _budget,
    "escalation_spike": _escalations,
    "latency_slo_burn": _latency,
    "sync_freshness": _freshness,
    "audit_verification": _audit,
    "kill_switch": _kill,
}


def evaluate_alerts(
    rt: TelemetryRuntime, now: datetime | None = None, *, only: tuple[str, ...] | None = None
) -> list[Alert]:
    """Every firing alert at ``now`` (``only``: a subset of :data:`CONDITIONS`)."""
    now = now or utcnow()
    out: list[Alert] = []
    for name, fn in CONDITIONS.items():
        if only is None or name in only:
            out.extend(fn(rt, now))
    return out


def notify(rt: TelemetryRuntime, payload: dict[str, Any]) -> str:
    """Send ``payload`` to ``drift.notify``; returns how it went; never raises (failures are logged, on the
    ``charter.gate`` logger). Drift regressions (:mod:`charter.gate`) and alerts are sent through it."""
    target = rt.spec.drift.notify or "log"
    if target.startswith(("http://", "https://")):
        import httpx

        try:
            resp = httpx.post(target, json=payload, timeout=10)
            return f"webhook {resp.status_code}"
        except httpx.HTTPError as exc:
            _drift_log.error("gate drift webhook failed: %s; payload: %s", exc, payload)
            return f"webhook failed: {exc}"
    _drift_log.warning("gate drift regression: %s", payload)
    return "log"


def alerts_once(
    rt: TelemetryRuntime, now: datetime | None = None, *, actor: str = "system:monitor-alerts"
) -> dict[str, Any]:
    """Evaluate the alerts, notify ``drift.notify`` of those that started or stopped firing since the last
    pass (no repeats while an alert keeps firing), audit each change and remember the firing set."""
    now = now or utcnow()
    if not rt.spec.drift.alerts.enabled:
        return {"firing": [], "started": [], "resolved": [], "notified": None}
    firing = {a.id: a for a in evaluate_alerts(rt, now)}
    before = rt.get_state(ALERTS_STATE_KEY) or {}
    previous: dict[str, Any] = dict(before.get("firing") or {}) if isinstance(before, dict) else {}
    started = [a for k, a in firing.items() if k not in previous]
    resolved = [k for k in previous if k not in firing]
    sent = None
    if started or resolved:
        payload = {
            "event": "charter.alerts",
            "workflow": rt.spec.workflow.id,
            "at": now.isoformat(),
            "firing": [a.as_dict() for a in started],
            "resolved": [{"id": k, **previous[k]} for k in resolved],
            "still_firing": sorted(k for k in firing if k in previous),
        }
        sent = notify(rt, payload)
        for a in started:
            rt.audit.append(
                actor=actor,
                action="monitor.alert",
                resource=f"workflow:{rt.spec.workflow.id}",
                outcome="firing",
                details={**a.as_dict(), "notified": sent},
            )
        for k in resolved:
            rt.audit.append(
                actor=actor,
                action="monitor.alert",
                resource=f"workflow:{rt.spec.workflow.id}",
                outcome="resolved",
                details={"id": k, "notified": sent},
            )
    state = {
        k: {
            "since": previous.get(k, {}).get("since", now.isoformat()),
            "summary": a.summary,
            "alert": a.alert,
        }
        for k, a in firing.items()
    }
    rt.set_state(ALERTS_STATE_KEY, {"at": now.isoformat(), "firing": state})
    return {
        "firing": [a.as_dict() for a in firing.values()],
        "started": [a.id for a in started],
        "resolved": resolved,
        "notified": sent,
    }


def firing_alerts(rt: TelemetryRuntime) -> dict[str, Any]:
    """What the last drift pass found firing (for the console)."""
    value = rt.get_state(ALERTS_STATE_KEY)
    return value if isinstance(value, dict) else {"at": None, "firing": {}}
