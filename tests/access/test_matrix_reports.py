"""The permission matrix, continued: the views that aggregate stored content for someone other than its
asker — the operator report (source blame), eval reports — and the OpenAI endpoint's fresh answers.

For every front end (CLI, REST, console; the OpenAI endpoint for answers) × every demo principal × a document
at each access level of the billing example: a document's id (reports) or canary (eval reports, answers) is
shown if and only if the principal may read that document; the rest collapses into a ``[redacted: …]``
marker, and the report's aggregates still count every request. Expectations come from the independent oracle
in :mod:`tests.access._world` (plain YAML of the example), never from ``charter.access``. SQLite and
PostgreSQL (``db_url``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.access._world import LEVELS, Oracle, canary, citation, index_documents, plant, texts
from tests.conftest import run_cli
from tests.server.conftest import DEMO_USERS, Served, _build, console_client

pytestmark = pytest.mark.slow  # every front end end to end on the synced example

SUBMITTER = "ben"
ALL_LEVELS = list(LEVELS)
USERS = [u for u in DEMO_USERS if u != "guest"]
#: the failure category each planted eval case fails with (at most three per category are examples)
FAILURES = (
    "permission_leak",
    "forbidden_content",
    "wrong_refusal",
    "retrieval_miss",
    "ungrounded",
    "missing_fact",
)


@pytest.fixture
def world(project: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The example on ``db_url``: the five level documents indexed with their real ACLs; one trace and draft
    per level plus one citing every level (all by ben), each rated thumbs-down (so each document is in the
    report's source blame); one stored eval run whose six failing cases cite the same documents."""
    from charter.telemetry import record_feedback

    monkeypatch.setenv("CHARTER_DATABASE_URL", db_url)
    served = _build(project)
    rt: Any = served.rt
    oracle = Oracle.load(project)
    index_documents(rt, {(s, d): oracle.acl(s, d) for s, d in LEVELS.items()})
    items = {s: plant(rt, SUBMITTER, [s]) for s in ALL_LEVELS}
    items["all"] = plant(rt, SUBMITTER, ALL_LEVELS)
    ben = rt.charter.principal(SUBMITTER)
    for request_id, _ in items.values():
        record_feedback(rt, request_id, ben, rating=-1, reasons=["wrong_source"])
    run_id = _plant_eval_run(rt, items)
    yield {"served": served, "oracle": oracle, "items": items, "charter": project, "run": run_id}
    rt.close()


def _plant_eval_run(rt: Any, items: dict[str, tuple[str, str]]) -> str:
    """A stored eval run (as ``charter eval`` saves one) with one failing case per planted item: its answer,
    notes, citations, retrieved chunks, expected sources and failure detail name the item's documents and
    carry their canaries."""
    from charter.evals import EvalCase, EvalRun
    from charter.evals._runner import CaseResult
    from charter.evals._scorers import CaseOutput, CaseScore
    from charter.evals._store import save_run
    from charter.store import utcnow

    results = []
    for (key, (request_id, _)), failure in zip(items.items(), FAILURES, strict=True):
        sources = _sources(key)
        cites = [citation(i, s) for i, s in enumerate(sources, 1)]
        draft, notes = texts(sources)
        case = EvalCase(
            id=f"case-{key}",
            category="permission",
            user=SUBMITTER,
            question="What applies to this refund?",
            expected_sources={f"{s}/{LEVELS[s]}": 1 for s in sources},
        )
        output = CaseOutput(
            case=case,
            repeat=0,
            status="answered",
            result={"draft": draft, "agent_notes": notes, "citations": cites, "status": "answered"},
            request_id=request_id,
            retrieved=[
                {"chunk_id": c["chunk_id"], "source": c["source_id"], "doc_id": c["doc_id"], "rank": i}
                for i, c in enumerate(cites, 1)
            ],
        )
        detail = "contains: " + ", ".join(f"{canary(s)} of {s}/{LEVELS[s]}" for s in sources)
        results.append(CaseResult(output, CaseScore({}, [(failure, detail)]), failure, [(failure, detail)]))
    run = EvalRun(
        id="eval_accessmatrix",
        workflow=rt.spec.workflow.id,
        created_at=utcnow(),
        charter_fingerprint=rt.fingerprint,
        model="scripted",
        prompt_version=None,
        index_version=None,
        sets=["planted"],
        repeat=1,
        results=results,
        metrics={},
        thresholds=[],
        duration_s=0.1,
    )
    return str(save_run(rt, run))


