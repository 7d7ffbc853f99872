"""The governed upstream call's guarantees, as the fast path keeps them: the action returned is the one
stored, every call leaves its three audited steps committed before the result is returned (also under
concurrency), and a kill switch turned on by *another process* stops the very next call of a long-lived
runtime before anything leaves (and turned off, lets the next one run). A crash while the upstream works is
``test_pin_recheck.test_a_crash_while_the_upstream_works_leaves_the_decision_audited``."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from charter.errors import Denied
from charter.runtime import Runtime
from charter.tools import get_action, propose
from tests.mcp.conftest import Governed

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def rt(governed: Governed) -> Iterator[Runtime]:
    runtime = Runtime.open(governed.charter)
    yield runtime
    runtime.close()


def steps(rt: Runtime, action_id: str) -> list[str]:
    """The audited steps of one action, read from a fresh runtime (what is committed, not cached)."""
    fresh = Runtime.open(rt.charter.path)
    try:
        return [e.action for e in fresh.audit.tail(100_000) if e.resource == f"action:{action_id}"]
    finally:
        fresh.close()


def upstream_calls(rt: Runtime) -> int:
    """Calls that reached the upstream: one ``tools.executed`` or ``tools.failed`` per call that left."""
    return sum(1 for e in rt.audit.tail(100_000) if e.action in ("tools.executed", "tools.failed"))


def test_the_action_returned_is_the_action_stored(rt: Runtime, governed: Governed) -> None:
    proposal = propose(rt, "ana", "git_status", {"repo_path": str(governed.repo)})
    assert proposal.executed
    stored = get_action(rt, proposal.id)
    assert stored == proposal.action  # the same values, timestamps and all, as a read gives
    assert steps(rt, proposal.id) == ["tools.proposed", "tools.executing", "tools.executed"]


def test_concurrent_calls_are_each_audited_before_they_return(rt: Runtime, governed: Governed) -> None:
    returned: list[str] = []
    problems: list[BaseException] = []
    lock = threading.Lock()

    def caller() -> None:
        try:
            for _ in range(4):
                p = propose(rt, "ana", "git_status", {"repo_path": str(governed.repo)})
                assert p.executed, p.to_dict()
                # when the result is back, the three steps are committed: another connection sees them
                with rt.store.connect() as conn:
                    seen = conn.exec_driver_sql(
                        "SELECT action FROM audit_log WHERE resource = ?"
                        if rt.store.is_sqlite
                        else "SELECT action FROM audit_log WHERE resource = %s",
                        (f"action:{p.id}",),
                    ).all()
                assert sorted(r[0] for r in seen) == ["tools.executed", "tools.executing", "tools.proposed"]
                with lock:
                    returned.append(p.id)
        except BaseException as exc:  # reported below
            problems.append(exc)

    threads = [threading.Thread(target=caller) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not problems, problems[0]
    assert len(set(returned)) == 24
    per_action = Counter(e.resource for e in rt.audit.tail(100_000) if e.resource.startswith("action:"))
    assert all(per_action[f"action:{i}"] == 3 for i in returned)
    assert rt.audit.verify().ok


_SWITCH = """
import sys
from charter.runtime import Runtime
from charter.tools import set_kill_switch
rt = Runtime.open(sys.argv[1])
set_kill_switch(rt, "omar", sys.argv[2] == "on", tool=sys.argv[3] if len(sys.argv) > 3 else None, reason="test")
rt.close()
"""


def flip(charter: Path, state: str, *tool: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    subprocess.run(
        [sys.executable, "-c", _SWITCH, str(charter), state, *tool], check=True, env=env, timeout=120
    )


@pytest.mark.parametrize("tool", [("git_status",), ()], ids=["tool switch", "workflow switch"])
def test_a_kill_switch_from_another_process_stops_the_next_call(
    rt: Runtime, governed: Governed, tool: tuple[str, ...]
) -> None:
    args = {"repo_path": str(governed.repo)}
    for _ in range(3):  # a warm runtime: connection open, pin compared, arguments validated before
        assert propose(rt, "ana", "git_status", args).executed
    before = upstream_calls(rt)
    flip(governed.charter, "on", *tool)
    with pytest.raises(Denied, match="kill switch"):
        propose(rt, "ana", "git_status", args)
    assert upstream_calls(rt) == before  # refused before anything left
    flip(governed.charter, "off", *tool)
    assert propose(rt, "ana", "git_status", args).executed
    assert upstream_calls(rt) == before + 1
