"""A user's mistake on the command line is a message and exit code 2, never a traceback — through the real
console script (a subprocess) and in-process; and the command tree built once serves every later call."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli

MISTAKES = [
    (["nosuchcommand"], "No such command 'nosuchcommand'"),
    (["ask"], "Missing argument 'question'"),
    (["tokens", "create", "--no-such-option"], "No such option: --no-such-option"),
    (["audit", "tail", "--lines", "many"], "Invalid value for '-n' / '--lines'"),
]


@pytest.mark.parametrize(("argv", "message"), MISTAKES)
def test_console_script_reports_a_usage_error_without_a_traceback(argv: list[str], message: str) -> None:
    script = Path(sys.executable).parent / "charter"
    assert script.exists(), f"the console script is not installed next to {sys.executable}: run make setup"
    done = subprocess.run([str(script), *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


@pytest.mark.parametrize(("argv", "message"), MISTAKES)
def test_in_process_calls_report_the_same(argv: list[str], message: str) -> None:
    for _ in range(2):  # the second call uses the command tree built by the first
        res = run_cli(*argv)
        assert res.exit_code == 2 and message in res.stderr and "Traceback" not in res.stderr


def test_help_lists_the_commands() -> None:
    res = run_cli("--help")
    assert res.exit_code == 0
    for name in ("ask", "sources", "traces", "gate", "mcp", "serve"):
        assert name in res.stdout
