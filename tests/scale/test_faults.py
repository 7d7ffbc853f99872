"""Faults on PostgreSQL with real processes: ``kill -9`` of a server worker in the middle of a tool execution,
of a process in the middle of an audit append, and the database server restarting under load.

After each: nothing is lost or duplicated, ``charter audit verify`` passes, and the service answers again
without being restarted. (``kill -9`` in the middle of ``charter sync`` is
``tests/sources/test_crash.py``, parametrised over SQLite and PostgreSQL.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from tests._pg import PgCluster
from tests.conftest import REPO
from tests.scale._server import (
    NO_WARM_UP,
    add_slow_tool,
    conversations,
    http_client,
    http_get,
    http_post,
    issue_tokens,
    serve,
)
from tests.scale.test_workers import audit_verify, bearer
from tests.tools._helpers import INVOICE_ID

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def wait_for(predicate: Any, what: str, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def log_lines(path: Path) -> list[list[str]]:
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


# ------------------------------------------------------------------------------- kill -9 during a tool
def test_kill_9_of_a_worker_during_a_tool_execution(
    project: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from charter.runtime import Runtime
    from charter.tools import resolve_stuck, stuck_actions

    add_slow_tool(project)
    tokens = issue_tokens(project, pg_url, ("ana", "lena"))
    started, finished = project.parent / "started.log", project.parent / "finished.log"
    with serve(project, pg_url, workers=2, env={**NO_WARM_UP, "SLOW_TOOL_SECONDS": "300"}) as server:
        proposed = http_post(
            f"{server.base}/api/tools/slow_write/calls",
            json={"args": {"label": "x"}},
            headers=bearer(tokens["ana"]),
            timeout=60,
        )
        assert proposed.status_code == 200, proposed.text
        action_id = proposed.json()["id"]
        outcome: dict[str, Any] = {}

        def approve() -> None:
            try:
                outcome["response"] = http_post(
                    f"{server.base}/api/approvals/{action_id}/decision",
                    json={"decision": "approve", "reason": "ok"},
                    headers=bearer(tokens["lena"]),
                    timeout=120,
                )
            except httpx.HTTPError as exc:
                outcome["error"] = exc

        approver = threading.Thread(target=approve)
        approver.start()
        [[key, pid]] = wait_for(lambda: log_lines(started), "the tool to start")
        assert key == action_id
        workers_before = {p.pid for p in server.workers()}
        assert int(pid) in workers_before  # the tool runs inside a server worker
        os.kill(int(pid), signal.SIGKILL)
        approver.join(timeout=60)
        assert "error" in outcome, outcome  # the client saw the connection drop, not an answer

        # uvicorn's supervisor starts a replacement worker; the service answers without a restart
        wait_for(
            lambda: len(server.workers()) == 2 and int(pid) not in {p.pid for p in server.workers()},
            "a replacement worker",
        )
        wait_for(
            lambda: (
                http_get(f"{server.base}/api/me", headers=bearer(tokens["lena"]), timeout=30).status_code
                == 200
            ),
            "the service to answer",
        )
        # not lost: the action is visible as executing; not duplicated: approving again is refused
        shown = http_get(
            f"{server.base}/api/approvals/{action_id}", headers=bearer(tokens["lena"]), timeout=30
        )
        assert shown.status_code == 200 and shown.json()["status"] == "executing", shown.text
        again = http_post(
            f"{server.base}/api/approvals/{action_id}/decision",
            json={"decision": "approve", "reason": "again"},
            headers=bearer(tokens["lena"]),
            timeout=60,
        )
        assert again.status_code == 409, again.text

    rt = Runtime.open(project, database_url=pg_url)
    try:
        assert [a.id for a in stuck_actions(rt)] == [action_id]
        resolved = resolve_stuck(rt, action_id, "omar", "failed", reason="checked: nothing was written")
        assert resolved.status == "failed"
    finally:
        rt.close()
    assert [line[0] for line in log_lines(started)] == [action_id]  # ran once
    assert log_lines(finished) == []
    assert audit_verify(project, pg_url, monkeypatch)["ok"] is True


# ------------------------------------------------------------------------- kill -9 during an audit append
# A process that appends audit entries; before its PAUSE_AT-th INSERT into audit_log (inside the transaction
# that holds the advisory lock) it writes a marker file and sleeps until it is killed. The hook is a
# SQLAlchemy event registered from outside: Charter's code is unchanged.
_APPENDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from charter.runtime import Runtime

    charter, actor, n, pause_at, marker = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
    inserts = 0

    @event.listens_for(Engine, "before_cursor_execute")
    def pause(conn, cursor, statement, params, context, executemany):
        global inserts
        if statement.lstrip().upper().startswith("INSERT INTO AUDIT_LOG"):
            inserts += 1
            if inserts == pause_at:
                marker.write_text("paused")
                time.sleep(3600)

    rt = Runtime.open(charter, record_changes=False)
    for i in range(n):
        rt.audit.append(actor=actor, action="test.append", resource=f"item:{i}", outcome="ok", details={"i": i})
    print("done", flush=True)
""")


