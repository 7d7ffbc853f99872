"""The charter file: every problem reported with file and line; cross-references; secrets; fingerprint."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charter.errors import SpecError
from charter.spec import load_charter
from charter.spec._types import parse_duration, parse_threshold
from charter.spec._yaml import load_yaml_text
from tests.conftest import REPO, run_cli


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def line_of(path: Path, needle: str) -> int:
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(needle)


def test_example_is_valid(project: Path) -> None:
    loaded = load_charter(project)
    assert loaded.spec.workflow.id == "billing-support"
    assert {"ana", "ben", "lena", "farid", "omar", "casey"} <= set(loaded.principals)


def test_three_mistakes_all_reported_with_lines(project: Path) -> None:
    edit(project, "  top_k: 6", "  topk: 6")
    edit(project, "  cost: farid", "  cost: fred")
    edit(project, "forbidden_actions: [delete_account,", "forbidden_actions: [issue_refund, delete_account,")
    result = run_cli("check", str(project))
    assert result.exit_code == 1
    out = result.stdout
    assert (
        f"charter.yaml:{line_of(project, 'topk: 6')}: retrieval.topk: unknown key 'topk'; did you mean 'top_k'?"
        in out
    )
    assert f"charter.yaml:{line_of(project, 'cost: fred')}: owners.cost: owner 'fred'" in out
    assert "did you mean 'farid'" in out
    refund_line = line_of(project, "- name: issue_refund")
    assert (
        f"charter.yaml:{refund_line}: tools[1].name: tool 'issue_refund' is listed in scope.forbidden_actions"
        in out
    )
    assert "3 problem(s) found" in out


def test_check_json(project: Path) -> None:
    edit(project, "  cost: farid", "  cost: nobody")
    result = run_cli("check", str(project), "--json")
    assert result.exit_code == 1
    doc = result.json()
    assert doc["valid"] is False
    assert doc["problems"][0]["field"] == "owners.cost"
    ok = run_cli("check", "--charter", str(project), "--json")
    assert ok.exit_code == 1  # still broken
    edit(project, "  cost: nobody", "  cost: farid")
    ok = run_cli("check", "--json", cwd=project.parent)
    assert ok.exit_code == 0 and ok.json()["valid"] is True and ok.json()["fingerprint"].startswith("sha256:")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("  per_task_usd: 0.02", "  per_task_usd: .nan", "budgets.per_task_usd"),
        ("  per_task_usd: 0.02", "  per_task_usd: -1", "greater than or equal to 0"),
        ("    sensitivity: public\n", "    sensitivity: secret\n", "sources[0].sensitivity"),
        ("  retention: 90d", "  retention: ninety days", "expected a duration"),
        ("    - retrieval.recall@5 >= 0.8", "    - recall is good", "expected '<area>.<metric>"),
        ("  reviewer_role: lead", "  reviewer_role: leed", "did you mean 'lead'"),
        (
            "    roles: [agent, lead, finance]\n    approval: none",
            "    roles: [agent, lead, finance]\n    approval: sometimes",
            "tools[0].approval.rule",
        ),
        (
            "    owner: omar\n    sensitivity: public",
            "    owner: ghost\n    sensitivity: public",
            "source owner 'ghost'",
        ),
        ("active: v2", "active: v9", "active version 'v9'"),
        ("policies: [policies/billing.cedar]", "policies: [policies/missing.cedar]", "policy file not found"),
        ("  job: >", "  jobb: >", "unknown key 'jobb'; did you mean 'job'?"),
        # a tone placeholder that nothing fills would reach the recipient as written
        ("Hi {recipient},", "Hi {client},", "unknown placeholder {client} in the tone"),
    ],
)
def test_single_mistakes(project: Path, old: str, new: str, expected: str) -> None:
    edit(project, old, new)
    with pytest.raises(SpecError) as info:
        load_charter(project)
    text = str(info.value)
    assert expected in text
    assert re.search(r"charter\.yaml:\d+: ", text), text


def test_secret_in_charter_is_refused(project: Path) -> None:
    edit(
        project,
        "  name: extractive-v1",
        "  name: extractive-v1\n  endpoint: http://x/?key=sk-proj-abcdefghijklmnopqrstuvwx",
    )
    with pytest.raises(SpecError) as info:
        load_charter(project)
    assert "looks like an OpenAI/Anthropic-style API key" in str(info.value)
    assert "sk-proj-abcdefghijklmnopqrstuvwx" not in str(info.value)


def test_secret_key_name_is_refused(project: Path) -> None:
    edit(project, "  name: extractive-v1", "  name: extractive-v1\n  api_key: hunter2")
    with pytest.raises(SpecError) as info:
        load_charter(project)
    assert "looks like a secret" in str(info.value)


def test_users_file_errors_name_the_users_file(project: Path) -> None:
    users = project.parent / "users.yaml"
    edit(users, "roles: [agent]}", "roles: [agnet]}")
    with pytest.raises(SpecError) as info:
        load_charter(project)
    assert re.search(r"users\.yaml:\d+: users\[0\]\.roles\[0\]: role 'agnet'", str(info.value))


def test_yaml_syntax_error_has_line(project: Path) -> None:
    project.write_text(project.read_text() + "\nbroken: [unclosed\n")
    with pytest.raises(SpecError) as info:
        load_charter(project)
    assert "invalid YAML" in str(info.value) and re.search(r"charter\.yaml:\d+", str(info.value))


def test_duplicate_key_is_an_error() -> None:
    with pytest.raises(SpecError) as info:
        load_yaml_text("a: 1\nb: 2\na: 3\n", "f.yaml")
    assert "duplicate key 'a'" in str(info.value) and "f.yaml:3" in str(info.value)


def test_binary_file_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "charter.yaml"
    p.write_bytes(b"\x00\xff\xfe binary")
    with pytest.raises(SpecError) as info:
        load_charter(p)
    assert "NUL" in str(info.value) or "UTF-8" in str(info.value)


def test_missing_charter_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("check", cwd=tmp_path)
    assert result.exit_code == 2
    assert "no charter.yaml" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_fingerprint_ignores_formatting_but_not_meaning(project: Path) -> None:
    before = load_charter(project).fingerprint()
    project.write_text("# a comment\n" + project.read_text().replace("  top_k: 6", "  top_k:    6   # tuned"))
    assert load_charter(project).fingerprint() == before
    edit(project, "  top_k:    6", "  top_k: 7")
    assert load_charter(project).fingerprint() != before


def test_fingerprint_covers_the_question_precision(project: Path) -> None:
    """Evals measured with one question precision are not evidence for another (docs/retrieval.md)."""
    before = load_charter(project).fingerprint()
    edit(project, "  top_k: 6", "  top_k: 6\n  question_precision: bfloat16")
    assert load_charter(project).spec.retrieval.question_precision == "bfloat16"
    assert load_charter(project).fingerprint() != before


def test_fingerprint_covers_referenced_files(project: Path) -> None:
    before = load_charter(project).fingerprint()
    prompt = project.parent / "prompts" / "draft_reply" / "v2.md"
    prompt.write_text(prompt.read_text() + "\nBe brief.\n")
    assert load_charter(project).fingerprint() != before


def test_init_creates_a_valid_project(tmp_path: Path) -> None:
    dest = tmp_path / "x"
    result = run_cli("init", str(dest), "--example", "billing-support")
    assert result.exit_code == 0, result.stderr
    assert run_cli("check", str(dest / "charter.yaml")).exit_code == 0
    again = run_cli("init", str(dest))
    assert again.exit_code == 2 and "not empty" in again.stderr
    unknown = run_cli("init", str(tmp_path / "y"), "--example", "nope")
    assert unknown.exit_code == 2 and "unknown example" in unknown.stderr


def test_reference_doc_is_current() -> None:
    from charter.spec._reference import render_reference

    committed = (REPO / "docs" / "charter-reference.md").read_text()
    assert committed == render_reference(), (
        "docs/charter-reference.md is stale: run `charter docs reference --output docs/charter-reference.md`"
    )


@given(st.integers(min_value=0, max_value=10**6), st.sampled_from(["ms", "s", "m", "h", "d", "w"]))
@settings(max_examples=50)
def test_duration_round_trip(n: int, unit: str) -> None:
    from charter.spec._types import format_duration

    value = parse_duration(f"{n}{unit}")
    assert parse_duration(format_duration(value)) == value


@given(st.text(max_size=40))
@settings(max_examples=200)
def test_threshold_parser_never_crashes(text: str) -> None:
    try:
        parsed = parse_threshold(text)
    except ValueError:
        return
    assert parsed["op"] in (">=", "<=", ">", "<", "==")


@given(st.text(max_size=200))
@settings(max_examples=200)
def test_yaml_loader_never_crashes(text: str) -> None:
    with contextlib.suppress(SpecError):
        load_yaml_text(text, "fuzz.yaml")
