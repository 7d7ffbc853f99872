"""kill -9 in the middle of ``charter sync``, re-run it, and the index equals a clean sync.

Runs on SQLite and on PostgreSQL (``db_url``, ``tests/_pg.py``); the killed ``charter sync`` process inherits
``CHARTER_DATABASE_URL``."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import select

from charter.retrieval import Index
from charter.store import utcnow
from charter.store.tables import sync_runs
from tests.conftest import REPO
from tests.sources.conftest import DOCS_SOURCE, Workspace, md

pytestmark = pytest.mark.slow

N_DOCS = 150


def paragraph(i: int, version: str) -> str:
    return (
        f"Document {i} ({version}) explains billing rule number {i}: invoices, refunds and credits "
        f"for plan tier {i % 7}. " * 6
    )


def write_version(ws: Workspace, version: str) -> None:
    """Version "a": N_DOCS documents. Version "b": a third changed, ACLs changed, some deleted, some new."""
    for p in ws.docs.glob("*.md"):
        p.unlink()
    for i in range(N_DOCS):
        if version == "b" and i % 10 == 9:
            continue  # deleted
        acl = "[group:support]" if i % 2 else "[public]"
        if version == "b" and i % 5 == 1:
            acl = "[group:finance]"  # ACL-only change
        if version == "b" and i % 17 == 3:
            acl = "[nonsense]"  # broken: private by default
        content_version = "b" if version == "b" and i % 3 == 0 else "a"
        body = (
            f"# Rule {i}\n\n{paragraph(i, content_version)}\n\n"
            f"## Details\n\n{paragraph(i + 1000, content_version)}\n"
        )
        ws.write(f"rule-{i:04}.md", md(body, acl=acl))
    if version == "b":
        for j in range(20):
            ws.write(f"new-{j:03}.md", md(f"# New {j}\n\n{paragraph(5000 + j, 'b')}\n", acl="[user:ana]"))


def state_of(ws: Workspace) -> dict[str, tuple[str, str, bool, int]]:
    states = Index.for_runtime(ws.rt).document_states("docs")
    return {k: (v.content_hash, v.acl_hash, v.private_by_default, v.chunk_count) for k, v in states.items()}


def test_sigkill_mid_sync_then_rerun_equals_a_clean_sync(
    project: Path,
    tmp_path: Path,
    db_url: str,
    backend: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHARTER_DATABASE_URL", db_url)
    ws = Workspace(project)
    ws.configure([DOCS_SOURCE])
    write_version(ws, "a")
    assert ws.sync()["docs"].added == N_DOCS
    ws.close()

    write_version(ws, "b")
    started = utcnow()
    # this checkout's code first (``src``), whichever checkout the virtualenv has installed
    pythonpath = os.pathsep.join([str(REPO / "src"), str(REPO)])
    env = {**os.environ, "SOURCES_TEST_EMBED_DELAY": "0.05", "PYTHONPATH": pythonpath, "HF_HUB_OFFLINE": "1"}
    code = "import tests.sources._embedder; from charter.cli import main; main(['sync', '--no-progress'])"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=ws.base, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        index = Index(ws.rt.store)
        written = 0
        while time.monotonic() < deadline and proc.poll() is None:
            written = sum(1 for s in index.document_states("docs").values() if s.synced_at > started)
            if written >= 10:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"sync finished before it could be killed: {proc.stderr.read()!r}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    with ws.rt.store.connect() as conn:
        assert conn.execute(select(sync_runs.c.status).order_by(sync_runs.c.id.desc())).scalar() == "running"
    # the index is a mix of old and new versions, each document whole
    mixed = state_of(ws)
    assert 10 <= written < 100

    rerun = ws.sync()["docs"]
    assert rerun.status == "succeeded"
    assert rerun.deleted == N_DOCS // 10  # deletions only happen after a complete listing
    recovered = state_of(ws)
    with ws.rt.store.connect() as conn:
        statuses = [r.status for r in conn.execute(select(sync_runs.c.status).order_by(sync_runs.c.id))]
    assert statuses == ["succeeded", "interrupted", "succeeded"]
    assert mixed != recovered

    clean_project = tmp_path / "clean"
    if backend == "sqlite":  # the clean copy gets a database of its own
        monkeypatch.delenv("CHARTER_DATABASE_URL")
    else:
        monkeypatch.setenv("CHARTER_DATABASE_URL", request.getfixturevalue("pg_cluster").create_database())
    shutil.copytree(ws.base, clean_project, ignore=shutil.ignore_patterns(".charter"))
    clean = Workspace(clean_project / "charter.yaml")
    try:
        clean_summary = clean.sync()["docs"]
        assert clean_summary.added == len(recovered)
        assert state_of(clean) == recovered
        assert Index.for_runtime(clean.rt).counts() == Index.for_runtime(ws.rt).counts()
        for user in ("ana", "farid", "casey", "omar"):
            tokens = ws.rt.charter.principal(user).acl_tokens
            q = "billing rule invoices refunds credits plan tier 3"
            got = [(h.doc_id, h.position) for h in Index.for_runtime(ws.rt).search(tokens, q, k=10)]
            want = [(h.doc_id, h.position) for h in Index.for_runtime(clean.rt).search(tokens, q, k=10)]
            assert got == want, user
        # and a further sync of the recovered index is a no-op
        again = ws.sync()["docs"]
        assert again.counts()["unchanged"] == len(recovered) and again.added == again.updated == 0
    finally:
        clean.close()
        ws.close()
