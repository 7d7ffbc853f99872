"""Workflow kinds (``workflow.kind``), prompts bound by purpose (``workflow.prompts.system``) and scope by
role (``roles.<id>.scope``), end to end on the synced billing example (real SQLite, real MiniLM,
extractive model) with the charter edited the way a user would edit it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from charter import _answer_checks as checks
from charter.errors import UsageError
from charter.pipeline import ask
from charter.runtime import Runtime
from tests.conftest import run_cli

PLAYBOOK_QUESTION = "How much goodwill credit can an agent give without approval?"
LEGAL = "Can you give me legal advice about suing Quillo over my invoice?"


def edit_charter(path: Path, edit: object) -> None:
    """Load the charter YAML, let ``edit`` change the dict, write it back (comments are lost: fine here)."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(doc)  # type: ignore[operator]
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def _kind(kind: str) -> object:
    def edit(doc: dict) -> None:
        doc["workflow"]["kind"] = kind

    return edit


@pytest.fixture
def answer_rt(synced_project: Path) -> Iterator[Runtime]:
    def edit(doc: dict) -> None:
        doc["workflow"]["kind"] = "answer"
        doc["review"].pop("drafts", None)  # the kind's default applies

    edit_charter(synced_project, edit)
    runtime = Runtime.open(synced_project)
    yield runtime
    runtime.close()


def test_existing_charters_are_draft_workflows(synced_project: Path) -> None:
    rt = Runtime.open(synced_project)
    try:
        assert rt.spec.workflow.kind == "draft" and rt.spec.review_drafts == "all"
        assert rt.spec.system_prompt == rt.spec.prompts[0].name  # the only prompt is the system prompt
    finally:
        rt.close()


def test_answer_goes_to_the_asker_with_everything_they_may_read(answer_rt: Runtime) -> None:
    """A lead may read the playbook (internal): in a draft workflow it becomes agent notes; in an answer
    workflow it is the answer itself — no outbound/internal split, no greeting, no review queue."""
    lena = answer_rt.charter.principal("lena")
    result = ask(answer_rt, lena, PLAYBOOK_QUESTION)
    assert result.citations, result
    assert {c.audience for c in result.citations} == {"asker"}
    assert result.agent_notes == ""
    cited = set(checks.CITATION.findall(result.draft))
    assert {c.id for c in result.citations} <= cited
    assert "playbook" in {c.source_id for c in result.citations}
    tone_greeting = answer_rt.spec.review.tone.split("{")[0].strip()
    if tone_greeting:
        assert not result.draft.startswith(tone_greeting)
    # answer workflows queue only escalated outputs (review_drafts default `escalated`)
    assert answer_rt.spec.review_drafts == "escalated"
    assert (result.review_id is None) == (result.status == "answered")


def test_answer_kind_still_filters_by_permission(answer_rt: Runtime) -> None:
    """The asker's own access is the audience: a contractor (public help centre only) never gets playbook
    content, whatever the kind."""
    casey = answer_rt.charter.principal("casey")
    result = ask(answer_rt, casey, PLAYBOOK_QUESTION, submit_for_review=False)
    assert {c.source_id for c in result.citations} <= {"help-center"}


def test_draft_kind_keeps_internal_sources_out_of_the_draft(synced_project: Path) -> None:
    rt = Runtime.open(synced_project)
    try:
        result = ask(rt, rt.charter.principal("lena"), PLAYBOOK_QUESTION, submit_for_review=False)
        internal = {c.id for c in result.citations if c.audience == "internal"}
        assert internal, result
        assert not internal & set(checks.CITATION.findall(result.draft))
    finally:
        rt.close()


def test_an_agent_workflow_runs_in_the_agent_loop_not_in_ask(synced_project: Path) -> None:
    """``workflow.kind: agent`` is checked without warnings; ``pipeline.ask`` points to the loop, and the CLI's
    ``ask`` runs the task there (the extractive model answers without a tool call here)."""
    edit_charter(synced_project, _kind("agent"))
    checked = run_cli("check", str(synced_project))
    assert checked.exit_code == 0 and "agent loop" not in checked.stdout, checked.stdout
    rt = Runtime.open(synced_project)
    try:
        with pytest.raises(UsageError, match="agent loop"):
            ask(rt, rt.charter.principal("ana"), "How do I download my invoices?")
    finally:
        rt.close()
    asked = run_cli(
        "ask", "--as", "ana", "How do I download invoices?", "--charter", str(synced_project), "--json"
    )
    assert asked.exit_code == 0, asked.stdout + asked.stderr
    out = asked.json()
    assert out["kind"] == "agent" and out["run_id"] and out["run_status"] in ("completed", "stopped")  # type: ignore[index]


