"""Drift after launch: re-run the checks that can change without a new configuration (freshness, eval
recency against the fingerprint, owners, budget burn, audit verification); on a regression notify the
responsible owners and apply ``drift.on_regression``:

* ``notify`` — notify only;
* ``restrict`` — turn on **restricted mode**: the runtime state key ``workflow.restricted``
  (``{"on": true, "by", "at", "reason", "checks"}``); while it is on every draft requires review,
  whatever ``review.drafts`` says (:func:`is_restricted` is what the review queue consults);
* ``kill`` — turn on the workflow's kill switch (as the incidents owner).

Notifications go to ``drift.notify``: an ``http(s)://`` webhook (JSON POST via httpx) or ``log`` (the
``charter.gate`` logger). Every regression and every action is audited.

Each pass also evaluates the **alerts** (:func:`charter.telemetry._alerts.alerts_once`: budget burn,
escalation spike, latency SLO burn, sync freshness, audit verification, kill switch — the same conditions
as the shipped Prometheus rules) and notifies ``drift.notify`` when one starts or stops firing, so a
deployment without Prometheus is alerted too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from charter.gate._run import POST_LAUNCH, record_gate, run_gate
from charter.gate._types import GateResult
from charter.store import state, utcnow
from charter.store.switches import RESTRICTED_KEY, is_restricted
from charter.telemetry import alerts_once, notify

if TYPE_CHECKING:
    from charter.runtime import Runtime

log = logging.getLogger("charter.gate")


def set_restricted(
    rt: Runtime, on: bool, *, actor: str, reason: str, checks: list[str] | None = None
) -> None:
    record = {"on": on, "by": actor, "at": utcnow().isoformat(), "reason": reason, "checks": checks or []}
    rt.set_state(RESTRICTED_KEY, record)
    rt.audit.append(
        actor=actor,
        action="workflow.restricted",
        resource=f"workflow:{rt.spec.workflow.id}",
        outcome="on" if on else "off",
        details=record,
    )


def drift_once(rt: Runtime, *, actor: str = "system:gate-drift") -> tuple[GateResult, dict[str, Any] | None]:
    """One drift pass. Returns the result and, when something regressed, what was done about it."""
    result = run_gate(rt, only=POST_LAUNCH, drills=False)
    check_alerts(rt)
    record_gate(rt, result, actor=actor, report=None, manifest=None, action="gate.drift")
    failed = result.failed
    if not failed:
        return result, None
    owners = {c.id: c.owner for c in result.checks if c.status == "fail"}
    payload = {
        "event": "charter.gate.drift",
        "workflow": result.workflow,
        "gate_run": result.id,
        "fingerprint": result.charter_fingerprint,
        "failed": failed,
        "owners": owners,
        "findings": {
            c.id: [f.message for f in c.findings if f.status == "fail"]
            for c in result.checks
            if c.status == "fail"
        },
        "on_regression": rt.spec.drift.on_regression,
    }
    sent = notify(rt, payload)
    mode = rt.spec.drift.on_regression
    applied = "notify"
    if mode == "restrict" and not is_restricted(rt):
        set_restricted(rt, True, actor=actor, reason=f"gate drift: {', '.join(failed)}", checks=failed)
        applied = "restricted"
    elif mode == "kill":
        from charter.tools import is_killed, set_kill_switch

        if not is_killed(rt):
            set_kill_switch(rt, rt.spec.owners.incidents, True, reason=f"gate drift: {', '.join(failed)}")
        applied = "killed"
    action = {"notified": sent, "applied": applied, "owners": owners, "failed": failed}
    rt.audit.append(
        actor=actor,
        action="gate.drift.regression",
        resource=f"workflow:{result.workflow}",
        outcome=applied,
        details=action,
    )
    return result, action


def check_alerts(rt: Runtime, now: datetime | None = None) -> dict[str, Any] | None:
    """Evaluate and notify the alerts (see the module docstring); a failure is logged, never raised."""
    try:
        return alerts_once(rt, now)
    except Exception:  # alerting must never break the drift pass
        log.exception("alert evaluation failed")
        return None


def watch(
    rt: Runtime,
    *,
    interval_s: float,
    once: bool = False,
    on_pass: Callable[[GateResult, dict[str, Any] | None], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Run :func:`drift_once` every ``interval_s`` seconds (once with ``once``)."""
    while True:
        result, action = drift_once(rt)
        if on_pass:
            on_pass(result, action)
        if once:
            return
        sleep(interval_s)


class DriftScheduler:
    """Runs :func:`drift_once` every ``interval_s`` seconds on a daemon thread (for the server's start-up:
    ``DriftScheduler(rt, 3600).start()``; ``stop()`` on shutdown). A failing pass is logged, never raised."""

    def __init__(self, rt: Runtime, interval_s: float) -> None:
        import threading

        self.rt, self.interval_s = rt, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="charter-gate-drift", daemon=True)

    def start(self) -> DriftScheduler:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                if claim_turn(self.rt, DRIFT_LEASE_KEY, self.interval_s * 0.9):
                    drift_once(self.rt)
            except Exception:  # a drift pass must never take the server down
                log.exception("gate drift pass failed")


DRIFT_LEASE_KEY = "gate.drift.lease"


def claim_turn(rt: Runtime, key: str, period_s: float) -> bool:
    """True for exactly one caller per ``period_s`` across every process sharing the store: the server's
    workers each run a scheduler, and only the one that claims the turn runs the pass (no duplicate
    notifications). An atomic conditional update of a ``state`` row; works on SQLite and PostgreSQL."""
    from datetime import timedelta

    from sqlalchemy.exc import IntegrityError

    now = utcnow()
    cutoff = now - timedelta(seconds=period_s)
    value = {"at": now.isoformat()}
    with rt.store.begin() as conn:
        claimed = conn.execute(
            state.update()
            .where((state.c.key == key) & (state.c.updated_at <= cutoff))
            .values(value=value, updated_at=now)
        ).rowcount
        if claimed:
            return True
        exists = conn.execute(state.select().where(state.c.key == key)).first() is not None
    if exists:
        return False
    try:
        with rt.store.begin() as conn:
            conn.execute(state.insert().values(key=key, value=value, updated_at=now))
    except IntegrityError:  # another process inserted it first: its turn
        return False
    return True
