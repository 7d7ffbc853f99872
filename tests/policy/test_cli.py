"""`charter policy explain` and `charter policy show`."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli


def test_explain_allow_exits_0_and_names_the_policy(project: Path) -> None:
    result = run_cli(
        "policy",
        "explain",
        "--charter",
        str(project),
        "--as",
        "lena",
        "tools.approve",
        "tool:issue_refund",
        "--context",
        '{"args": {"amount": 50}}',
        "--json",
    )
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    assert doc["decision"] == "allow"  # type: ignore[index]
    assert doc["policy_ids"] == ["tool.issue_refund.approve.1.lead"]  # type: ignore[index]
    policy = doc["policies"][0]  # type: ignore[index]
    assert "charter.yaml:" in policy["source"] and "conditions[0].when" in policy["source"]
    assert 'decimal("100.0000")' in policy["text"]


def test_explain_deny_exits_1(project: Path) -> None:
    result = run_cli(
        "policy",
        "explain",
        "--charter",
        str(project),
        "--as",
        "lena",
        "tools.approve",
        "tool:issue_refund",
        "--context",
        '{"args": {"amount": 500}}',
    )
    assert result.exit_code == 1
    assert "DENY" in result.stdout and "deny by default" in result.stdout


def test_explain_forbid_shows_the_custom_file(project: Path) -> None:
    result = run_cli(
        "policy", "explain", "--charter", str(project), "--as", "casey", "tools.call", "tool:lookup_invoice"
    )
    assert result.exit_code == 1
    assert "billing.cedar:3" in result.stdout and "contractors" in result.stdout


def test_explain_default_resource_is_the_workflow(project: Path) -> None:
    result = run_cli("policy", "explain", "--charter", str(project), "--as", "ana", "ask", "--json")
    assert result.exit_code == 0
    assert result.json()["resource"] == "workflow:billing-support"  # type: ignore[index]


def test_explain_bad_input(project: Path) -> None:
    assert run_cli("policy", "explain", "--charter", str(project), "--as", "nobody", "ask").exit_code == 2
    assert (
        run_cli(
            "policy", "explain", "--charter", str(project), "--as", "ana", "ask", "--context", "{not json"
        ).exit_code
        == 2
    )
    nan = run_cli(
        "policy",
        "explain",
        "--charter",
        str(project),
        "--as",
        "farid",
        "tools.approve",
        "tool:issue_refund",
        "--context",
        '{"args": {"amount": NaN}}',
        "--json",
    )
    assert nan.exit_code == 1 and nan.json()["errors"]  # type: ignore[index]
    unknown = run_cli("policy", "explain", "--charter", str(project), "--as", "ana", "fly", "--json")
    assert unknown.exit_code == 1 and "unknown action" in unknown.json()["errors"][0]  # type: ignore[index]


def test_show_lists_generated_and_custom_policies(project: Path) -> None:
    result = run_cli("policy", "show", "--charter", str(project), "--json")
    assert result.exit_code == 0
    ids = [p["id"] for p in result.json()]  # type: ignore[union-attr]
    assert "role.agent.ask" in ids and "identity.inactive" in ids and any("billing.cedar" in i for i in ids)
