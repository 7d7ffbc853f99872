"""``charter init --template``: every template is a valid charter of the kind it promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from charter.spec import load_charter
from tests.conftest import run_cli


@pytest.mark.parametrize(
    ("template", "kind"), [("blank", "answer"), ("answer", "answer"), ("draft", "draft")]
)
def test_each_template_is_a_valid_charter(tmp_path: Path, template: str, kind: str) -> None:
    dest = tmp_path / template
    res = run_cli("init", str(dest), "--template", template, "--json")
    assert res.exit_code == 0, res.stderr
    assert run_cli("check", str(dest)).exit_code == 0
    loaded = load_charter(dest)
    assert loaded.spec.workflow.kind == kind
    assert loaded.spec.system_prompt is not None
    assert res.json()["next"].startswith(f"cd {dest} && charter check")  # type: ignore[index]


def test_blank_template_says_what_to_fill_in(tmp_path: Path) -> None:
    assert run_cli("init", str(tmp_path / "b"), "--template", "blank").exit_code == 0
    text = (tmp_path / "b" / "charter.yaml").read_text(encoding="utf-8")
    assert text.count("TODO") >= 5


def test_init_refuses_unknown_or_conflicting_choices(tmp_path: Path) -> None:
    res = run_cli("init", str(tmp_path / "x"), "--template", "nope")
    assert res.exit_code == 2 and "blank, answer, draft" in res.stderr
    both = run_cli("init", str(tmp_path / "y"), "--template", "blank", "--example", "billing-support")
    assert both.exit_code == 2 and "not both" in both.stderr
