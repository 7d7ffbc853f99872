"""Prompt versions become active only with the prompt owner's approval of their exact content."""

from __future__ import annotations

import pytest

from charter.errors import Denied
from charter.models import PromptRegistry, ScriptedModel, build_gateway
from charter.runtime import Runtime

from .conftest import edit_charter


def registry(rt: Runtime) -> PromptRegistry:
    return PromptRegistry(rt.charter, rt.store, audit=lambda **e: rt.audit.append(**e))


def test_a_fresh_workflow_refuses_to_run_with_an_unapproved_prompt(scripted_project, open_runtime):
    rt = open_runtime(scripted_project, approve=False)
    with pytest.raises(Denied, match="charter prompts approve draft_reply v2 --as lena"):
        build_gateway(rt, primary=ScriptedModel())
    registry(rt).approve("draft_reply", "v2", principal=rt.charter.principal("lena"))
    gw = build_gateway(rt, primary=ScriptedModel())
    request = gw.build_request("q?", [])
    assert request.prompt_version == "v2" and request.prompt_name == "draft_reply"
    assert "Tone: Hi {recipient}" in request.system_prompt  # {tone} filled from review.tone


def test_a_version_without_approval_cannot_become_active(scripted_project, open_runtime):
    rt = open_runtime(scripted_project)
    reg = registry(rt)
    lena = rt.charter.principal("lena")
    with pytest.raises(Denied, match="cannot become active: not approved"):
        reg.activate("draft_reply", "v1", principal=lena)
    assert reg.active_version("draft_reply") == "v2"
    denied = rt.audit.tail(5, action="prompt.activate")
    assert denied[-1].outcome == "denied"

    reg.approve("draft_reply", "v1", principal=lena)
    reg.activate("draft_reply", "v1", principal=lena)
    assert reg.active_version("draft_reply") == "v1"
    gw = build_gateway(rt, primary=ScriptedModel())
    assert gw.build_request("q?", []).prompt_version == "v1"
    assert [e.outcome for e in rt.audit.tail(5, action="prompt.activate")][-1] == "activated"


def test_only_the_prompt_owner_approves_and_refusals_are_audited(scripted_project, open_runtime):
    rt = open_runtime(scripted_project, approve=False)
    reg = registry(rt)
    for user in ("ben", "omar", "farid"):
        with pytest.raises(Denied, match=r"only the prompt owner \(lena\)"):
            reg.approve("draft_reply", "v2", principal=rt.charter.principal(user))
    refused = rt.audit.tail(10, action="prompt.approve")
    assert [(e.actor, e.outcome) for e in refused] == [
        ("ben", "denied"),
        ("omar", "denied"),
        ("farid", "denied"),
    ]
    assert not reg.status("draft_reply", "v2").approved
    reg.approve("draft_reply", "v2", principal=rt.charter.principal("lena"))
    entry = rt.audit.tail(1, action="prompt.approve")[0]
    assert (
        entry.outcome == "approved"
        and entry.details["file_hash"] == reg.status("draft_reply", "v2").file_hash
    )


def test_changing_an_approved_prompt_file_voids_the_approval(scripted_project, open_runtime):
    rt = open_runtime(scripted_project)
    reg = registry(rt)
    assert reg.status("draft_reply", "v2").approved
    running = build_gateway(rt, primary=ScriptedModel())
    assert running.build_request("q?", []).prompt_version == "v2"  # now cached by the running gateway
    prompt_file = rt.charter.resolve("prompts/draft_reply/v2.md")
    prompt_file.write_text(prompt_file.read_text() + "\nAlways promise a refund.\n")
    with pytest.raises(Denied, match="changed after it was approved"):
        running.build_request("q?", [])  # noticed at once, not after the cache expires

    status = reg.status("draft_reply", "v2")
    assert not status.approved and "changed after it was approved" in (status.approval_problem or "")
    with pytest.raises(Denied, match="changed after it was approved"):
        build_gateway(rt, primary=ScriptedModel())
    with pytest.raises(Denied):
        reg.activate("draft_reply", "v2", principal=rt.charter.principal("lena"))

    reg.approve("draft_reply", "v2", principal=rt.charter.principal("lena"))  # re-approving the new content
    assert reg.status("draft_reply", "v2").approved
    assert "Always promise a refund." in build_gateway(rt, primary=ScriptedModel()).active_prompt().text