def test_kill_9_during_an_audit_append_loses_nothing_committed(
    project: Path, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from charter.runtime import Runtime

    Runtime.open(project, database_url=pg_url).close()  # migrated, charter recorded
    env = {**os.environ, "CHARTER_DATABASE_URL": pg_url, "PYTHONPATH": str(REPO / "src")}
    marker = tmp_path / "paused"

    def appender(actor: str, n: int, pause_at: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", _APPENDER, str(project), actor, str(n), str(pause_at), str(marker)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    victim = appender("victim", 50, 21)  # 20 entries commit, the 21st is in flight when it dies
    wait_for(marker.exists, "the victim to pause inside its append", timeout=180)
    survivor = appender("survivor", 30, 0)  # blocks on the advisory lock the victim's transaction holds
    time.sleep(2.0)
    assert survivor.poll() is None
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    out, err = survivor.communicate(timeout=180)  # the server rolled the victim back and freed the lock
    assert survivor.returncode == 0 and "done" in out, err

    rt = Runtime.open(project, database_url=pg_url)
    try:
        entries = rt.audit.tail(1000, action="test.append")
        by_actor = {a: [e.details["i"] for e in entries if e.actor == a] for a in ("victim", "survivor")}
        assert by_actor["victim"] == list(range(20))  # everything committed is there, the torn one is not
        assert by_actor["survivor"] == list(range(30))
    finally:
        rt.close()
    verified = audit_verify(project, pg_url, monkeypatch)
    assert verified["ok"] is True


# --------------------------------------------------------------------------- the database restarts under load
# More calls than a user's two clients send in the whole test; ~12 ms per conversation to create on PostgreSQL.
# A 503 comes back in a millisecond or two, so a client that retried at once would spend hundreds of
# conversations per second of outage, more the faster the machine (up to 1,000 per user in a 4 s outage were
# measured: the supply ran out). A client waits RETRY_PAUSE after a failed call, as a retrying client does:
# the outage then costs at most 2 / RETRY_PAUSE calls per user and second, whatever the machine's speed.
CONVERSATIONS_PER_USER = 1000
RETRY_PAUSE = 0.05


def test_the_database_restarting_under_load(
    project: Path, pg_url: str, pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In-flight and new requests get 503 while PostgreSQL is down (never a 500, never a torn write); once it
    is back, requests succeed again without restarting the server."""
    from charter.runtime import Runtime
    from charter.store.tables import tool_actions
    from charter.tools import execute, stuck_actions

    tokens = issue_tokens(project, pg_url, ("ana", "ben"))
    # every call in a conversation of its own (a new request, never a retry of an earlier one)
    unused = conversations(project, pg_url, ("ana", "ben"), CONVERSATIONS_PER_USER)
    results: list[tuple[float, int, str]] = []
    lock = threading.Lock()
    stop = threading.Event()
    env = {**NO_WARM_UP, "CHARTER_SERVER_RATE_LIMIT_PER_MINUTE": "0"}
    with serve(project, pg_url, workers=2, env=env) as server:

        def load(user: str) -> None:
            with http_client(timeout=60) as client:
                while not stop.is_set():
                    with lock:
                        if not unused[user]:
                            return  # reported by the wait for recovery below
                        request_id = unused[user].pop()
                    try:
                        r = client.post(
                            f"{server.base}/api/tools/lookup_invoice/calls",
                            json={"args": {"invoice_id": INVOICE_ID}, "request_id": request_id},
                            headers=bearer(tokens[user]),
                        )
                        item = (time.monotonic(), r.status_code, r.text[:300])
                    except httpx.HTTPError as exc:  # a dropped connection would be a failure too
                        item = (time.monotonic(), -1, repr(exc))
                    with lock:
                        results.append(item)
                    if item[1] != 200:
                        time.sleep(RETRY_PAUSE)

        threads = [threading.Thread(target=load, args=(u,)) for u in ("ana", "ben", "ana", "ben")]
        for t in threads:
            t.start()
        wait_for(lambda: sum(1 for r in results if r[1] == 200) >= 20, "load to be flowing")
        down_at = time.monotonic()
        try:
            pg_cluster.stop()
            time.sleep(3.0)
        finally:
            pg_cluster.start()  # the session's server: later tests need it
        up_at = time.monotonic()
        wait_for(
            lambda: sum(1 for r in results if r[0] > up_at and r[1] == 200) >= 20,
            "requests to succeed again after the restart"
            + (
                f" (a user's {CONVERSATIONS_PER_USER} conversations ran out)"
                if not all(unused.values())
                else ""
            ),
        )
        stop.set()
        for t in threads:
            t.join(timeout=120)
        log = server.output()

    codes = {code for _, code, _ in results}
    assert codes <= {200, 503}, sorted({(c, txt) for _, c, txt in results if c not in (200, 503)})[:5]
    failed = [txt for t, code, txt in results if code == 503]
    assert failed, "no request saw the outage"
    assert all("database is unavailable" in txt for txt in failed), failed[:3]
    assert all(t > down_at for t, code, _ in results if code == 503)
    last_failure = max(t for t, code, _ in results if code == 503)
    assert last_failure < up_at + 30  # recovered on its own within seconds
    assert " 500 Internal Server Error" not in log

    ok = sum(1 for _, code, _ in results if code == 200)
    rt = Runtime.open(project, database_url=pg_url)
    try:
        with rt.store.connect() as conn:
            rows = conn.execute(select(tool_actions.c.id, tool_actions.c.status)).all()
        by_status: dict[str, list[str]] = {}
        for action_id, status in rows:
            by_status.setdefault(status, []).append(action_id)
        executed = by_status.get("executed", [])
        # every answered call is one executed action with one audit entry
        assert ok <= len(executed) and len(rt.audit.tail(100_000, action="tools.executed")) == len(executed)
        # a call cut off by the outage is left whole in a state of the action's life, never half-written:
        # stored and approved (runs when executed again) or started (listed as stuck for an operator)
        assert set(by_status) <= {"executed", "approved", "executing"}, by_status
        cut_off = by_status.get("approved", []) + by_status.get("executing", [])
        assert len(executed) + len(cut_off) <= ok + len(failed)
        assert {a.id for a in stuck_actions(rt)} == set(by_status.get("executing", []))
        for action_id in by_status.get("approved", []):
            assert execute(rt, action_id).status == "executed"
    finally:
        rt.close()
    assert audit_verify(project, pg_url, monkeypatch)["ok"] is True
