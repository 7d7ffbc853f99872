"""The ``git`` connector against repositories the test creates with the real ``git``: commits, renames
(moves, not delete + add), deletions, ACLs from charter path rules and per-folder ACL files, the commit id
per document, a force-push, and ``--acl-only`` after an ACL file changes."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from charter.retrieval import Index
from charter.sources import source_documents_listing, sync_sources
from charter.sources._git import blob_hash
from tests.sources._embedder import CountingEmbedder
from tests.sources._matrix import check_matrix
from tests.sources.conftest import Workspace


def git(repo: Path, *args: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": "T",
        "GIT_AUTHOR_EMAIL": "t@example.org",
        "GIT_COMMITTER_NAME": "T",
        "GIT_COMMITTER_EMAIL": "t@example.org",
        "HOME": str(repo),
        "PATH": "/usr/bin:/bin",
    }
    return subprocess.run(
        ["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env
    ).stdout.strip()


def write(repo: Path, rel: str, text: str) -> None:
    p = repo / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")


def commit(repo: Path, msg: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", msg)
    return git(repo, "rev-parse", "HEAD")


REFUND = (
    "# Refund runbook\n\nPayments team: reverse the charge with token snorkwell.\n" + "Step detail. " * 40
)
INTRO = "# Welcome\n\nGeneral runbook introduction, word glimbart.\n"
README = "Public readme with the word fennigal.\n"
PAGE = "<html><head><title>Status page</title></head><body><h1>Status</h1><p>word hovrack</p></body></html>"
SECRET = "# Pricing\n\nBoard only: word drisseth.\n"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    r = tmp_path / "kb-repo"
    r.mkdir()
    git(r, "init", "-q", "-b", "main")
    write(r, "runbooks/payments/refund.md", REFUND)
    write(r, "runbooks/general/intro.md", INTRO)
    write(r, "docs/public/readme.txt", README)
    write(r, "docs/public/.acl", "public\n")
    write(r, "docs/status.html", PAGE)
    write(r, "board/pricing.md", SECRET)
    write(r, "board/.acl", "# the board\ngroup:pricing-committee, user:farid\n")
    write(r, "image.png", "not a document")
    commit(r, "first")
    return r


def git_source(location: str, **git_opts: Any) -> dict[str, Any]:
    return {
        "id": "runbooks",
        "connector": "git",
        "location": location,
        "owner": "omar",
        "sensitivity": "internal",
        "permissions": {"model": "per-document"},
        "freshness": {"max_age": "7d"},
        "chunking": {"max_tokens": 64, "overlap": 8},
        "acl_rules": [
            {"path": "runbooks/**", "acl": ["group:support"]},
            {"path": "runbooks/payments/**", "acl": ["group:finance"]},
            {"path": "board/**", "acl": ["group:pricing-committee", "user:lena"]},
        ],
        "git": {
            "branch": "main",
            "acl_file": ".acl",
            "url_template": "https://git.example/kb/blob/{commit}/{path}",
            **git_opts,
        },
    }


def test_git_sync_renames_deletions_acl_and_force_push(ws: Workspace, repo: Path) -> None:
    ws.configure([git_source(repo.as_uri())])  # a clone URL: mirrored under .charter/git
    s = ws.sync()["runbooks"]
    assert (s.status, s.added, s.private_by_default) == ("succeeded", 5, 1), (
        s.as_dict()
    )  # status.html: no rule
    index = Index.for_runtime(ws.rt)
    head = git(repo, "rev-parse", "HEAD")
    canaries = {
        "runbooks/payments/refund.md": ("snorkwell", {"group:finance"}),
        "runbooks/general/intro.md": ("glimbart", {"group:support"}),
        "docs/public/readme.txt": ("fennigal", {"public"}),
        "docs/status.html": ("hovrack", {"user:omar"}),  # no rule, no file: owner only
        # rule ∩ file: the repository's file narrows the charter's grant (lena is dropped, farid not added)
        "board/pricing.md": ("drisseth", {"group:pricing-committee"}),
    }
    check_matrix(ws.rt, index, "runbooks", canaries)
    rows = {r["doc_id"]: r for r in source_documents_listing(ws.rt, "runbooks")}
    assert (
        rows["runbooks/payments/refund.md"]["url"]
        == f"https://git.example/kb/blob/{head}/runbooks/payments/refund.md"
    )
    assert (ws.base / ".charter" / "git" / "runbooks.git").is_dir()

    # a rename (moved: chunks kept), a modification, a deletion
    git(repo, "mv", "runbooks/general/intro.md", "runbooks/general/welcome.md")
    write(repo, "runbooks/payments/refund.md", REFUND + "\nNew: also notify the customer.\n")
    (repo / "docs/status.html").unlink()
    c2 = commit(repo, "second")
    before = CountingEmbedder.texts
    s = ws.sync()["runbooks"]
    assert (s.moved, s.updated, s.deleted, s.added, s.unchanged) == (1, 2, 1, 0, 2), s.as_dict()
    assert (
        CountingEmbedder.texts - before <= 3
    )  # only the refund's changed chunk(s); the move re-embeds nothing
    states = index.document_states("runbooks")
    assert "runbooks/general/welcome.md" in states and "runbooks/general/intro.md" not in states
    from sqlalchemy import select

    from charter.store.tables import source_documents

    with ws.rt.store.connect() as conn:
        versions = dict(conn.execute(select(source_documents.c.doc_id, source_documents.c.revision)).all())
        blobs = dict(conn.execute(select(source_documents.c.doc_id, source_documents.c.version)).all())
    assert versions["runbooks/payments/refund.md"] == c2
    assert blobs["docs/public/readme.txt"] == blob_hash(README.encode())

    # force-push: the branch is rewritten to a different history
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    write(repo, "runbooks/general/intro.md", INTRO + "\nRewritten history.\n")
    commit(repo, "rewritten")
    s = ws.sync()["runbooks"]
    assert s.status == "succeeded", s.as_dict()
    states = index.document_states("runbooks")
    assert set(states) == {
        "runbooks/payments/refund.md",
        "runbooks/general/intro.md",
        "docs/public/readme.txt",
        "docs/status.html",
        "board/pricing.md",
    }
    check_matrix(ws.rt, index, "runbooks", canaries)

    # an ACL file changes in the repository: --acl-only picks it up without embedding anything
    write(repo, "docs/public/.acl", "group:support\n")
    commit(repo, "restrict readme")
    before = CountingEmbedder.texts
    [s] = sync_sources(ws.rt, acl_only=True)
    assert (s.mode, s.acl_changed) == ("acl-only", 1), s.as_dict()
    assert CountingEmbedder.texts == before
    canaries["docs/public/readme.txt"] = ("fennigal", {"group:support"})
    check_matrix(ws.rt, index, "runbooks", canaries)


def test_git_local_path_reads_committed_objects_only(ws: Workspace, repo: Path) -> None:
    write(repo, "runbooks/general/draft.md", "# Draft\n\nnot committed\n")  # working tree only
    ws.configure([git_source(str(repo))])
    s = ws.sync()["runbooks"]
    assert s.added == 5 and "runbooks/general/draft.md" not in Index.for_runtime(ws.rt).document_states(
        "runbooks"
    )
    ws.configure([git_source(str(repo), branch="nope")])
    s = ws.sync()["runbooks"]
    assert s.status == "failed" and len(Index.for_runtime(ws.rt).document_states("runbooks")) == 5


def test_a_transport_that_runs_commands_is_refused(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ext::`` makes git run a command; even with a machine's git config allowing it, a source's location
    cannot use it (the connector pins the transports: http, https, ssh, git, file)."""
    marker = tmp_path / "ran"
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[protocol]\n\tallow = always\n")  # a permissive machine
    monkeypatch.setenv("HOME", str(home))
    ws.configure([git_source(f"ext::sh -c touch% {marker}% #://")])  # "://": fetched as a URL
    s = ws.sync()["runbooks"]
    assert s.status == "failed" and not marker.exists(), s.as_dict()
