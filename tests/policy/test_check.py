"""`charter check` rejects bad custom policy files and approval conditions, naming file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli


def _add_policy(project: Path, name: str, text: str) -> Path:
    path = project.parent / "policies" / name
    path.write_text(text)
    charter = project.read_text().replace(
        "policies: [policies/billing.cedar]", f"policies: [policies/billing.cedar, policies/{name}]"
    )
    project.write_text(charter)
    return path


def test_example_passes(project: Path) -> None:
    assert run_cli("check", str(project)).exit_code == 0


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (
            '// refunds\npermit (\n  principal in Charter::Role::"lead"\n'
            '  action == Charter::Action::"ask",\n'
            "  resource\n);\n",
            4,
            "unexpected token",
        ),
        ("permit (principal, action, resource)\nforbid (principal, action, resource);\n", 2, "missing"),
        ("\n\npermitt (principal, action, resource);\n", 3, "invalid policy effect"),
        (
            "permit (principal, action, resource) when {\n  context.args.amount < \n};\n",
            3,
            "unexpected token",
        ),
        ("permit (principal, action, resource) when {\n\n  nosuchfn(1)\n};\n", 3, "not a valid function"),
        ("permit (principal, action,\n  resource", 2, "end of input"),
    ],
)
def test_syntax_error_fails_check_with_location(project: Path, text: str, line: int, words: str) -> None:
    _add_policy(project, "bad.cedar", text)
    result = run_cli("check", str(project), "--json")
    assert result.exit_code == 1, result.stdout + result.stderr
    problems = result.json()["problems"]  # type: ignore[index]
    bad = [p for p in problems if p["file"] and p["file"].endswith("bad.cedar")]
    assert bad, problems
    assert bad[0]["line"] == line, bad[0]
    assert words in bad[0]["message"]


def test_human_output_names_file_and_line(project: Path) -> None:
    _add_policy(
        project,
        "bad.cedar",
        'forbid (\n  principal in Charter::Group::"contractors"\n'
        '  action == Charter::Action::"tools.call",\n  resource\n);\n',
    )
    result = run_cli("check", str(project))
    assert result.exit_code == 1
    assert "bad.cedar:3:" in result.stdout


@pytest.mark.parametrize(
    ("ref", "words"),
    [
        ('Charter::Action::"tool.call"', "did you mean 'tools.call'"),
        ('Charter::Group::"contractor"', "unknown Group 'contractor'"),
        ('Charter::Tool::"refund"', "unknown Tool 'refund'"),
        ('Charter::Grup::"contractors"', "can never match"),
        ('Other::Group::"contractors"', "can never match"),
    ],
)
def test_unknown_names_in_custom_policies(project: Path, ref: str, words: str) -> None:
    _add_policy(
        project,
        "typo.cedar",
        f"// typo\n\nforbid (principal, action, resource)\nwhen {{ principal in {ref} "
        f"|| resource == {ref} }};\n",
    )
    result = run_cli("check", str(project), "--json")
    assert result.exit_code == 1
    problems = [p for p in result.json()["problems"] if "typo.cedar" in (p["file"] or "")]  # type: ignore[index]
    assert problems and problems[0]["line"] == 4
    assert words in problems[0]["message"]


def test_duplicate_policy_id_is_refused(project: Path) -> None:
    _add_policy(project, "dup.cedar", '@id("role.agent.ask")\npermit (principal, action, resource);\n')
    result = run_cli("check", str(project), "--json")
    assert result.exit_code == 1
    assert any("already used" in p["message"] for p in result.json()["problems"])  # type: ignore[index]


@pytest.mark.parametrize(
    "condition", ["amount > 100 && lead", "amount > '100'", "refund.amount > 1", "amount"]
)
def test_bad_approval_condition_fails_check_with_charter_line(project: Path, condition: str) -> None:
    text = project.read_text()
    old = '{when: "amount > 100", approver_role: finance}'
    assert old in text
    line = text[: text.index(old)].count("\n") + 1
    project.write_text(text.replace(old, f'{{when: "{condition}", approver_role: finance}}'))
    result = run_cli("check", str(project), "--json")
    assert result.exit_code == 1, result.stdout
    problems = result.json()["problems"]  # type: ignore[index]
    assert any(
        p["line"] == line and p["field"] == "tools[1].approval.conditions[1].when" for p in problems
    ), problems


def test_tools_call_as_role_permission_is_refused(project: Path) -> None:
    project.write_text(
        project.read_text().replace(
            "permissions: [ask, feedback]", "permissions: [ask, feedback, tools.call]"
        )
    )
    result = run_cli("check", str(project), "--json")
    assert result.exit_code == 1
    assert any("granted per tool" in p["message"] for p in result.json()["problems"])  # type: ignore[index]


def test_templates_are_refused(project: Path) -> None:
    _add_policy(project, "tpl.cedar", "\npermit (principal == ?principal, action, resource);\n")
    result = run_cli("check", str(project), "--json")
    assert result.exit_code == 1
    [problem] = [p for p in result.json()["problems"] if "tpl.cedar" in (p["file"] or "")]  # type: ignore[index]
    assert problem["line"] == 2 and "templates" in problem["message"]
