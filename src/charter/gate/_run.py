"""Running the gate: the seven checks in order, each timed and attributed to its owner; the signed
report; the audit record. :func:`run_gate` is what ``charter gate`` and the drift watcher call."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from charter.errors import UsageError
from charter.gate._checks import (
    check_cost_latency,
    check_evaluation,
    check_owners,
    check_scope_static,
    check_sources,
    current_run,
)
from charter.gate._drill import forbidden_drill, isolated_copy, monitoring_drill, review_drill
from charter.gate._types import CHECK_IDS, CHECKS, CheckResult, GateResult
from charter.store import utcnow
from charter.store.tables import budget_months

if TYPE_CHECKING:
    from charter.runtime import Runtime

#: Checks the drift watcher re-runs after launch (no drills: they cannot change without a config change,
#: which changes the fingerprint and so fails the evaluation check anyway).
POST_LAUNCH = ("sources", "evaluation", "owners", "cost_latency", "monitoring")


def _check_monitoring_logs(rt: Runtime, c: CheckResult, *, drill: bool) -> None:
    if drill:
        monitoring_drill(rt, c)
    v = rt.audit.verify()
    c.add(
        "pass" if v.ok else "fail",
        f"audit chain: {v.entries_verified} entries, {v.checkpoints_verified} checkpoints "
        + ("verified" if v.ok else f"BROKEN at seq {v.first_bad_seq}: {v.reason}"),
        entries=v.entries_verified,
        head_seq=v.head_seq,
        head_hash=v.head_hash,
        first_bad_seq=v.first_bad_seq,
    )
    exp = rt.spec.monitoring.exporters
    c.add(
        "pass" if exp.otlp_endpoint else "warn",
        f"trace exporter: {exp.otlp_endpoint}"
        if exp.otlp_endpoint
        else "no OTLP exporter configured (monitoring.exporters.otlp_endpoint): traces stay in the database",
        fix="set monitoring.exporters.otlp_endpoint to your OpenTelemetry collector (docs/monitoring.md)",
        otlp_endpoint=exp.otlp_endpoint,
        prometheus=exp.prometheus,
    )


def budget_burn(rt: Runtime, c: CheckResult, now: datetime) -> None:
    """This month's spend so far against the monthly budget, pro rata (drift)."""
    from calendar import monthrange

    from sqlalchemy import select

    from charter.models import month_key

    with rt.store.connect() as conn:
        row = conn.execute(
            select(budget_months.c.spent_nano).where(
                budget_months.c.workflow_id == rt.spec.workflow.id, budget_months.c.month == month_key(now)
            )
        ).first()
    spent = (row[0] if row else 0) / 1e9
    days = monthrange(now.year, now.month)[1]
    elapsed = (now.day - 1 + now.hour / 24 + now.minute / 1440) / days
    allowed = rt.spec.budgets.monthly_usd * max(elapsed, 1 / days)
    c.add(
        "pass" if spent <= allowed else "fail",
        f"spent {spent:.2f} USD this month; pro-rata budget {allowed:.2f} "
        f"of {rt.spec.budgets.monthly_usd} USD",
        month=month_key(now),
        spent_usd=spent,
        pro_rata_budget_usd=allowed,
    )


def run_gate(
    rt: Runtime, *, only: Sequence[str] | None = None, drills: bool = True, now: datetime | None = None
) -> GateResult:
    """Run the checks (all seven, or ``only`` these ids) and return the result. Writes nothing to the real
    store (drills run in an isolated copy)."""
    wanted = tuple(only) if only else CHECK_IDS
    unknown = sorted(set(wanted) - set(CHECK_IDS))
    if unknown:
        raise UsageError(f"unknown gate checks: {', '.join(unknown)} (known: {', '.join(CHECK_IDS)})")
    started = utcnow()
    now = now or started
    owners = rt.spec.owners.model_dump()
    run = current_run(rt) if {"evaluation", "cost_latency"} & set(wanted) else None
    results = []
    for cid, title, duty in CHECKS:
        if cid not in wanted:
            continue
        c = CheckResult(cid, title, duty, owners.get(duty))
        t0 = time.perf_counter()
        try:
            if cid == "scope":
                check_scope_static(rt, c)
                if drills:
                    with isolated_copy(rt) as copy:
                        forbidden_drill(copy, c)
            elif cid == "sources":
                check_sources(rt, c, now)
            elif cid == "evaluation":
                check_evaluation(rt, c, run, now)
            elif cid == "review":
                review_drill(rt, c)
            elif cid == "monitoring":
                _check_monitoring_logs(rt, c, drill=drills)
            elif cid == "cost_latency":
                check_cost_latency(rt, c, run)
                if not drills:
                    budget_burn(rt, c, now)
            elif cid == "owners":
                check_owners(rt, c)
        except (
            Exception
        ) as exc:  # a check that crashes has proved nothing: it fails, with the error as evidence
            c.add("fail", f"the check could not complete: {type(exc).__name__}: {exc}", error=repr(exc))
        c.duration_s = time.perf_counter() - t0
        results.append(c)
    return GateResult(
        "gate_" + uuid.uuid4().hex[:16],
        rt.spec.workflow.id,
        rt.fingerprint,
        started,
        utcnow(),
        results,
        only=tuple(only or ()),
    )


def record_gate(
    rt: Runtime,
    result: GateResult,
    *,
    actor: str,
    report: Path | None,
    manifest: dict[str, Any] | None,
    strict: bool = False,
    action: str = "gate.run",
) -> None:
    """Audit the run and remember it as the latest (``gate.latest`` state, for the console and drift)."""
    summary = {
        "id": result.id,
        "status": result.status(strict),
        "strict": strict,
        "fingerprint": result.charter_fingerprint,
        "at": result.finished_at.isoformat(),
        "checks": {c.id: c.status for c in result.checks},
        "owners": {c.id: c.owner for c in result.checks if c.status != "pass"},
        "report": str(report) if report else None,
        "report_files": (manifest or {}).get("files"),
        "signature": (manifest or {}).get("signature"),
    }
    rt.audit.append(
        actor=actor,
        action=action,
        resource=f"workflow:{result.workflow}",
        outcome="passed" if result.passed(strict) else "failed",
        details=summary,
    )
    rt.set_state("gate.latest" if action == "gate.run" else "gate.drift.latest", summary)
