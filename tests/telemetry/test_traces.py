"""Traces: what is stored, that it is masked, listing with permissions, feedback linked to the request."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from _monitoring_helpers import PLANTED, needles, pii_trace

from charter.errors import NotFound, UsageError
from charter.runtime import Runtime
from charter.telemetry import FEEDBACK_REASONS, Trace, record_feedback, trace_store_for


@pytest.fixture
def rt(project: Path) -> Iterator[Runtime]:
    runtime = Runtime.open(project)
    yield runtime
    runtime.close()


def test_trace_holds_everything_masked(rt: Runtime) -> None:
    store = trace_store_for(rt)
    t = pii_trace(rt.spec.workflow.id, "ana")
    t.index_version, t.charter_fingerprint = "idx-1", rt.fingerprint
    store.write(t)
    doc = store.get(t.request_id)
    text = repr(doc)
    assert not [n for n in needles() if n in text]
    # structure the issue asks for
    assert doc["retrieved"][0]["doc_id"] == "refunds.md" and doc["retrieved"][0]["rank"] == 1
    assert doc["citations"][0]["chunk_id"] == "help-center:refunds.md#0"
    assert doc["tool_calls"][0]["tool"] == "lookup_invoice" and doc["tool_calls"][0]["decision"] == "allowed"
    assert doc["errors"][0]["type"] == "ProviderError" and doc["errors"][0]["stage"] == "generate"
    assert {s["stage"] for s in doc["spans"]} == {"admit", "retrieve"}
    assert doc["model"] == "extractive" and doc["prompt_version"] == "v1" and doc["index_version"] == "idx-1"
    assert doc["charter_fingerprint"] == rt.fingerprint
    assert (
        doc["input_tokens"] == 120
        and doc["cost_usd"] == pytest.approx(0.0012)
        and doc["cost_source"] == "estimated"
    )
    assert doc["principal_id"].startswith("h:")  # pseudonymous under the example's policy
    assert doc["feedback"] == [] and doc["reviews"] == []
    # deterministic within the trace: the same e-mail in question and answer has one placeholder
    q_email = next(w for w in doc["question"].split() if w.startswith("<EMAIL_"))
    assert q_email in doc["answer"]


def test_feedback_is_linked_masked_and_checked(rt: Runtime) -> None:
    store = trace_store_for(rt)
    t = Trace(workflow=rt.spec.workflow.id, principal_id="ana", question="q", status="answered")
    store.write(t)
    ana, ben, omar = (rt.charter.principal(u) for u in ("ana", "ben", "omar"))
    record_feedback(
        rt,
        t.request_id,
        ana,
        rating="down",
        reasons=["inaccurate", "outdated"],
        comment=f"wrong! call me on {PLANTED['phone_intl']} or {PLANTED['email']}",
    )
    record_feedback(rt, t.request_id, omar, rating="up")  # operators may read (and rate) every trace
    with pytest.raises(NotFound):
        record_feedback(rt, t.request_id, ben, rating="up")  # not ben's request: looks like a missing one
    with pytest.raises(NotFound):
        record_feedback(rt, "req_missing", ana, rating="up")
    with pytest.raises(UsageError):
        record_feedback(rt, t.request_id, ana, rating="sideways")
    with pytest.raises(UsageError):
        record_feedback(rt, t.request_id, ana, rating="up", reasons=["not-a-reason"])
    fb = store.get(t.request_id)["feedback"]
    assert [f["rating"] for f in fb] == [-1, 1]
    assert fb[0]["reasons"] == ["inaccurate", "outdated"]
    assert "<PHONE_" in fb[0]["comment"] and PLANTED["phone_intl"] not in fb[0]["comment"]
    assert set(FEEDBACK_REASONS) >= {"inaccurate", "wrong_source"}


def test_traces_list_cli(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    rt = Runtime.open(project)
    store = trace_store_for(rt)
    for user, status in [("ana", "answered"), ("ana", "needs_human"), ("ben", "answered"), ("ben", "error")]:
        store.write(Trace(workflow=rt.spec.workflow.id, principal_id=user, question="q", status=status))
    rt.close()
    mine = cli("traces", "list", "--as", "ana", "--charter", str(project), "--json")
    assert mine.exit_code == 0, mine.stderr
    assert len(mine.json()) == 2
    assert all(r["principal_id"].startswith("h:") for r in mine.json())
    everyone = cli("traces", "list", "--as", "omar", "--charter", str(project), "--json")
    assert len(everyone.json()) == 4
    only_ben = cli(
        "traces",
        "list",
        "--as",
        "omar",
        "--user",
        "ben",
        "--status",
        "error",
        "--charter",
        str(project),
        "--json",
    )
    assert [r["status"] for r in only_ben.json()] == ["error"]
    denied = cli("traces", "list", "--as", "ana", "--user", "ben", "--charter", str(project), "--json")
    assert denied.exit_code != 0
    bad = cli("traces", "list", "--as", "ana", "--since", "soon", "--charter", str(project))
    assert bad.exit_code == 2
    human = cli("traces", "list", "--as", "omar", "--charter", str(project))
    assert human.exit_code == 0 and "4 traces" in human.stdout


def test_feedback_cli(project: Path, cli) -> None:  # type: ignore[no-untyped-def]
    rt = Runtime.open(project)
    t = Trace(workflow=rt.spec.workflow.id, principal_id="ana", question="q", status="answered")
    trace_store_for(rt).write(t)
    rt.close()
    r = cli(
        "feedback",
        t.request_id,
        "down",
        "--reason",
        "wrong_source",
        "--comment",
        f"see {PLANTED['iban']}",
        "--as",
        "ana",
        "--charter",
        str(project),
        "--json",
    )
    assert r.exit_code == 0, r.stderr + r.stdout
    shown = cli("traces", "show", t.request_id, "--as", "ana", "--charter", str(project), "--json")
    assert shown.exit_code == 0, shown.stderr
    fb = shown.json()["feedback"]
    assert fb[0]["reasons"] == ["wrong_source"] and PLANTED["iban"] not in fb[0]["comment"]
    assert shown.json()["principal_id"].startswith("h:")
    other = cli("traces", "show", t.request_id, "--as", "ben", "--charter", str(project), "--json")
    assert other.exit_code != 0  # not ben's request: reported as missing
    old_name = cli("trace", "show", t.request_id, "--as", "ana", "--charter", str(project), "--json")
    assert old_name.exit_code == 0 and old_name.json() == shown.json()  # the hidden alias of earlier scripts


def test_server_writes_are_read_your_writes_and_durable(rt: Runtime) -> None:
    from charter.telemetry import start_server_telemetry

    scheduler = start_server_telemetry(rt)
    try:
        store = trace_store_for(rt)
        ids = []
        for i in range(30):
            t = pii_trace(rt.spec.workflow.id, "ana" if i % 2 else "ben")
            store.write(t)
            ids.append(t.request_id)
        assert {r["request_id"] for r in store.list(limit=100)} == set(ids)  # reads flush the queue first
        store.write(Trace(workflow=rt.spec.workflow.id, principal_id="ana", question="last"))
        store.flush()
        other = Runtime.open(rt.charter.base_dir / "charter.yaml")
        try:
            assert len(trace_store_for(other).list(limit=100)) == 31  # committed for other processes too
        finally:
            other.close()
        deadline = time.monotonic() + 10
        while scheduler.last is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert scheduler.last is not None and scheduler.last.traces == 0  # nothing old enough to delete
    finally:
        scheduler.stop()


def test_group_commit_returns_only_after_the_commit_and_notifies_sinks_after_it(rt: Runtime) -> None:
    """With group commit, write() returns the masked document only once the row is committed (another
    connection sees it at once), sinks see each masked document after its commit, and a trace that cannot
    be prepared raises instead of being silently dropped — without losing the others."""
    store = trace_store_for(rt)
    store.enable_group_commit()
    seen: list[tuple[str, bool]] = []

    def stored(request_id: str) -> bool:
        from sqlalchemy import text

        with rt.store.connect() as conn:
            n = conn.execute(text("SELECT count(*) FROM traces WHERE request_id = :r"), {"r": request_id})
            return bool(n.scalar())

    def sink(doc: dict) -> None:  # type: ignore[type-arg]
        seen.append((str(doc), stored(doc["request_id"])))

    store.sinks.append(sink)
    good = [pii_trace(rt.spec.workflow.id, "ana") for _ in range(5)]
    broken = pii_trace(rt.spec.workflow.id, "ana")
    original = store.protect_document

    def protect(trace: Trace) -> dict:  # type: ignore[type-arg]
        if trace.request_id == broken.request_id:
            raise RuntimeError("masker crashed")
        return original(trace)

    store.protect_document = protect  # type: ignore[method-assign]
    for t in [*good[:2], broken, *good[2:]]:
        if t is broken:
            with pytest.raises(RuntimeError):
                store.write(t)
            continue
        doc = store.write(t)
        assert doc is not None and doc["request_id"] == t.request_id
        assert stored(t.request_id)  # committed before write() returned
    ids = {r["request_id"] for r in store.list(limit=100)}
    assert ids == {t.request_id for t in good}
    assert len(seen) == 5 and all(committed for _, committed in seen)
    for doc, _ in seen:
        assert not any(v in doc for v in needles())


def test_group_commit_under_concurrency_every_write_is_durable_when_it_returns(rt: Runtime) -> None:
    """40 threads write at once: each write() returns after its own trace is visible to a fresh
    connection, and the traces share commits (fewer transactions than traces)."""
    import threading

    from sqlalchemy import text

    store = trace_store_for(rt)
    store.enable_group_commit()
    commits = 0
    inner = store._insert

    def counting(batch):  # type: ignore[no-untyped-def]
        nonlocal commits
        commits += 1
        if commits == 1:  # a slow first commit: the writers that arrive meanwhile must share the next one
            time.sleep(0.3)  # (without it, a loaded machine may run the 40 writes one after another)
        inner(batch)

    store._insert = counting  # type: ignore[method-assign]
    store._writer._insert = counting  # type: ignore[union-attr]
    missing: list[str] = []
    start = threading.Barrier(40)

    def one() -> None:
        t = Trace(workflow=rt.spec.workflow.id, principal_id="ana", question="q")
        start.wait()
        store.write(t)
        with rt.store.connect() as conn:
            if not conn.execute(
                text("SELECT count(*) FROM traces WHERE request_id = :r"), {"r": t.request_id}
            ).scalar():
                missing.append(t.request_id)

    threads = [threading.Thread(target=one) for _ in range(40)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert missing == []
    assert 1 <= commits < 40


def test_exported_names() -> None:
    import charter.telemetry as telemetry

    assert sorted(telemetry.__all__) == sorted(
        [
            "CHANNELS",
            "FEEDBACK_REASONS",
            "REDACTED",
            "SEMCONV_VERSION",
            "Masker",
            "NullMasker",
            "PatternMasker",
            "PresidioMasker",
            "RetentionResult",
            "RetentionScheduler",
            "SpanRecord",
            "Trace",
            "TraceExporter",
            "TraceStore",
            "apply_retention",
            "build_report",
            "current_channel",
            "error_signature",
            "mask_text",
            "mask_value",
            "masker_for",
            "masking_salt",
            "metrics_for",
            "protect",
            "record_feedback",
            "recording_channel",
            "render_report",
            "review_decisions",
            "start_server_telemetry",
            "trace_store_for",
            "wilson_interval",
            # alerts, trend charts and failure clusters, for the console, the CLI and the gate
            "RuntimeMetrics",
            "TREND_CHARTS",
            "alerts_once",
            "cases_from_cluster",
            "comparison_text",
            "find_cluster",
            "firing_alerts",
            "trend_charts",
            # the drift/alert notifier, and who may open which trace (charter.access's rules on the trace store)
            "notify",
            "trace_list_filter",
            "visible_trace",
        ]
    )
    for name in telemetry.__all__:
        assert getattr(telemetry, name) is not None
