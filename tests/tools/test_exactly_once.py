"""Exactly-once under concurrent approvals (threads and processes) and under a crash mid-execution.

Every test runs on SQLite and on PostgreSQL (``db_url``, ``tests/_pg.py``); the worker processes inherit
``CHARTER_DATABASE_URL``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from charter.errors import Conflict, Denied
from charter.review import decide_approval
from charter.runtime import Runtime
from charter.tools import execute, get_action, propose, resolve_stuck, set_kill_switch, stuck_actions
from tests.tools._helpers import REFUND_50, audit_rows, billing_state

pytestmark = pytest.mark.slow  # real processes, SIGKILL mid-execution

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _on_backend(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here runs on SQLite and on PostgreSQL: ``Runtime.open`` (and child processes) use ``db_url``."""
    monkeypatch.setenv("CHARTER_DATABASE_URL", db_url)


def test_twenty_concurrent_approvals_execute_once_and_nineteen_conflict(rt: Runtime, project: Path) -> None:
    proposal = propose(rt, "ana", "issue_refund", REFUND_50)
    barrier = threading.Barrier(20)
    outcomes: list[str] = []
    lock = threading.Lock()

    def approve() -> None:
        barrier.wait()
        try:
            action = decide_approval(rt, proposal.id, "lena", "approve")
            result = action.status
        except Conflict:
            result = "conflict"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=approve) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["conflict"] * 19 + ["executed"]
    assert len(billing_state(project)["refunds"]) == 1
    assert get_action(rt, proposal.id).status == "executed"
    approved = audit_rows(rt, f"action:{proposal.id}", action="approval.approved")
    assert len(approved) == 1 and len(audit_rows(rt, f"action:{proposal.id}", action="tools.executed")) == 1
    assert rt.audit.verify().ok


_APPROVER = textwrap.dedent("""
    import json, sys, threading, time
    from pathlib import Path
    from charter.errors import Conflict
    from charter.review import decide_approval
    from charter.runtime import Runtime

    charter, action_id, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    rt = Runtime.open(charter, record_changes=False)
    barrier = threading.Barrier(10)
    results = []
    def approve():
        barrier.wait()
        while not go.exists():
            time.sleep(0.001)
        try:
            results.append(decide_approval(rt, action_id, "lena", "approve").status)
        except Conflict:
            results.append("conflict")
    threads = [threading.Thread(target=approve) for _ in range(10)]
    for t in threads: t.start()
    for t in threads: t.join()
    print(json.dumps(results))
""")


def test_concurrent_approvals_across_two_processes_execute_once(
    rt: Runtime, project: Path, tmp_path: Path
) -> None:
    proposal = propose(rt, "ana", "issue_refund", REFUND_50)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _APPROVER, str(project), proposal.id, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    time.sleep(1.5)  # both processes loaded and waiting
    go.touch()
    results: list[str] = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results += json.loads(out.strip().splitlines()[-1])
    assert sorted(results) == ["conflict"] * 19 + ["executed"]
    assert len(billing_state(project)["refunds"]) == 1


_SLOW_TOOLS = textwrap.dedent("""
    import os, time
    from charter.tools import ToolContext, tool

    def _log(ctx, name):
        with (ctx.base_dir / name).open("a") as fh:
            fh.write(ctx.idempotency_key + "\\n")

    @tool
    def slow_write(label: str, ctx: ToolContext) -> dict:
        _log(ctx, "started.log")
        time.sleep(float(os.environ.get("SLOW_TOOL_SECONDS", "0")))
        _log(ctx, "finished.log")
        return {"label": label}

    @tool(idempotent=True)
    def slow_keyed(label: str, ctx: ToolContext) -> dict:
        done = ctx.base_dir / "finished.log"
        if done.exists() and ctx.idempotency_key in done.read_text().split():
            return {"label": label, "duplicate": True}
        _log(ctx, "started.log")
        time.sleep(float(os.environ.get("SLOW_TOOL_SECONDS", "0")))
        _log(ctx, "finished.log")
        return {"label": label}
""")

_EXECUTOR = textwrap.dedent("""
    import sys
    from charter.review import decide_approval
    from charter.runtime import Runtime
    rt = Runtime.open(sys.argv[1], record_changes=False)
    decide_approval(rt, sys.argv[2], "lena", "approve")
""")


