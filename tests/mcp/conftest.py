"""MCP fixtures: the billing example with a real upstream (``mcp-server-git`` over a throwaway repository)
and a misbehaving one, the upstream tools declared and pinned, and helpers to drive the official SDK client."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import require
from tests.server.conftest import server_project  # noqa: F401  (the synced example; see its docstring)

require("mcp", "pip install 'mcp>=2.3' (a runtime dependency of charter)")
require("mcp_server_git", "pip install 'mcp-server-git>=2026.10' (the dev extra: pip install -e '.[dev]')")

HERE = Path(__file__).parent
UPSTREAMS = HERE / "upstreams"

#: Upstream tools the tests put under the charter: read tools for agents and leads; write tools need a lead.
UPSTREAM_TOOLS = """\
  - name: git_log
    upstream: {server: git, tool: git_log}
    effect: read
    roles: [agent, lead]
  - name: git_status
    upstream: {server: git, tool: git_status}
    effect: read
    roles: [agent, lead]
  - name: git_show
    upstream: {server: git, tool: git_show}
    effect: read
    roles: [agent, lead]
  - name: git_add
    upstream: {server: git, tool: git_add}
    effect: write
    roles: [agent, lead]
    approval: {rule: always, approver_role: lead}
  - name: git_commit
    description: Record the staged changes as a commit with this message.
    upstream: {server: git, tool: git_commit}
    effect: write
    roles: [agent, lead]
    approval: {rule: always, approver_role: lead}
  - name: git_reset
    upstream: {server: git, tool: git_reset}
    effect: write
    roles: [agent, lead]
    approval: {rule: always, approver_role: lead}
  - name: slow_hang
    upstream: {server: misbehaving, tool: hang}
    effect: read
    roles: [agent]
  - name: slow_flood
    upstream: {server: misbehaving, tool: flood}
    effect: read
    roles: [agent]
"""


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, timeout=30
    )
    return out.stdout


def make_repo(path: Path) -> Path:
    """A throwaway repository with two commits and one uncommitted, unstaged file."""
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "user.name", "Test")
    (path / "README.md").write_text("# demo\n")
    git(path, "add", "README.md")
    git(path, "commit", "-q", "-m", "first commit")
    (path / "notes.txt").write_text("hello\n")
    git(path, "add", "notes.txt")
    git(path, "commit", "-q", "-m", "second commit")
    (path / "draft.txt").write_text("work in progress\n")
    return path


def repo_state(repo: Path) -> tuple[str, str, str]:
    """HEAD, the index and the working tree status: what 'unchanged' means for the repository."""
    return (
        git(repo, "rev-parse", "HEAD").strip(),
        git(repo, "ls-files", "--stage"),
        git(repo, "status", "--porcelain", "--untracked-files=all"),
    )


def add_upstreams(
    charter: Path, repo: Path, override: Path, *, git_timeout: str = "20s", pin_recheck: str = "0s"
) -> None:
    """Declare both upstreams. ``pin_recheck`` of the git server: ``0s`` by default, so that a rug pull
    written to ``override`` (which the upstream does not announce) is seen by the very next call."""
    text = charter.read_text(encoding="utf-8")
    py = sys.executable
    servers = f"""
mcp:
  servers:
    - id: git
      command: ["{py}", "{UPSTREAMS / "git_upstream.py"}", "{repo}", "{override}"]
      owner: omar
      timeout: {git_timeout}
      max_result_chars: 4000
      pin_recheck: {pin_recheck}
    - id: misbehaving
      command: ["{py}", "{UPSTREAMS / "misbehaving.py"}"]
      owner: omar
      timeout: 2s
      max_result_chars: 1000
"""
    assert "\nreview:\n" in text
    text = text.replace("\nreview:\n", "\n" + UPSTREAM_TOOLS + servers + "\nreview:\n", 1)
    charter.write_text(text, encoding="utf-8")


@dataclass
class Governed:
    charter: Path
    repo: Path
    override: Path


@pytest.fixture
def governed(project: Path, tmp_path: Path) -> Iterator[Governed]:
    """The (unsynced) billing example with both upstreams declared and every upstream tool pinned by omar."""
    from charter.mcp import approve_upstream
    from charter.runtime import Runtime

    repo = make_repo(tmp_path / "repo")
    override = tmp_path / "rug-pull.json"
    add_upstreams(project, repo, override)
    rt = Runtime.open(project)
    try:
        approve_upstream(rt, "git", None, "omar")
        approve_upstream(rt, "misbehaving", None, "omar")
    finally:
        rt.close()
    yield Governed(project, repo, override)


@pytest.fixture
def governed_synced(server_project: Path, tmp_path: Path) -> Iterator[Governed]:  # noqa: F811
    """As ``governed``, on the synced example (documents indexed, prompt approved: ``ask`` works)."""
    from charter.mcp import approve_upstream
    from charter.runtime import Runtime

    repo = make_repo(tmp_path / "repo")
    override = tmp_path / "rug-pull.json"
    add_upstreams(server_project, repo, override)
    rt = Runtime.open(server_project)
    try:
        approve_upstream(rt, "git", None, "omar")
        approve_upstream(rt, "misbehaving", None, "omar")
    finally:
        rt.close()
    yield Governed(server_project, repo, override)


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
