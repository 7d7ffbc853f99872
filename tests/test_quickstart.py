"""docs/quickstart.md's first walk-through, run literally: every line of its first fenced ``bash`` block, in
order, in a fresh folder — ``charter`` commands in-process (exactly as the console script runs them), other
lines (the edit) with the shell. It must end with a passing gate."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.slow  # runs the quickstart end to end (sync, ask, evals)

QUICKSTART = REPO / "docs" / "quickstart.md"


def quickstart_commands() -> list[str]:
    text = QUICKSTART.read_text(encoding="utf-8")
    section = text.split("## Your first workflow", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "docs/quickstart.md: no bash block under 'Your first workflow'"
    return [ln for ln in block.group(1).splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def test_quickstart_block_walks_blank_to_gate() -> None:
    commands = quickstart_commands()
    assert commands[0].startswith("charter init") and "--template blank" in commands[0]
    assert any(c.startswith("charter gate --as") for c in commands)


def test_quickstart_runs_literally(tmp_path: Path) -> None:
    cwd = tmp_path
    env = {**os.environ, "PATH": os.environ.get("PATH", "")}
    for line in quickstart_commands():
        words = shlex.split(line, comments=True)
        if words[0] == "cd":
            cwd = (cwd / words[1]).resolve()
            continue
        if words[0] == "charter":
            args = words[1:]
            if words[:2] == ["charter", "gate"] and "--as" in words and len(words) == 4:
                args = [*args, "--json"]
            res = run_cli(*args, cwd=cwd)
            assert res.exit_code == 0, f"{line}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
            if "--json" in args:
                report = json.loads(res.stdout)
                problems = [
                    (c["id"], f["message"])
                    for c in report["checks"]
                    for f in c["findings"]
                    if f["status"] == "fail"
                ]
                assert report["status"] in ("pass", "warn") and not problems, problems
                # every problem says what to do next
                assert all(f["fix"] for c in report["checks"] for f in c["findings"] if f["status"] != "pass")
        else:
            subprocess.run(line, shell=True, cwd=cwd, check=True, env=env)
    assert (cwd / "charter.yaml").read_text().count("id: team-handbook") == 1
