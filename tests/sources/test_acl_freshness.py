"""Freshness applies to ACLs: a source whose ACLs were not re-read within ``freshness.acl_max_age`` is
excluded from answers (``on_acl_stale: exclude``, the default: fail closed) or flagged; ``--acl-only``
makes it fresh again without touching content. Several workers split the sources (``skip_busy``)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import update

from charter.pipeline import read_request_state, retrieve
from charter.sources import source_statuses, sync_sources
from charter.store import utcnow
from charter.store.tables import source_state
from charter.telemetry.traces import Trace
from tests.sources.conftest import DOCS_SOURCE, Workspace, md


def _age_acls(ws: Workspace, hours: float) -> None:
    with ws.rt.store.begin() as conn:
        conn.execute(
            update(source_state)
            .where(source_state.c.source_id == "docs")
            .values(acl_synced_at=utcnow() - timedelta(hours=hours))
        )


def _retrieve(ws: Workspace) -> tuple[list[str], list[str]]:
    p = ws.rt.charter.principal("ana")
    trace = Trace(workflow="w", principal_id="ana", question="q", charter_fingerprint="f")
    hits, warnings = retrieve(ws.rt, p, "refunds annual plans", trace, read_request_state(ws.rt))
    return [h.doc_id for h in hits], warnings


@pytest.mark.parametrize("policy", ["exclude", "flag"])
def test_stale_acls_fail_closed_until_acl_only_sync(ws: Workspace, policy: str) -> None:
    src = {**DOCS_SOURCE, "freshness": {"max_age": "30d", "acl_max_age": "1h", "on_acl_stale": policy}}
    ws.configure([src])
    ws.write("refunds.md", md("# Refunds\n\nAnnual plans are refunded pro-rata.\n", acl="[group:support]"))
    ws.sync()
    assert _retrieve(ws)[0] == ["refunds.md"]
    _age_acls(ws, 2)
    [row] = source_statuses(ws.rt)
    assert (row["freshness"], row["acl_freshness"]) == ("fresh", "stale")
    hits, warnings = _retrieve(ws)
    if policy == "exclude":
        assert hits == []
    else:
        assert hits == ["refunds.md"] and any("stale ACLs" in w for w in warnings)
    [s] = sync_sources(ws.rt, acl_only=True)
    assert s.status == "succeeded" and s.unchanged == 1
    assert _retrieve(ws) == (["refunds.md"], [])


def test_workers_split_sources_and_never_sync_one_twice_at_once(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, db_url: str
) -> None:
    monkeypatch.setenv("SOURCES_TEST_EMBED_DELAY", "0.3")
    sources = [{**DOCS_SOURCE, "id": f"s{i}"} for i in range(4)]
    ws.configure(sources)
    for i in range(3):
        ws.write(f"d{i}.md", md(f"# Doc {i}\n\nbody {i}\n"))
    from charter.runtime import Runtime

    # two runtimes, as two `charter sync --worker` processes would have (opened here: alembic's check is
    # not thread-safe)
    runtimes = [Runtime.open(ws.charter, database_url=db_url) for _ in range(2)]
    results: list[list[str]] = [[], []]
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        rt = runtimes[n]
        try:
            for s in sync_sources(rt, skip_busy=True, prune=False):
                results[n].append(f"{s.source_id}:{s.status}:{s.added}")
        except BaseException as exc:
            errors.append(exc)
        finally:
            rt.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    done = [r for rs in results for r in rs if ":succeeded:" in r]
    added = sum(int(r.rsplit(":", 1)[1]) for r in done)
    assert added == 4 * 3  # every document of every source indexed exactly once
    assert {r.split(":")[0] for r in done} == {"s0", "s1", "s2", "s3"}
    assert all(":failed" not in r for rs in results for r in rs)