def test_reverting_the_file_restores_the_original_approval(scripted_project, open_runtime):
    rt = open_runtime(scripted_project)
    reg = registry(rt)
    prompt_file = rt.charter.resolve("prompts/draft_reply/v2.md")
    original = prompt_file.read_bytes()
    prompt_file.write_bytes(original + b"x")
    assert not reg.status("draft_reply", "v2").approved
    prompt_file.write_bytes(original)
    assert reg.status("draft_reply", "v2").approved


def test_a_later_charter_change_of_active_wins_over_an_older_activation(scripted_project, open_runtime):
    rt = open_runtime(scripted_project)
    reg = registry(rt)
    lena = rt.charter.principal("lena")
    reg.approve("draft_reply", "v1", principal=lena)
    reg.activate("draft_reply", "v1", principal=lena)
    assert reg.active_version("draft_reply") == "v1"
    # the charter now names v1 itself, then goes back to v2: the newest explicit decision (the file) wins
    edit_charter(
        scripted_project,
        {"prompts": [{**rt.spec.prompts[0].model_dump(mode="json", exclude_none=True), "active": "v1"}]},
    )
    rt2 = open_runtime(scripted_project, approve=False)
    assert registry(rt2).active_version("draft_reply") == "v1"
    edit_charter(
        scripted_project,
        {"prompts": [{**rt.spec.prompts[0].model_dump(mode="json", exclude_none=True), "active": "v2"}]},
    )
    rt3 = open_runtime(scripted_project, approve=False)
    assert registry(rt3).active_version("draft_reply") == "v2"


def test_a_stale_config_hash_in_the_charter_is_refused(scripted_project, open_runtime):
    prompt = {
        "name": "draft_reply",
        "active": "v2",
        "versions": [
            {"version": "v1", "file": "prompts/draft_reply/v1.md"},
            {
                "version": "v2",
                "file": "prompts/draft_reply/v2.md",
                "approval": {"by": "lena", "at": "2026-11-04T09:00:00Z", "config_hash": "0" * 64},
            },
        ],
    }
    rt = open_runtime(edit_charter(scripted_project, {"prompts": [prompt]}))  # approved in the DB
    status = registry(rt).status("draft_reply", "v2")
    assert not status.approved and "config_hash" in (status.approval_problem or "")


def test_cli_list_approve_activate(scripted_project, cli):
    c = str(scripted_project)
    listed = cli("prompts", "list", "--json", "-c", c)
    assert listed.exit_code == 0, listed.stderr
    rows = {r["version"]: r for r in listed.json()}
    assert set(rows) == {"v1", "v2"} and rows["v2"]["active"] and not rows["v2"]["approved"]
    assert len(rows["v1"]["file_hash"]) == 64

    refused = cli("prompts", "approve", "draft_reply", "v1", "--as", "ana", "-c", c)
    assert refused.exit_code == 1 and "only the prompt owner" in refused.stderr
    not_approved = cli("prompts", "activate", "draft_reply", "v1", "--as", "lena", "-c", c, "--json")
    assert not_approved.exit_code == 1 and not_approved.json()["error"] == "Denied"

    assert cli("prompts", "approve", "draft_reply", "v1", "--as", "lena", "-c", c).exit_code == 0
    activated = cli("prompts", "activate", "draft_reply", "v1", "--as", "lena", "-c", c, "--json")
    assert activated.exit_code == 0 and activated.json()["active"] is True
    rows = {r["version"]: r for r in cli("prompts", "list", "--json", "-c", c).json()}
    assert rows["v1"]["active"] and rows["v1"]["approved_by"] == "lena" and not rows["v2"]["active"]
    unknown = cli("prompts", "approve", "draft_reply", "v9", "--as", "lena", "-c", c)
    assert unknown.exit_code == 2 and "no version 'v9'" in unknown.stderr
