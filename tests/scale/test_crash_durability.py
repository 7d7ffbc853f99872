"""SIGKILL under load loses no record of an answer that was given (issue #24).

Concurrent clients ask questions of a real ``charter serve`` (2 workers on PostgreSQL, 1 on SQLite); the
server and its workers are killed with SIGKILL mid-load, then started again. Every request whose client
received an answer (200 with a request id) must have, after the restart: its trace (exactly one row), its
budget reservation settled (never left ``reserved``), its review item and ``review.submitted`` audit entry
when the answer named one, and one ``auth.token_used`` entry per answered request at least; the audit chain
verifies; nothing is recorded twice.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from tests.scale._server import http_client, http_post, issue_tokens, serve
from tests.scale.test_workers import audit_verify, bearer
from tests.server.test_trace_durability import approve_prompts

pytestmark = [pytest.mark.slow]

QUESTIONS = [
    "How long does a refund take to show up on my card?",
    "Why was I charged twice this month?",
    "Can I change my plan in the middle of a billing cycle?",
]


def _kill_all(server: Any) -> None:
    """SIGKILL the workers and the supervisor this test started (by pid)."""
    for p in server.workers():
        os.kill(p.pid, signal.SIGKILL)
    os.kill(server.proc.pid, signal.SIGKILL)
    server.proc.wait(timeout=30)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_sigkill_mid_load_keeps_every_answered_request(
    project: Path, backend: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    from charter.runtime import Runtime
    from charter.store.tables import audit_log, budget_reservations, traces

    if backend == "postgres":
        url, workers = str(request.getfixturevalue("pg_url")), 2
    else:
        url, workers = f"sqlite:///{project.parent / 'crash.db'}", 1
    users = ("ana", "ben", "farid")
    approve_prompts(project, url)
    tokens = issue_tokens(project, url, users)
    answered: list[dict[str, Any]] = []
    lock = threading.Lock()
    stop = threading.Event()
    env = {"CHARTER_SERVER_RATE_LIMIT_PER_MINUTE": "0"}
    with serve(project, url, workers=workers, env=env, ready_timeout=540) as server:

        def load(user: str, k: int) -> None:
            with http_client(timeout=60) as client:
                i = k
                while not stop.is_set():
                    i += 1
                    try:
                        r = client.post(
                            f"{server.base}/api/ask",
                            json={"question": QUESTIONS[i % len(QUESTIONS)]},
                            headers=bearer(tokens[user]),
                        )
                    except httpx.HTTPError:
                        continue  # the server is gone: this client got no answer
                    if r.status_code == 200:
                        with lock:
                            answered.append({"user": user, **r.json()})

        threads = [threading.Thread(target=load, args=(users[k % 3], k)) for k in range(8)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 240
        while len(answered) < 40 and time.monotonic() < deadline:
            time.sleep(0.05)
        _kill_all(server)  # mid-load: requests are in flight in every worker
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert len(answered) >= 40, f"only {len(answered)} answers before the deadline"
    with serve(
        project, url, workers=workers, env=env, ready_timeout=540
    ) as server:  # restarts on the same database
        r = http_post(
            f"{server.base}/api/ask",
            json={"question": QUESTIONS[0]},
            headers=bearer(tokens["ana"]),
            timeout=60,
        )
        assert r.status_code == 200, r.text

    rt = Runtime.open(project, database_url=url)
    try:
        ids = [a["request_id"] for a in answered]
        assert len(set(ids)) == len(ids)
        with rt.store.connect() as conn:
            stored = dict(
                conn.execute(
                    select(traces.c.request_id, func.count())
                    .where(traces.c.request_id.in_(ids))
                    .group_by(traces.c.request_id)
                ).all()
            )
            reservations = conn.execute(
                select(budget_reservations.c.request_id, budget_reservations.c.status).where(
                    budget_reservations.c.request_id.in_(ids)
                )
            ).all()
            token_uses = conn.execute(
                select(func.count()).select_from(audit_log).where(audit_log.c.action == "auth.token_used")
            ).scalar_one()
            reviews = [a["review_id"] for a in answered if a.get("review_id")]
            submitted = dict(
                conn.execute(
                    select(audit_log.c.resource, func.count())
                    .where(audit_log.c.resource.in_([f"review:{r}" for r in reviews]))
                    .where(audit_log.c.action == "review.submitted")
                    .group_by(audit_log.c.resource)
                ).all()
            )
        missing = [i for i in ids if i not in stored]
        assert missing == [], f"{len(missing)} of {len(ids)} answered requests have no trace"
        assert set(stored.values()) == {1}  # nothing recorded twice
        assert all(status != "reserved" for _, status in reservations), reservations
        assert token_uses >= len(ids)
        assert {f"review:{r}" for r in reviews} == set(submitted) and set(submitted.values()) <= {1}
    finally:
        rt.close()
    verified = audit_verify(project, url, monkeypatch)
    assert verified["ok"] is True, verified
