"""Who may run the launch gate: the charter's owners or a role with gate.run; nobody else (audited)."""

from __future__ import annotations

from pathlib import Path

from charter.gate import gate_owners, may_run_gate
from charter.runtime import Runtime
from tests.conftest import run_cli


def test_owners_and_gate_run_role_may_run_it_others_may_not(project: Path) -> None:
    rt = Runtime.open(project)
    try:
        owners = gate_owners(rt)
        assert owners["lena"] == ["failures", "prompt_changes", "scope"] and owners["farid"] == ["cost"]
        verdict = {p: may_run_gate(rt, rt.charter.principal(p))[0] for p in rt.charter.principals}
        assert {p for p, ok in verdict.items() if ok} == {"omar", "lena", "farid"}
        ok, reasons = may_run_gate(rt, rt.charter.principal("farid"))
        assert ok and reasons == ["farid is owners.cost"]
    finally:
        rt.close()


def test_cli_refuses_a_non_owner_and_audits_it(project: Path) -> None:
    res = run_cli("gate", "--as", "ben", "-c", str(project))
    assert res.exit_code != 0 and "may not run the gate" in (res.stderr + res.stdout)
    rt = Runtime.open(project)
    try:
        [event] = rt.audit.tail(1, action="gate.run")
        assert (event.actor, event.outcome) == ("ben", "denied")
    finally:
        rt.close()


def test_one_drift_turn_per_period_across_processes(project: Path) -> None:
    """Every server worker runs a drift scheduler; only one per period claims the turn (the others'
    runtimes share the store, as processes do), including when they race from threads."""
    import threading

    from charter.gate._drift import claim_turn

    runtimes = [Runtime.open(project) for _ in range(4)]
    try:
        wins: list[bool] = []
        barrier = threading.Barrier(len(runtimes))

        def go(rt: Runtime) -> None:
            barrier.wait()
            wins.append(claim_turn(rt, "test.lease", 3600))

        threads = [threading.Thread(target=go, args=(rt,)) for rt in runtimes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(wins) == [False, False, False, True]
        assert not claim_turn(runtimes[0], "test.lease", 3600)
        assert claim_turn(runtimes[1], "test.lease", 0)  # the period has passed: next turn
    finally:
        for rt in runtimes:
            rt.close()
