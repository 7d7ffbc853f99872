"""``charter init --template``: every template is a valid charter of the kind it promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from charter.spec import load_charter
from tests.conftest import run_cli


@pytest.mark.parametrize(
    ("template", "kind"), [("blank", "answer"), ("answer", "answer"), ("draft", "draft"), ("agent", "agent")]
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
    assert not (dest / "template.yaml").exists()  # the template's own description is not copied


def test_blank_template_says_what_to_fill_in(tmp_path: Path) -> None:
    assert run_cli("init", str(tmp_path / "b"), "--template", "blank").exit_code == 0
    text = (tmp_path / "b" / "charter.yaml").read_text(encoding="utf-8")
    assert text.count("TODO") >= 5


def test_init_refuses_unknown_or_conflicting_choices(tmp_path: Path) -> None:
    res = run_cli("init", str(tmp_path / "x"), "--template", "nope")
    assert res.exit_code == 2 and "agent, answer, blank, draft" in res.stderr
    both = run_cli("init", str(tmp_path / "y"), "--template", "blank", "--example", "billing-support")
    assert both.exit_code == 2 and "not both" in both.stderr


def test_a_folder_with_a_template_file_is_a_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The code names no template: a folder holding ``template.yaml`` is one, with its own first command."""
    import shutil

    from charter.cli import _charter_check as _check

    examples = tmp_path / "examples"
    shutil.copytree(
        _check.TEMPLATES_DIR / "blank", examples / "helpdesk", ignore=shutil.ignore_patterns("template.yaml")
    )
    (examples / "helpdesk" / "template.yaml").write_text(
        "template: helpdesk\ndescription: a test\nfirst: charter ask --as alex 'Where is the VPN guide?'\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(_check, "EXAMPLES_DIR", examples)
    assert "helpdesk" in _check.templates() and "blank" in _check.templates()
    res = run_cli("init", str(tmp_path / "new"), "--template", "helpdesk", "--json")
    assert res.exit_code == 0, res.stderr
    assert res.json()["next"].endswith("charter ask --as alex 'Where is the VPN guide?'")  # type: ignore[index]
    assert (tmp_path / "new" / "charter.yaml").is_file() and not (tmp_path / "new" / "template.yaml").exists()