def _sources(key: str) -> list[str]:
    return ALL_LEVELS if key == "all" else [key]


def _canaries_in(text: str) -> set[str]:
    return {s for s in ALL_LEVELS if canary(s) in text}


def _docs_in(text: str) -> set[str]:
    return {s for s in ALL_LEVELS if LEVELS[s] in text}


# ------------------------------------------------------------------------------------------------ report
def test_report_names_a_document_iff_the_reader_may_read_it(world: dict[str, Any]) -> None:
    """``charter report`` (JSON and Markdown), ``GET /api/reports`` and the console's Monitor page: a
    document's id in the source blame only for readers who may read it; the other rows are one redacted
    row whose counts still add up; a source's id only if every cited document of it is readable."""
    from fastapi.testclient import TestClient

    served: Served = world["served"]
    oracle: Oracle = world["oracle"]
    charter = str(world["charter"])
    api = TestClient(served.app, raise_server_exceptions=False)  # type: ignore[arg-type]
    failures: list[str] = []
    readers = [u for u in USERS if "reports.read" in oracle.permissions(u)]
    assert readers, "the example has report readers"

    def check_doc(front: str, user: str, doc: dict[str, Any]) -> None:
        want = {s for s in ALL_LEVELS if oracle.may_read(user, s)}
        blame = doc["source_blame"]
        body = json.dumps(doc)
        if _docs_in(body) != want:
            failures.append(f"{front} as {user}: names {sorted(_docs_in(body))}, expected {sorted(want)}")
        shown_sources = {d["source_id"] for d in blame["sources"] if not d.get("redacted")}
        if shown_sources != want:
            failures.append(
                f"{front} as {user}: source rows {sorted(shown_sources)}, expected {sorted(want)}"
            )
        hidden = set(ALL_LEVELS) - want
        redacted = [d for d in blame["documents"] if d.get("redacted")]
        if hidden and not (redacted and redacted[0]["documents"] == len(hidden)):
            failures.append(f"{front} as {user}: no redacted row for {len(hidden)} documents: {redacted}")
        if redacted and not re.fullmatch(
            r"\[redacted: \d+ documents? from sources you cannot read\]", redacted[0]["source_id"]
        ):
            failures.append(f"{front} as {user}: marker {redacted[0]['source_id']!r}")
        # the aggregates count every request, whoever reads: 6 rated requests, each citing its documents
        if blame["rated_requests_with_citations"] != len(world["items"]):
            failures.append(f"{front} as {user}: rated requests {blame['rated_requests_with_citations']}")
        per_doc = {d.get("doc_id"): d["cited_in_rated"] for d in blame["documents"] if not d.get("redacted")}
        if any(n != 2 for n in per_doc.values()):  # its own item and the one citing every level
            failures.append(f"{front} as {user}: per-document counts {per_doc}")
        if redacted and redacted[0]["cited_in_rated"] != (1 + len(hidden)):  # distinct requests behind it
            failures.append(f"{front} as {user}: redacted row counts {redacted[0]['cited_in_rated']}")

    for user in USERS:
        r = api.get("/api/reports", headers=served.headers(user))
        if user not in readers:
            if r.status_code != 403 or _docs_in(r.text):
                failures.append(f"REST /api/reports as {user}: {r.status_code}")
        else:
            check_doc("REST /api/reports", user, r.json())
        out = run_cli("report", "--as", user, "--format", "json", "--charter", charter)
        if user not in readers:
            if out.exit_code == 0 or _docs_in(out.stdout):
                failures.append(f"CLI report as {user}: exit {out.exit_code}")
            continue
        check_doc("CLI report --format json", user, json.loads(out.stdout))
        md = run_cli("report", "--as", user, "--format", "md", "--charter", charter).stdout
        want = {s for s in ALL_LEVELS if oracle.may_read(user, s)}
        if _docs_in(md) != want or (want != set(ALL_LEVELS) and "[redacted: " not in md):
            failures.append(f"CLI report --format md as {user}: names {sorted(_docs_in(md))}")
        console = console_client(served.app, served.tokens[user])
        page = console.get("/monitor")  # type: ignore[attr-defined]
        card = page.text.split('id="b-h"', 1)[-1].split("</section>", 1)[0]  # "Which source caused…"
        shown = set(re.findall(r'<span class="bar-label">([^<]*)</span>', card))
        if page.status_code != 200 or (shown & set(ALL_LEVELS)) != want:
            failures.append(f"console /monitor as {user}: {page.status_code}, shows {sorted(shown)}")
        if want != set(ALL_LEVELS) and not any(s.startswith("[redacted: ") for s in shown):
            failures.append(f"console /monitor as {user}: no redacted row in {sorted(shown)}")
        if _docs_in(page.text) - want:
            failures.append(f"console /monitor as {user}: names {sorted(_docs_in(page.text) - want)}")
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------------------------------------------ eval reports
def test_eval_reports_show_a_canary_iff_the_reader_may_read_its_document(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """A stored run's report — ``charter evals show RUN --as U --report DIR`` (Markdown, JSON, HTML files),
    ``GET /api/evals/RUN/report/{fmt}`` and the console's ``/evals/RUN`` page and downloads — shows each
    case's answer, notes, retrieved and expected documents and failure details as the reader may read them."""
    from fastapi.testclient import TestClient

    served: Served = world["served"]
    oracle: Oracle = world["oracle"]
    run_id: str = world["run"]
    charter = str(world["charter"])
    api = TestClient(served.app, raise_server_exceptions=False)  # type: ignore[arg-type]
    failures: list[str] = []
    readers = [u for u in USERS if oracle.permissions(u) & {"evals.run", "reports.read"}]
    assert len(readers) >= 3

    def check(front: str, user: str, body: str) -> None:
        want = {s for s in ALL_LEVELS if oracle.may_read(user, s)}
        got = _canaries_in(body)
        if got != want:
            failures.append(f"{front} as {user}: shows {sorted(got)}, expected {sorted(want)}")
        if want != set(ALL_LEVELS) and "[redacted: " not in body:
            failures.append(f"{front} as {user}: no redaction marker")
        if _docs_in(body) - want:
            failures.append(f"{front} as {user}: names documents {sorted(_docs_in(body) - want)}")
        if f"case-{ALL_LEVELS[0]}" not in body:
            failures.append(f"{front} as {user}: the report lost its cases")

    for user in USERS:
        for fmt in ("json", "md", "html"):
            r = api.get(f"/api/evals/{run_id}/report/{fmt}", headers=served.headers(user))
            if user not in readers:
                if r.status_code != 403 or _canaries_in(r.text):
                    failures.append(f"REST eval report {fmt} as {user}: {r.status_code}")
            elif r.status_code != 200:
                failures.append(f"REST eval report {fmt} as {user}: {r.status_code}")
            else:
                check(f"REST eval report {fmt}", user, r.text)
        folder = tmp_path / user
        out = run_cli(
            "evals", "show", run_id, "--as", user, "--report", str(folder), "--json", "--charter", charter
        )
        if user not in readers:
            if out.exit_code == 0 or folder.exists():
                failures.append(f"CLI evals show --report as {user}: exit {out.exit_code}")
            continue
        assert out.exit_code == 0, out.stderr
        for name in ("markdown", "json", "html"):
            text = Path(out.json()["reports"][name]).read_text(encoding="utf-8")  # type: ignore[index]
            check(f"CLI evals show --report ({name})", user, text)
        console = console_client(served.app, served.tokens[user])
        page = console.get(f"/evals/{run_id}")  # type: ignore[attr-defined]
        if page.status_code != 200:
            failures.append(f"console /evals/{run_id} as {user}: {page.status_code}")
        else:
            check(f"console /evals/{run_id}", user, page.text)
        download = console.get(f"/evals/{run_id}/report/md")  # type: ignore[attr-defined]
        check("console eval report download", user, download.text)
    for user in set(USERS) - set(readers):  # no eval role: the page is refused, never a canary
        page = console_client(served.app, served.tokens[user]).get(f"/evals/{run_id}")  # type: ignore[attr-defined]
        if page.status_code == 200 or _canaries_in(page.text):
            failures.append(f"console /evals/{run_id} as {user}: {page.status_code}")
    # the local operator (no --as) reads the database anyway: the unredacted report, every canary
    out = run_cli(
        "evals", "show", run_id, "--report", str(tmp_path / "operator"), "--json", "--charter", charter
    )
    text = Path(out.json()["reports"]["markdown"]).read_text(encoding="utf-8")  # type: ignore[index]
    if _canaries_in(text) != set(ALL_LEVELS):
        failures.append(f"CLI evals show without --as: {sorted(_canaries_in(text))}")
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------------------------------------------ answers
#: A word per level: the question about it retrieves that level's canary sentence and nothing else.
WORDS = {
    "help-center": "marmalade",
    "playbook": "tangerine",
    "finance-policies": "juniper",
    "pricing-committee": "saffron",
    "ops-notes": "lavender",
}


@pytest.fixture
def answering(project: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The example on ``db_url`` with each level's document (only that one per source) carrying a canary
    sentence about its own word, synced by the real connector and embedder; the app with a token per user."""
    import yaml

    from charter.models import PromptRegistry
    from charter.runtime import Runtime
    from charter.sources import sync_sources

    monkeypatch.setenv("CHARTER_DATABASE_URL", db_url)
    spec = yaml.safe_load(project.read_text(encoding="utf-8"))
    for source in spec["sources"]:
        keep = LEVELS[source["id"]]
        folder = project.parent / source["location"]
        for doc in folder.iterdir():
            if doc.name != keep and doc.is_file():
                doc.unlink()
        word = WORDS[source["id"]]
        with (folder / keep).open("a", encoding="utf-8") as f:
            f.write(f"\n\n## The {word} refund code\n\nThe {word} refund code is {canary(source['id'])}.\n")
    rt = Runtime.open(project)
    try:
        sync_sources(rt)
        registry = PromptRegistry(rt.charter, rt.store, audit=lambda **e: rt.audit.append(**e))
        for prompt in rt.spec.prompts:
            registry.approve(prompt.name, prompt.active, principal=rt.charter.principal("lena"))
    finally:
        rt.close()
    served = _build(project)
    yield {"served": served, "oracle": Oracle.load(project), "spec": spec}
    served.rt.close()  # type: ignore[attr-defined]


def test_openai_answers_carry_a_canary_iff_the_asker_may_read_its_document(answering: dict[str, Any]) -> None:
    """``POST /v1/chat/completions``: the answer (message, sources, agent notes) asked about a level carries
    its canary if and only if the asker may read its document (and its source may be quoted in prompts at
    all: ``allowed_in_prompts``); no answer ever carries a canary of a document the asker may not read."""
    from fastapi.testclient import TestClient

    served: Served = answering["served"]
    oracle: Oracle = answering["oracle"]
    quotable = {s["id"] for s in answering["spec"]["sources"] if s.get("allowed_in_prompts", True)}
    api = TestClient(served.app, raise_server_exceptions=False)  # type: ignore[arg-type]
    failures: list[str] = []
    for user in DEMO_USERS:
        for level, word in WORDS.items():
            r = api.post(
                "/v1/chat/completions",
                headers=served.headers(user),
                json={
                    "model": "billing-support",
                    "messages": [{"role": "user", "content": f"What is the {word} refund code?"}],
                },
            )
            asks = "ask" in oracle.permissions(user) if user != "guest" else False
            if not asks:
                if r.status_code != 403 or _canaries_in(r.text):
                    failures.append(f"OpenAI as {user} ({level}): {r.status_code}")
                continue
            if r.status_code != 200:
                failures.append(f"OpenAI as {user} ({level}): {r.status_code} {r.text[:200]}")
                continue
            readable = {s for s in ALL_LEVELS if oracle.may_read(user, s) and s in quotable}
            got = _canaries_in(r.text)
            if got - readable:  # never a canary of a document the asker may not read, whatever the question
                failures.append(f"OpenAI as {user} asking about {level}: leaks {sorted(got - readable)}")
            if (level in got) != (level in readable):  # and the one asked about iff they may read it
                failures.append(f"OpenAI as {user} asking about {level}: shows {sorted(got)}")
    assert not failures, "\n".join(failures)


# ------------------------------------------------------------------------------------------------ property
TOKENS = ["public", "group:support", "group:finance", "group:pricing-committee", "user:lena", "user:zed"]


@pytest.fixture
def rated(project: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The example on ``db_url`` with one thumbs-down trace per level plus one citing every level."""
    from charter.runtime import Runtime
    from charter.telemetry import record_feedback

    monkeypatch.setenv("CHARTER_DATABASE_URL", db_url)
    rt = Runtime.open(project)
    oracle = Oracle.load(project)
    index_documents(rt, {(s, d): oracle.acl(s, d) for s, d in LEVELS.items()})
    ben = rt.charter.principal(SUBMITTER)
    for sources in [[s] for s in ALL_LEVELS] + [ALL_LEVELS]:
        request_id, _ = plant(rt, SUBMITTER, sources)
        record_feedback(rt, request_id, ben, rating=-1)
    yield rt
    rt.close()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    acls=st.lists(st.frozensets(st.sampled_from(TOKENS), max_size=3), min_size=5, max_size=5),
    groups=st.frozensets(st.sampled_from(["support", "finance", "pricing-committee", "platform"])),
    uid=st.sampled_from(["lena", "zed", "ana"]),
)
def test_report_and_eval_output_redaction_over_random_acls_and_readers(
    rated: Any, acls: list[frozenset[str]], groups: frozenset[str], uid: str
) -> None:
    """Random ACLs (possibly empty: nobody) and random readers: a document's row in the source blame and its
    canary in an eval output show iff the reader's tokens meet its ACL (the oracle is the token rule written
    here), and the redacted row accounts for exactly the hidden documents and their requests."""
    from charter.access import Reader, redact_eval_output
    from charter.spec import Principal
    from charter.telemetry import build_report

    index_documents(rated, {(s, LEVELS[s]): acl for s, acl in zip(ALL_LEVELS, acls, strict=True)})
    who = Principal(id=uid, kind="user", name=uid, email=None, groups=tuple(groups), roles=(), active=True)
    tokens = {"public", f"user:{uid}", *(f"group:{g}" for g in groups)}
    readable = {s for s, acl in zip(ALL_LEVELS, acls, strict=True) if acl & tokens}
    hidden = set(ALL_LEVELS) - readable

    blame = build_report(rated, principal=who)["source_blame"]
    rows = {d["doc_id"]: d for d in blame["documents"] if not d.get("redacted")}
    assert set(rows) == {LEVELS[s] for s in readable}
    assert {d["source_id"] for d in blame["sources"] if not d.get("redacted")} == readable
    marker = [d for d in blame["documents"] if d.get("redacted")]
    assert blame["rated_requests_with_citations"] == len(ALL_LEVELS) + 1
    if hidden:
        assert marker[0]["documents"] == len(hidden)
        assert (
            marker[0]["cited_in_rated"] == len(hidden) + 1
        )  # each hidden one's own request + the shared one
        assert not _docs_in(json.dumps(marker)) and not marker[0]["examples"]
    else:
        assert not marker

    draft, notes = texts(ALL_LEVELS)
    cites = [citation(i, s) for i, s in enumerate(ALL_LEVELS, 1)]
    shown = redact_eval_output(
        Reader(rated, who),
        {
            "result": {"draft": draft, "agent_notes": notes, "citations": cites},
            "retrieved": [{"source": c["source_id"], "doc_id": c["doc_id"]} for c in cites],
        },
        expected_sources=[f"{s}/{LEVELS[s]}" for s in ALL_LEVELS],
        details=[f"contains {canary(s)} of {s}/{LEVELS[s]}" for s in ALL_LEVELS],
    )
    text = json.dumps(shown)
    assert _canaries_in(text) == readable and _docs_in(text) == readable
    assert shown["redacted_sources"] == len(hidden)
    # expected sources and details alone (an output that cited nothing) follow the same rule
    bare = redact_eval_output(
        Reader(rated, who),
        {"result": {"draft": "No answer.", "citations": []}, "error": f"failed on {ALL_LEVELS[-1]}/x"},
        expected_sources=[f"{s}/{LEVELS[s]}" for s in ALL_LEVELS],
        details=[f"expected {s}/{LEVELS[s]}" for s in ALL_LEVELS],
    )
    assert _docs_in(json.dumps(bare)) == readable and bare["draft"] == "No answer."
