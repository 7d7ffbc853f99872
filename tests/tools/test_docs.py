"""docs/actions.md stays true: every command it lists exists, every API it names is exported."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import charter.review
import charter.tools
from tests.conftest import run_cli

DOC = (Path(__file__).resolve().parents[2] / "docs" / "actions.md").read_text(encoding="utf-8")


def _commands() -> list[list[str]]:
    found: list[list[str]] = []
    for m in re.finditer(r"`charter ([a-z-]+) ?([a-z|\\-]*)", DOC):
        group, subs = m.group(1), m.group(2).replace("\\", "")
        for sub in [s for s in subs.split("|") if s and s not in ("on", "off", "status")] or [""]:
            cmd = [group, sub] if sub else [group]
            if cmd not in found:
                found.append(cmd)
    return found


@pytest.mark.parametrize("command", _commands(), ids=lambda c: " ".join(c))
def test_every_documented_command_exists(command: list[str]) -> None:
    res = run_cli(*command, "--help")
    assert res.exit_code == 0, res.stdout + res.stderr


def test_every_documented_function_is_exported() -> None:
    for module, name in re.findall(r"`charter\.(tools|review)\.([a-z_]+)", DOC):
        assert hasattr(charter.tools if module == "tools" else charter.review, name), f"{module}.{name}"


def test_the_doc_lists_enough_commands() -> None:
    names = {" ".join(c) for c in _commands()}
    assert {
        "tools list",
        "tools call",
        "approvals approve",
        "approvals recover",
        "review edit",
        "review tick",
        "kill-switch",
    } <= names