# ------------------------------------------------------------------------------------ prompts by purpose
def _rename_prompt(new: str, bind: str | None) -> object:
    def edit(doc: dict) -> None:
        doc["prompts"][0]["name"] = new
        if bind is not None:
            doc["workflow"]["prompts"] = {"system": bind}

    return edit


def test_a_prompt_of_any_name_is_the_system_prompt(synced_project: Path) -> None:
    """The issue's first failure: a charter whose only prompt is named ``answer`` must run."""
    edit_charter(synced_project, _rename_prompt("answer", None))
    assert run_cli("check", str(synced_project)).exit_code == 0
    assert (
        run_cli(
            "prompts", "approve", "answer", "v2", "--as", "lena", "--charter", str(synced_project)
        ).exit_code
        == 0
    )
    rt = Runtime.open(synced_project)
    try:
        result = ask(
            rt, rt.charter.principal("ana"), "How do I download my invoices?", submit_for_review=False
        )
        assert result.prompt_version == "v2"
    finally:
        rt.close()


def test_check_rejects_a_binding_to_a_missing_prompt(synced_project: Path) -> None:
    edit_charter(synced_project, _rename_prompt("answer", "system_prompt"))
    res = run_cli("check", str(synced_project))
    assert res.exit_code == 1
    out = " ".join(res.stdout.split())
    assert "workflow.prompts.system: names prompt 'system_prompt'" in out and "answer" in out


def test_check_asks_for_a_binding_when_there_are_several_prompts(synced_project: Path) -> None:
    def edit(doc: dict) -> None:
        second = dict(doc["prompts"][0])
        second["name"] = "other"
        doc["prompts"].append(second)

    edit_charter(synced_project, edit)
    res = run_cli("check", str(synced_project))
    assert res.exit_code == 1
    assert "set workflow.prompts.system" in " ".join(res.stdout.split())
    edit_charter(synced_project, lambda doc: doc["workflow"].update(prompts={"system": "other"}))
    assert run_cli("check", str(synced_project)).exit_code == 0


# ------------------------------------------------------------------------------------ scope by role
def _lead_may_ask_legal(doc: dict) -> None:
    doc["roles"]["lead"]["scope"] = {
        "allowed_topics": ["legal advice", "lawsuit"],
        "sensitive_topics": ["goodwill credit"],
        "escalations": [{"when": "sensitive_topic", "to": "finance", "sla": "1h"}],
    }


@pytest.fixture
def role_scoped(synced_project: Path) -> Path:
    edit_charter(synced_project, _lead_may_ask_legal)
    return synced_project


@pytest.mark.parametrize("kind", ["draft", "answer"])
def test_a_manager_may_ask_a_topic_an_employee_may_not(role_scoped: Path, kind: str) -> None:
    edit_charter(role_scoped, _kind(kind))
    rt = Runtime.open(role_scoped)
    try:
        ana = ask(rt, rt.charter.principal("ana"), LEGAL, submit_for_review=False)
        assert ana.escalation and ana.escalation["reason"] == "out_of_scope"
        assert "legal advice" in ana.escalation["topics"]
        lena = ask(rt, rt.charter.principal("lena"), LEGAL, submit_for_review=False)
        assert (lena.escalation or {}).get("reason") != "out_of_scope", lena.escalation
        # a topic the role adds: sensitive for the lead only, routed to the lead's own target
        lena2 = ask(rt, rt.charter.principal("lena"), PLAYBOOK_QUESTION, submit_for_review=False)
        assert lena2.escalation and lena2.escalation["reason"] == "sensitive_topic"
        assert lena2.escalation["to"] == "finance"
        ana2 = ask(rt, rt.charter.principal("ana"), PLAYBOOK_QUESTION, submit_for_review=False)
        assert (ana2.escalation or {}).get("reason") != "sensitive_topic"
    finally:
        rt.close()


def test_scope_by_role_on_the_cli(role_scoped: Path) -> None:
    def reason(user: str) -> str | None:
        res = run_cli("ask", "--as", user, LEGAL, "--json", "--no-review", "--charter", str(role_scoped))
        assert res.exit_code == 0, res.stderr
        return (res.json().get("escalation") or {}).get("reason")  # type: ignore[union-attr]

    assert reason("ana") == "out_of_scope"
    assert reason("lena") != "out_of_scope"


def test_role_scope_references_are_checked(synced_project: Path) -> None:
    def edit(doc: dict) -> None:
        doc["roles"]["lead"]["scope"] = {
            "allowed_topics": ["astrology"],
            "escalations": [{"when": "out_of_scope", "to": "nobody", "sla": "1h"}],
        }

    edit_charter(synced_project, edit)
    res = run_cli("check", str(synced_project))
    assert res.exit_code == 1
    out = " ".join(res.stdout.split())
    assert "'astrology' is not in scope.out_of_scope" in out
    assert re.search(r"roles\.lead\.scope\.escalations\[0\]\.to: role 'nobody'", out), out
