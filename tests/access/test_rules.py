"""One test per rule of issue 15's access bullets, each able to fail on the old code, plus a property test
of the redaction rule over random ACLs and principals (SQLite and PostgreSQL)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charter.errors import Denied
from charter.runtime import Runtime
from charter.spec import Principal
from tests.access._world import LEO, LEVELS, Oracle, add_user, canary, citation, index_documents, plant, texts


@pytest.fixture
def rt(project: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Runtime]:
    """The example on ``db_url`` with the five access-level documents indexed with their real ACLs."""
    monkeypatch.setenv("CHARTER_DATABASE_URL", db_url)
    add_user(project, LEO)
    runtime = Runtime.open(project)
    oracle = Oracle.load(project)
    index_documents(runtime, {(s, d): oracle.acl(s, d) for s, d in LEVELS.items()})
    yield runtime
    runtime.close()


# ------------------------------------------------------------------------------------------------ 1: redaction
TOKENS = ["public", "group:support", "group:finance", "group:pricing-committee", "user:lena", "user:zed"]


@settings(
    max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture]
)  # each example rewrites every ACL
@given(
    acls=st.lists(st.frozensets(st.sampled_from(TOKENS), max_size=3), min_size=5, max_size=5),
    groups=st.frozensets(st.sampled_from(["support", "finance", "pricing-committee", "platform"])),
    uid=st.sampled_from(["lena", "zed", "ana"]),
    sep=st.sampled_from([" ", "\n", "  ", " — "]),
)
def test_redaction_shows_each_part_iff_its_document_is_readable(
    rt: Runtime, acls: list[frozenset[str]], groups: frozenset[str], uid: str, sep: str
) -> None:
    """Random ACLs (possibly empty: nobody) and random principals; the oracle is the token rule itself."""
    from charter import access
    from charter.review import ReviewItem, redact_review
    from charter.store import utcnow

    sources = list(LEVELS)
    index_documents(rt, {(s, LEVELS[s]): acl for s, acl in zip(sources, acls, strict=True)})
    who = Principal(id=uid, kind="user", name=uid, email=None, groups=tuple(groups), roles=(), active=True)
    tokens = {"public", f"user:{uid}", *(f"group:{g}" for g in groups)}
    readable = {s for s, acl in zip(sources, acls, strict=True) if acl & tokens}
    draft, notes = texts(sources)
    draft = draft.replace(" ", sep, 2)
    cites = [citation(i, s) for i, s in enumerate(sources, 1)]
    trace = access.redact_trace(
        rt,
        who,
        {
            "answer": draft,
            "agent_notes": notes,
            "citations": cites,
            "retrieved": [
                {"source": c["source_id"], "doc_id": c["doc_id"], "chunk_id": c["chunk_id"]} for c in cites
            ],
            "spans": [
                {"stage": "retrieve", "attributes": {"chunks": [{"chunk_id": c["chunk_id"]} for c in cites]}}
            ],
        },
    )
    now = utcnow()
    item = ReviewItem(
        id="rev_x",
        request_id=None,
        submitter="ben",
        question="q",
        draft=draft,
        citations=cites,
        agent_notes=notes,
        groundedness=None,
        escalation_reason=None,
        status="pending",
        assigned_role="lead",
        escalation_level=0,
        sla_due_at=None,
        created_at=now,
        updated_at=now,
        decision=None,
        decided_by=None,
        decided_at=None,
        final_text=draft,
        diff=None,
        reject_reason=None,
        comment=None,
        version=0,
    )
    review = redact_review(rt, who, item)
    for shown in (trace, review):
        blob = repr(shown)
        for s in sources:
            assert (canary(s) in blob) == (s in readable), (s, acls, groups, uid)
            if s not in readable:  # no title, heading, link, doc id or chunk id of it either
                assert LEVELS[s] not in blob
        if readable != set(sources):
            assert "[redacted: " in blob


def test_roles_never_widen_reading_and_the_cli_checks_review_show(rt: Runtime, cli: Any) -> None:
    """traces.read_all (lena, omar) opens any request but shows only what they may read; ``review show`` as
    the contractor answers like a missing id (the old CLI had no check at all)."""
    from charter.telemetry import visible_trace

    request_id, review_id = plant(rt, "farid", ["finance-policies", "help-center"])
    lena = rt.charter.principal("lena")
    doc = visible_trace(rt, lena, request_id)
    assert canary("finance-policies") not in repr(doc) and canary("help-center") in repr(doc)
    assert "refund-exceptions-policy" not in repr(doc)
    out = cli("review", "show", review_id, "--as", "casey", "--charter", str(rt.charter.path))  # type: ignore[operator]
    assert out.exit_code != 0 and canary("finance-policies") not in out.stdout
    assert f"no review item {review_id!r}" in out.stderr


# ------------------------------------------------------------------------------------------------ 2: routing
def test_a_draft_goes_only_to_reviewers_who_may_read_its_sources_else_to_the_source_owner(
    rt: Runtime,
) -> None:
    from charter.review import decide_draft, get_review, list_reviews

    _, finance = plant(rt, "ana", ["finance-policies"])
    item = get_review(rt, finance)
    assert item.assigned_user == "farid" and item.status == "escalated"
    assert "finance-policies" in (item.routing or "") and "farid" in (item.routing or "")
    assert finance not in [i.id for i in list_reviews(rt, principal="lena")]
    assert finance in [i.id for i in list_reviews(rt, principal="farid")]
    with pytest.raises(Denied, match="may not read"):
        decide_draft(rt, finance, "lena", "approve")
    assert decide_draft(rt, finance, "farid", "approve").status == "approved"
    _, public = plant(rt, "ana", ["help-center"])
    assert get_review(rt, public).assigned_user is None
    assert public in [i.id for i in list_reviews(rt, principal="lena")]
    _, nobody = plant(rt, "ana", ["finance-policies", "pricing-committee"])
    stuck = get_review(rt, nobody)
    assert stuck.assigned_user is None and "operator must assign" in (stuck.routing or "")
    assert list_reviews(rt, principal="lena") and nobody not in [
        i.id for i in list_reviews(rt, principal="lena")
    ]


def test_sla_escalation_follows_the_same_rule(rt: Runtime) -> None:
    """A sensitive-topic draft citing finance escalates lead → finance at its SLA; finance (farid) may read it."""
    from datetime import timedelta

    from charter.review import ManualClock, get_review, submit_draft, tick

    clock = ManualClock()
    draft, notes = texts(["playbook"])
    item = submit_draft(
        rt,
        request_id=None,
        principal="ana",
        question="chargeback?",
        draft=draft,
        citations=[citation(1, "playbook")],
        agent_notes=notes,
        escalation_reason="sensitive_topic",
        clock=clock,
    )
    assert item.assigned_user is None and item.assigned_role == "lead"
    clock.advance(timedelta(hours=3))
    assert tick(rt, clock=clock).reviews_escalated == [item.id]
    after = get_review(rt, item.id)
    assert after.assigned_role == "finance" and after.assigned_user is None  # farid reads the playbook


# ------------------------------------------------------------------------------------------------ 3: actions
def _approved_draft(rt: Runtime, submitter: str, customer: str | None) -> str:
    from charter.review import decide_draft, submit_draft

    draft, notes = texts(["help-center"])
    item = submit_draft(
        rt,
        request_id=None,
        principal=submitter,
        question="refund?",
        draft=draft,
        citations=[citation(1, "help-center")],
        agent_notes=notes,
        subject_id=customer,
    )
    decide_draft(rt, item.id, "lena", "approve")
    return item.id


def test_send_reply_only_by_the_submitter_and_only_to_the_drafts_customer(rt: Runtime) -> None:
    from charter.tools import propose

    review_id = _approved_draft(rt, "ben", "cus_1001")
    with pytest.raises(Denied) as other_agent:
        propose(rt, "ana", "send_reply", {"review_id": review_id, "customer_id": "cus_1001"})
    with pytest.raises(Denied) as missing:
        propose(rt, "ana", "send_reply", {"review_id": "rev_" + "0" * 24, "customer_id": "cus_1001"})
    assert str(other_agent.value).replace(review_id, "X") == str(missing.value).replace(
        "rev_" + "0" * 24, "X"
    )
    with pytest.raises(Denied, match="about someone else"):
        propose(rt, "ben", "send_reply", {"review_id": review_id, "customer_id": "cus_1002"})
    sent = propose(rt, "ben", "send_reply", {"review_id": review_id, "customer_id": "cus_1001"})
    assert sent.status == "executed", sent
    unbound = _approved_draft(rt, "ben", None)
    with pytest.raises(Denied, match="names no subject"):
        propose(rt, "ben", "send_reply", {"review_id": unbound, "customer_id": "cus_1001"})


@pytest.mark.parametrize(
    "edit",
    [
        "The rule applies here [S1]. CANARY-FIN-7d3a91",
        "The rule applies here [S1]. Card 4111 1111 1111 1111 on file.",
        "The rule applies here [S9].",
    ],
)
def test_an_edit_runs_the_draft_checks_and_needs_a_second_reviewer(rt: Runtime, edit: str) -> None:
    from charter.review import decide_draft, get_review, submit_draft

    draft, notes = texts(["help-center"])
    item = submit_draft(
        rt,
        request_id=None,
        principal="ana",
        question="refund?",
        draft=draft,
        citations=[citation(1, "help-center")],
        agent_notes=notes,
        subject_id="cus_1001",
    )
    with pytest.raises(Denied, match="draft checks"):
        decide_draft(rt, item.id, "lena", "edit", text=edit)
    assert get_review(rt, item.id).final_text is None
    ok = decide_draft(
        rt, item.id, "lena", "edit", text=f"The rule {canary('help-center')} applies to this refund [S1]."
    )
    assert ok.status == "pending" and ok.edited_by == "lena" and ok.diff and ok.edit_checks is not None
    with pytest.raises(Denied, match="four-eyes"):
        decide_draft(rt, item.id, "lena", "approve")
    from charter.tools import propose

    with pytest.raises(Denied, match="pending"):  # not sendable before the second approval
        propose(rt, "ana", "send_reply", {"review_id": item.id, "customer_id": "cus_1001"})
    done = decide_draft(rt, item.id, "leo", "approve")
    assert done.status == "approved" and done.decision == "edited" and done.final_text == ok.final_text


def test_lookup_invoice_is_scoped_to_the_conversations_customer(rt: Runtime) -> None:
    import json

    from charter.review import submit_draft
    from charter.tools import propose

    invoices = json.loads((rt.charter.base_dir / "data" / "invoices.json").read_text())["invoices"]
    mine = next(i for i in invoices if i["customer_id"] == "cus_1001")
    theirs = next(i for i in invoices if i["customer_id"] != "cus_1001")
    no_context = propose(rt, "ana", "lookup_invoice", {"invoice_id": mine["id"]})
    assert no_context.status == "failed" and "customer" in (no_context.action.error or "")
    draft, notes = texts(["help-center"])
    submit_draft(
        rt,
        request_id="req_conv1",
        principal="ana",
        question="invoice?",
        draft=draft,
        citations=[citation(1, "help-center")],
        agent_notes=notes,
        subject_id="cus_1001",
    )
    ok = propose(rt, "ana", "lookup_invoice", {"invoice_id": mine["id"]}, request_id="req_conv1")
    assert ok.status == "executed" and ok.action.result["customer_id"] == "cus_1001"
    other = propose(rt, "ana", "lookup_invoice", {"invoice_id": theirs["id"]}, request_id="req_conv1")
    assert (
        other.status == "failed"
        and other.action.result is None
        and theirs["customer_id"] not in (other.action.error or "")
    )
    # someone else's conversation gives no customer
    stolen = propose(rt, "ben", "lookup_invoice", {"invoice_id": mine["id"]}, request_id="req_conv1")
    assert stolen.status == "failed"


# ------------------------------------------------------------------------------------------------ 8: links
@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://help.quillo.example/a", True),
        ("http://x.example", True),
        ("mailto:billing@quillo.example", True),
        ("javascript:alert(1)", False),
        ("JaVaScRiPt:alert(1)", False),
        (" javascript:alert(1)", False),
        ("java\tscript:alert(1)", False),
        ("java\u200bscript:alert(1)", False),
        ("data:text/html,<script>alert(1)</script>", False),
        ("vbscript:msgbox(1)", False),
        ("//evil.example/x", False),
        ("", False),
    ],
)
def test_only_http_https_and_mailto_are_links(url: str, ok: bool) -> None:
    from charter.access import safe_url

    assert (safe_url(url) is not None) == ok


def _safe_url_by_definition(url: object) -> str | None:
    """The link rule written out plainly (the oracle): strip; refuse any character that is not printable
    or is whitespace; keep only http, https and mailto schemes."""
    from urllib.parse import urlsplit

    if not isinstance(url, str) or not url.strip():
        return None
    stripped = url.strip()
    if any(not ch.isprintable() or ch.isspace() for ch in stripped):
        return None
    try:
        scheme = urlsplit(stripped).scheme.lower()
    except ValueError:
        return None
    return stripped if scheme in ("http", "https", "mailto") else None


def test_no_printable_character_but_the_space_is_whitespace() -> None:
    """``safe_url`` refuses whitespace with one ``isprintable()`` pass plus a check for the ASCII space: that
    is the plain rule only if no other printable character is whitespace — checked over every code point."""
    import sys

    odd = [hex(cp) for cp in range(sys.maxunicode + 1) if chr(cp).isprintable() and chr(cp).isspace()]
    assert odd == ["0x20"]


@settings(max_examples=400, deadline=None)
@given(
    prefix=st.sampled_from(["", " ", "\t", "\u200b", "\u00a0"]),
    scheme=st.sampled_from(
        ["https", "HTTP", "mailto", "javascript", "java\tscript", "jav\u200bascript", "data", ""]
    ),
    rest=st.text(st.characters(codec="utf-8"), max_size=30),
)
def test_safe_url_agrees_with_the_plain_rule(prefix: str, scheme: str, rest: str) -> None:
    from charter.access import safe_url

    url = f"{prefix}{scheme}:{rest}"
    assert safe_url(url) == _safe_url_by_definition(url)
    assert safe_url(rest) == _safe_url_by_definition(rest)


def test_a_javascript_front_matter_url_is_no_link_on_ask(synced_project: Path) -> None:
    """The document's front matter says ``url: "javascript:…"``; after a sync, /ask shows no such link."""
    from charter.sources import sync_sources
    from tests.server.conftest import _build, console_client

    doc = synced_project.parent / "sources" / "help-center" / "refund-timing.md"
    doc.write_text(
        re.sub(r"^url: .*$", 'url: "javascript:alert(document.cookie)"', doc.read_text(), count=1, flags=re.M)
    )
    served = _build(synced_project)
    try:
        summary = sync_sources(served.rt, "help-center")  # type: ignore[arg-type]
        assert all(s.ok for s in summary)
        client: Any = console_client(served.app, served.tokens["ana"])
        page = client.post("/ask", data={"question": "How long does a refund take to show up on my card?"})
        assert page.status_code == 200
        assert "When will I see my refund?" in page.text  # the document was cited
        assert not re.search(r"href=[\"']?\s*javascript:", page.text, re.I)
        api = client.post(
            "/v1/chat/completions",
            headers=served.headers("ana"),
            json={
                "model": "billing-support",
                "messages": [{"role": "user", "content": "How long does a refund take?"}],
            },
        )
        assert "javascript:" not in api.text
    finally:
        served.rt.close()  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------------ 9: eval leaks
def test_must_not_include_is_a_leak_only_for_an_asker_who_may_not_read_the_document(
    synced_project: Path,
) -> None:
    from charter.evals._cases import EvalCase, Pattern
    from charter.evals._scorers import CaseOutput, PermissionScorer, ScoreContext

    rt = Runtime.open(synced_project)
    try:
        phrase = "An exception for one customer is never a precedent for another"
        ctx = ScoreContext(rt)

        def leaks(user: str, text: str) -> float:
            case = EvalCase(
                id="p",
                category="permission",
                user=user,
                question="q",
                must_not_include=(Pattern.parse(phrase), Pattern.parse("made-up phrase")),
            )
            out = CaseOutput(
                case=case, repeat=0, status="answered", result={"draft": text, "agent_notes": ""}
            )
            return PermissionScorer().score([out], ctx)[0].metrics["permission.leak_count"]

        text = f"{phrase}. Also a made-up phrase."
        assert leaks("ana", text) == 1  # finance content to a support agent: a leak
        assert leaks("farid", text) == 0  # finance may read it: not a leak (the old scorer counted one)
        assert leaks("ana", "a made-up phrase only") == 0  # in no document: not a permission leak
    finally:
        rt.close()