@pytest.fixture
def slow_project(project: Path) -> Path:
    (project.parent / "slow_tools.py").write_text(_SLOW_TOOLS)
    data = yaml.safe_load(project.read_text())
    for name in ("slow_write", "slow_keyed"):
        data["tools"].append(
            {
                "name": name,
                "callable": f"slow_tools:{name}",
                "effect": "write",
                "roles": ["agent"],
                "approval": {"rule": "always", "approver_role": "lead"},
            }
        )
    project.write_text(yaml.safe_dump(data, sort_keys=False))
    return project


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def _kill_during_execution(project: Path, action_id: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "SLOW_TOOL_SECONDS": "60"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _EXECUTOR, str(project), action_id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    started = project.parent / "started.log"
    deadline = time.monotonic() + 60
    while action_id not in _lines(started):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the tool never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_during_execution_leaves_evidence_and_recovery_is_explicit(slow_project: Path) -> None:
    rt = Runtime.open(slow_project)
    proposal = propose(rt, "ana", "slow_write", {"label": "x"})
    _kill_during_execution(slow_project, proposal.id)
    rt.close()

    restarted = Runtime.open(slow_project)  # "restart"
    action = get_action(restarted, proposal.id)
    assert action.status == "executing" and action.started_at is not None  # not lost: the state shows it
    assert [a.id for a in stuck_actions(restarted)] == [proposal.id]
    with pytest.raises(Conflict):  # never executed twice by a retry ...
        execute(restarted, proposal.id)
    with pytest.raises(Conflict):  # ... nor by another approval
        decide_approval(restarted, proposal.id, "lena", "approve")
    with pytest.raises(Denied):  # re-running a non-idempotent tool is refused
        resolve_stuck(restarted, proposal.id, "omar", "retry", reason="try again")
    with pytest.raises(Denied):  # only the incidents owner / kill_switch role recovers
        resolve_stuck(restarted, proposal.id, "ben", "failed", reason="looked")
    assert _lines(slow_project.parent / "started.log") == [proposal.id]
    assert _lines(slow_project.parent / "finished.log") == []

    resolved = resolve_stuck(restarted, proposal.id, "omar", "failed", reason="checked: nothing was written")
    assert resolved.status == "failed" and "omar" in (resolved.error or "")
    assert execute(restarted, proposal.id).status == "failed"
    assert _lines(slow_project.parent / "started.log") == [proposal.id]  # ran once, never again
    restarted.close()


def test_an_idempotent_tool_can_be_rerun_with_the_same_key_after_a_crash(slow_project: Path) -> None:
    rt = Runtime.open(slow_project)
    proposal = propose(rt, "ana", "slow_keyed", {"label": "y"})
    _kill_during_execution(slow_project, proposal.id)
    rt.close()
    restarted = Runtime.open(slow_project)
    set_kill_switch(restarted, "omar", True, reason="incident")
    with pytest.raises(Denied, match="kill switch"):
        resolve_stuck(restarted, proposal.id, "omar", "retry", reason="tool is idempotent on the key")
    set_kill_switch(restarted, "omar", False)
    done = resolve_stuck(restarted, proposal.id, "omar", "retry", reason="tool is idempotent on the key")
    assert done.status == "executed"
    assert _lines(slow_project.parent / "finished.log") == [proposal.id]
    assert execute(restarted, proposal.id).result == {"label": "y"}
    restarted.close()


def test_an_approved_action_survives_a_restart_before_it_runs(slow_project: Path) -> None:
    rt = Runtime.open(slow_project)
    proposal = propose(rt, "ana", "slow_write", {"label": "z"})
    decide_approval(rt, proposal.id, "lena", "approve", run=False)
    rt.close()
    restarted = Runtime.open(slow_project)
    assert execute(restarted, proposal.id).status == "executed"
    assert execute(restarted, proposal.id).status == "executed"
    assert _lines(slow_project.parent / "finished.log") == [proposal.id]
    restarted.close()


def test_an_executed_state_is_never_stored_without_its_audit_entry(
    rt: Runtime, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database fails while the result is being recorded (injected into the audit append of
    ``tools.executed``): the state change rolls back with it, so the action stays ``executing`` (listed
    as stuck for an operator) and the chain holds no half of the pair; nothing claims an unaudited run."""
    from charter.errors import StoreUnavailable
    from charter.telemetry.audit import AuditLog

    original = AuditLog._append_in

    def failing(self, conn, prepared, written):  # type: ignore[no-untyped-def]
        if any(p[1] == "tools.executed" for p in prepared):
            raise StoreUnavailable()
        return original(self, conn, prepared, written)

    monkeypatch.setattr(AuditLog, "_append_in", failing)
    proposal = propose(rt, "ana", "issue_refund", REFUND_50)
    with pytest.raises(StoreUnavailable):
        decide_approval(rt, proposal.id, "lena", "approve")
    monkeypatch.setattr(AuditLog, "_append_in", original)
    action = get_action(rt, proposal.id)
    assert action.status == "executing"
    assert [a.id for a in stuck_actions(rt)] == [proposal.id]
    assert audit_rows(rt, f"action:{proposal.id}", action="tools.executing")
    assert not audit_rows(rt, f"action:{proposal.id}", action="tools.executed")
    assert rt.audit.verify().ok
