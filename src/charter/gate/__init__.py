"""The launch gate: seven checks that gather evidence, live drills in an isolated copy, a signed report,
and drift after launch.

Public API:

* :func:`run_gate` (-> :class:`GateResult` of :class:`CheckResult` with :class:`Finding`), :data:`CHECKS`,
  :func:`record_gate` (audit + ``gate.latest``).
* :func:`write_report`, :func:`verify_report` — Markdown/HTML/JSON reports and their signed manifest.
* :func:`approve_policies`, :func:`policy_set_hash`, :func:`acknowledge_private` — the approvals the gate
  reads that the charter file cannot carry.
* :func:`drift_once`, :func:`watch`, :class:`DriftScheduler` (periodic, for the server),
  :func:`is_restricted`, :func:`set_restricted`, :data:`RESTRICTED_KEY`
  — drift after launch and restricted mode (read in :mod:`charter.store.switches`, re-exported here).
* :func:`isolated_copy` — a second runtime over a temporary copy of the state (the drills use it).
"""

from charter.gate._access import gate_owners, may_run_gate
from charter.gate._approvals import (
    acknowledge_private,
    approve_policies,
    policies_approval,
    policy_set_hash,
    private_documents,
)
from charter.gate._drift import DriftScheduler, drift_once, set_restricted, watch
from charter.gate._drill import isolated_copy
from charter.gate._report import render_html, render_markdown, verify_report, write_report
from charter.gate._run import POST_LAUNCH, record_gate, run_gate
from charter.gate._types import CHECK_IDS, CHECKS, CheckResult, Finding, GateResult
from charter.store.switches import RESTRICTED_KEY, is_restricted
from charter.telemetry import notify

__all__ = [
    "CHECKS",
    "CHECK_IDS",
    "POST_LAUNCH",
    "RESTRICTED_KEY",
    "CheckResult",
    "DriftScheduler",
    "Finding",
    "GateResult",
    "acknowledge_private",
    "approve_policies",
    "drift_once",
    "gate_owners",
    "is_restricted",
    "isolated_copy",
    "may_run_gate",
    "notify",
    "policies_approval",
    "policy_set_hash",
    "private_documents",
    "record_gate",
    "render_html",
    "render_markdown",
    "run_gate",
    "set_restricted",
    "verify_report",
    "watch",
    "write_report",
]
