"""Gate fixtures: the synced billing example with a *small* real eval run, the policy set approved and the
broken-ACL source acknowledged — the state in which the gate must pass. Built once per session; each
test gets a private copy (database and keys included) and breaks one thing in it.

The eval run is reduced to keep the suite fast on a loaded machine: the minimum number of cases per
category from the example's eval set (skipping cases the extractive model is known to miss, which the
thresholds measure on the full set) plus generated permission probes for one user, scored and aggregated
with the real scorers and stored with :func:`charter.evals.save_run`.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import run_shared

#: Cases the extractive model misses on the full eval set (the full run still passes the thresholds).
KNOWN_MISSES = {
    "n-refund-annual-30d",
    "n-refund-timing-card",
    "n-refund-timing-sepa",
    "n-billing-roles",
    "n-billing-currency",
    "n-chargeback-info",
    "n-data-retention",
    "n-exchange-rates",
    "n-payment-methods",
    "n-reactivate",
    "n-update-card",
    "n-us-sales-tax",
    "e-refund-prorata-example",
    "e-refund-after-30-days",
    "e-charge-after-cancellation",
    "e-multi-currency-prices",
    "neg-delete-account",
}


def small_eval(rt, *, probe_users: tuple[str, ...] = ("casey",)) -> str:  # type: ignore[no-untyped-def]
    """Run and store a reduced eval for the runtime's current fingerprint; returns the run id."""
    from charter.evals import (
        aggregate,
        check_thresholds,
        get_scorers,
        load_eval_sets,
        probe_runtime,
        run_cases,
        run_eval,
        save_run,
        score_outputs,
    )

    cases = load_eval_sets([rt.charter.resolve(s) for s in rt.spec.evals.sets])
    picked = []
    for cat, n in rt.spec.evals.min_cases.items():
        picked += [c for c in cases if c.category == cat and c.id not in KNOWN_MISSES][:n]
    run = run_eval(rt, picked, sets=list(rt.spec.evals.sets), concurrency=2)
    scorers = get_scorers(None)
    with probe_runtime(rt, users=list(probe_users), max_sentences=1) as probe:
        outs = run_cases(probe.runtime, probe.cases[:10], concurrency=2)
        probes = score_outputs(probe.runtime, outs, scorers=scorers, extra_canaries=probe.canaries)
    results = run.results + probes
    metrics = aggregate(results, scorers)
    run = dataclasses.replace(run, results=results, metrics=metrics, thresholds=check_thresholds(rt, metrics))
    return save_run(rt, run)


@pytest.fixture(scope="session")
def _gated_template(_synced_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synced example made gate-ready (a small eval run, policies approved, private documents
    acknowledged) — once per test run: the gate's modules land on different workers (~15 s each)."""
    from charter.gate import acknowledge_private, approve_policies, private_documents
    from charter.runtime import Runtime

    def build(dest: Path) -> None:
        shutil.copytree(_synced_template, dest)
        rt = Runtime.open(dest / "charter.yaml")
        try:
            small_eval(rt)
            approve_policies(rt, rt.charter.principal(rt.spec.owners.scope))
            for s in rt.spec.sources:
                if private_documents(rt, s.id):
                    acknowledge_private(rt, s.id, rt.charter.principal(s.owner))
        finally:
            rt.close()

    return run_shared(tmp_path_factory, "gated-template", build)


@pytest.fixture
def gated_project(_gated_template: Path, tmp_path: Path) -> Path:
    """A private copy of the gate-ready example; returns the charter path."""
    dest = tmp_path / "gated"
    shutil.copytree(_gated_template, dest)
    for key in (dest / ".charter" / "keys").glob("*"):
        key.chmod(0o600)
    return dest / "charter.yaml"


def edit_yaml(path: Path, change: Callable[[dict], None]) -> None:  # type: ignore[type-arg]
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(doc)
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def rebind_eval(charter: Path) -> None:
    """Bind the stored eval run to the charter's *new* fingerprint, for tests that break something the
    evaluation check is not about (a real deployment re-runs ``charter eval`` after any change)."""
    from sqlalchemy import update

    from charter.runtime import Runtime
    from charter.store.tables import eval_runs

    rt = Runtime.open(charter)
    try:
        with rt.store.begin() as conn:
            conn.execute(update(eval_runs).values(charter_fingerprint=rt.fingerprint))
    finally:
        rt.close()
