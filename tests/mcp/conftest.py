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

from tests.conftest import copy_example, require, run_shared
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


def _pinned(project: Path, root: Path) -> Path:
    """``root`` holding a copy of ``project`` (as ``root/project``), a throwaway repository and the rug-pull
    file, both upstreams declared and every upstream tool pinned by omar."""
    from charter.mcp import approve_upstream
    from charter.runtime import Runtime

    shutil.copytree(project.parent, root / "project")
    repo = make_repo(root / "repo")
    add_upstreams(root / "project" / "charter.yaml", repo, root / "rug-pull.json")
    rt = Runtime.open(root / "project" / "charter.yaml")
    try:
        approve_upstream(rt, "git", None, "omar")
        approve_upstream(rt, "misbehaving", None, "omar")
    finally:
        rt.close()
    return root


def _copy_pinned(template: Path, dest: Path) -> Governed:
    """A private copy of a ``_pinned`` folder: the charter's paths (repository, rug-pull file) point into the
    copy, the database (pins, audit) is the template's."""
    shutil.copytree(template, dest, symlinks=True)
    charter = dest / "project" / "charter.yaml"
    charter.write_text(
        charter.read_text(encoding="utf-8").replace(str(template), str(dest)), encoding="utf-8"
    )
    for key in (dest / "project" / ".charter" / "keys").glob("*"):
        key.chmod(0o600)
    return Governed(charter, dest / "repo", dest / "rug-pull.json")


# Pinning starts both upstream processes and building the repository runs six git commands (~1.5 s a test);
# it is done once per test run for each example (``run_shared``) and every test gets a copy — pinned by omar in
# another process before the test, as before.
@pytest.fixture(scope="session")
def _governed_template(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Path:
    def build(dest: Path) -> None:
        scratch = copy_example(tmp_path_factory.mktemp("governed-example") / "project", sqlite_template)
        _pinned(scratch, dest)

    return run_shared(tmp_path_factory, "governed-template", build)


@pytest.fixture(scope="session")
def _governed_synced_template(tmp_path_factory: pytest.TempPathFactory, _synced_template: Path) -> Path:
    def build(dest: Path) -> None:
        _pinned(_synced_template / "charter.yaml", dest)

    return run_shared(tmp_path_factory, "governed-synced-template", build)


@pytest.fixture
def governed(_governed_template: Path, tmp_path: Path) -> Iterator[Governed]:
    """The (unsynced) billing example with both upstreams declared and every upstream tool pinned by omar."""
    yield _copy_pinned(_governed_template, tmp_path / "governed")


@pytest.fixture
def governed_synced(_governed_synced_template: Path, tmp_path: Path) -> Iterator[Governed]:
    """As ``governed``, on the synced example (documents indexed, prompt approved: ``ask`` works)."""
    yield _copy_pinned(_governed_synced_template, tmp_path / "governed")


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst
