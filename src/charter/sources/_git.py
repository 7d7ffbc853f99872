"""The ``git`` connector: Markdown, text and HTML files of one branch of a Git repository.

``location`` is a local repository path or a clone URL; ``git.branch`` the branch. A URL (or ``file://``)
is mirrored into ``<charter folder>/.charter/git/<source id>.git`` and fetched with a forced refspec
on every sync, so a force-pushed branch is followed, not refused. A local path is read in place from
its committed objects (never the working tree).

We drive the ``git`` command line (``ls-tree``, ``diff-tree``, ``cat-file --batch``) rather than dulwich or
GitPython: it is already on every machine that has repositories, speaks every transport and credential
helper the operator configured, and ``cat-file --batch`` streams blobs faster than a pure-Python reader;
GitPython would wrap the same commands with another dependency.

* A document's ``version`` is its **blob hash**; ``revision`` is the commit it was read at (for citations;
  ``git.url_template`` may also put it in the document URL).
* **Incremental**: after a successful sync the commit is saved. The next sync lists the new tree
  (``ls-tree``, cheap), reads only blobs whose hash changed, and asks ``diff-tree -M`` between the two
  commits for renames, which become moves (the indexed chunks follow; nothing is re-embedded). The saved
  commit need not be an ancestor: after a force-push the diff is still between the two trees; if the old
  commit is gone the sync compares blob hashes only (renames then look like delete + add).
* **ACL**: the last charter ``acl_rules`` entry whose glob matches the path, and/or the nearest per-folder
  ACL file (``git.acl_file``); when both apply only the tokens in both are kept (a file in the repository
  can narrow what the charter grants, never widen it). No rule and no file: no ACL (private by default
  under the ``per-document`` model).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from charter.documents import Document
from charter.sources._acl import AclParseError, glob_match, parse_acl_file, rule_acl
from charter.sources._connector import (
    AclEntry,
    ConnectorContext,
    Failed,
    Item,
    Moved,
    SourceUnavailable,
    Unchanged,
    connector,
)
from charter.sources._extract import (
    ExtractionError,
    decode_text,
    first_heading,
    html_to_text,
    split_front_matter,
)
from charter.spec import GitOptions

FORMATS = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".html": "html", ".htm": "html"}
_BRANCH = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")
GIT_TIMEOUT = 600


class _GitError(Exception):
    pass


def _git(repo: Path | None, *args: str, input: bytes | None = None, check: bool = True) -> bytes:
    cmd = ["git"] + (["-C", str(repo)] if repo is not None else []) + list(args)
    # The transports a source may use, whatever the machine's git config says: never ``ext::`` (which runs
    # a command) or ``fd::``.
    env = {
        **os.environ,
        "GIT_TERMINAL_PROMPT": "0",
        "LC_ALL": "C",
        "GIT_ALLOW_PROTOCOL": "http:https:ssh:git:file",
    }
    try:
        p = subprocess.run(cmd, input=input, capture_output=True, timeout=GIT_TIMEOUT, env=env, check=False)
    except FileNotFoundError:
        raise _GitError("the git command is not installed (apt-get install git)") from None
    except subprocess.TimeoutExpired:
        raise _GitError(f"git {args[0]} timed out after {GIT_TIMEOUT}s") from None
    if check and p.returncode != 0:
        raise _GitError(f"git {args[0]} failed: {p.stderr.decode('utf-8', 'replace').strip()[:300]}")
    return p.stdout


@dataclass(frozen=True)
class _Entry:
    path: str
    blob: str
    size: int


class _Blobs:
    """``git cat-file --batch``: one process streams every blob we read."""

    def __init__(self, repo: Path) -> None:
        self.proc = subprocess.Popen(
            ["git", "-C", str(repo), "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def read(self, blob: str) -> bytes:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(blob.encode() + b"\n")
        self.proc.stdin.flush()
        header = self.proc.stdout.readline().split()
        if len(header) < 3 or header[1] == b"missing":
            raise _GitError(f"blob {blob} is missing")
        data = self.proc.stdout.read(int(header[2]))
        self.proc.stdout.read(1)
        return data

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


@connector("git")
class GitConnector:
    """Markdown/text/HTML files of a Git branch; blob hash = version; renames are moves."""

    def _opts(self, ctx: ConnectorContext) -> GitOptions:
        return ctx.source.git or GitOptions()

    def _repo(self, ctx: ConnectorContext) -> tuple[Path, str]:
        """The repository to read and the commit id of the branch (fetched first for a URL)."""
        opts = self._opts(ctx)
        sid = ctx.source.id
        if not _BRANCH.match(opts.branch) or ".." in opts.branch or opts.branch.startswith("-"):
            raise SourceUnavailable(f"source {sid!r}: invalid branch name {opts.branch!r}")
        loc = ctx.source.location
        try:
            if "://" in loc or re.match(r"^[\w.-]+@[\w.-]+:", loc):
                mirror = ctx.base_dir / ".charter" / "git" / f"{sid}.git"
                if not (mirror / "HEAD").exists():
                    mirror.parent.mkdir(parents=True, exist_ok=True)
                    _git(None, "init", "--bare", "--quiet", str(mirror))
                _git(
                    mirror,
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--",
                    loc,
                    f"+refs/heads/{opts.branch}:refs/heads/{opts.branch}",
                )
                repo = mirror
            else:
                repo = Path(loc) if Path(loc).is_absolute() else ctx.base_dir / loc
                if not repo.exists():
                    raise SourceUnavailable(f"source {sid!r}: repository not found: {repo}")
            commit = _git(repo, "rev-parse", "--verify", "--quiet", f"refs/heads/{opts.branch}^{{commit}}")
        except _GitError as exc:
            raise SourceUnavailable(f"source {sid!r}: {exc}") from None
        return repo, commit.decode().strip()

    def _tree(self, ctx: ConnectorContext, repo: Path, commit: str) -> tuple[list[_Entry], dict[str, str]]:
        """Document files (by include globs) and ACL files (folder -> blob) of ``commit``."""
        opts = self._opts(ctx)
        out = _git(repo, "ls-tree", "-r", "-l", "-z", "--full-tree", commit)
        docs: list[_Entry] = []
        acl_files: dict[str, str] = {}
        for rec in out.split(b"\0"):
            if not rec:
                continue
            meta, _, raw_path = rec.partition(b"\t")
            mode, kind, blob, size = meta.split()
            if kind != b"blob" or mode == b"120000":  # no symlinks: they could point anywhere
                continue
            path = raw_path.decode("utf-8", "surrogateescape")
            pp = PurePosixPath(path)
            if opts.acl_file and pp.name == opts.acl_file:
                acl_files[str(pp.parent) if str(pp.parent) != "." else ""] = blob.decode()
                continue
            if pp.suffix.lower() not in FORMATS:
                continue
            if any(part.startswith(".") for part in pp.parts):
                continue
            if not any(glob_match(g, path) for g in opts.include):
                continue
            docs.append(_Entry(path, blob.decode(), int(size) if size.isdigit() else 0))
        docs.sort(key=lambda e: e.path)
        return docs, acl_files

    def _acl_resolver(self, ctx: ConnectorContext, blobs: _Blobs, acl_files: dict[str, str]) -> _AclResolver:
        parsed: dict[str, tuple[frozenset[str] | None, str | None]] = {}
        for folder, blob in acl_files.items():
            try:
                parsed[folder] = (parse_acl_file(decode_text(blobs.read(blob))), None)
            except (AclParseError, ExtractionError) as exc:  # not parseable, or not text: fail closed
                parsed[folder] = (None, f"{folder or '.'}/{self._opts(ctx).acl_file}: {exc}")
            except _GitError as exc:
                parsed[folder] = (None, str(exc))
        return _AclResolver(ctx, parsed)

    def count(self, ctx: ConnectorContext) -> int | None:
        return None  # listing needs the fetch; the bar counts up instead

    def documents(self, ctx: ConnectorContext) -> Iterator[Item]:
        repo, commit = self._repo(ctx)
        opts = self._opts(ctx)
        try:
            entries, acl_files = self._tree(ctx, repo, commit)
        except _GitError as exc:
            raise SourceUnavailable(f"source {ctx.source.id!r}: {exc}") from None
        renames = self._renames(repo, (ctx.cursor or {}).get("commit"), commit, ctx)
        blobs = _Blobs(repo)
        try:
            acls = self._acl_resolver(ctx, blobs, acl_files)
            for e in entries:
                acl, acl_error = acls.acl(e.path)
                old = renames.get(e.path)
                if ctx.known.get(e.path) == e.blob and ctx.known and old is None:
                    yield Unchanged(e.path, acl, acl_error, acl_known=True)
                    continue
                if e.size > ctx.max_bytes:
                    yield Failed(e.path, f"file too large: {e.size} bytes (limit {ctx.max_bytes})")
                    continue
                try:
                    doc = self._read(ctx, blobs, e, commit, acl, acl_error, opts)
                except _GitError as exc:
                    yield Failed(e.path, str(exc))
                    continue
                if old is not None and old in ctx.known and e.path not in ctx.known:
                    yield Moved(old, doc)
                else:
                    yield doc
        finally:
            blobs.close()
        ctx.new_cursor = {"commit": commit}

    def _renames(self, repo: Path, old: str | None, new: str, ctx: ConnectorContext) -> dict[str, str]:
        """new path -> old path for the renames Git detects between the saved commit and ``new``."""
        if not old or old == new or not re.fullmatch(r"[0-9a-f]{40,64}", old):
            return {}
        try:
            _git(repo, "cat-file", "-e", f"{old}^{{commit}}")
        except _GitError:
            return {}  # the old commit is gone (force-push + gc): compare blob hashes only
        out = _git(repo, "diff-tree", "-r", "-M", "-z", "--name-status", old, new)
        parts = out.split(b"\0")
        renames: dict[str, str] = {}
        i = 0
        while i < len(parts):
            status = parts[i].decode()
            if not status:
                i += 1
                continue
            if status.startswith(("R", "C")):
                src, dst = (
                    parts[i + 1].decode("utf-8", "surrogateescape"),
                    parts[i + 2].decode("utf-8", "surrogateescape"),
                )
                if status.startswith("R"):
                    renames[dst] = src
                i += 3
            else:
                i += 2
        return renames

    def _read(
        self,
        ctx: ConnectorContext,
        blobs: _Blobs,
        e: _Entry,
        commit: str,
        acl: frozenset[str] | None,
        acl_error: str | None,
        opts: GitOptions,
    ) -> Document:
        data = blobs.read(e.blob)
        fmt = FORMATS[PurePosixPath(e.path).suffix.lower()]
        title: str | None = None
        url: str | None = None
        if fmt == "html":
            html = html_to_text(data)
            text, title = html.text, html.title
        else:
            text = split_front_matter(decode_text(data)).body if fmt == "markdown" else decode_text(data)
            title = first_heading(text) if fmt == "markdown" else None
        if opts.url_template:
            url = opts.url_template.replace("{commit}", commit).replace("{path}", e.path)
            url = url.replace("{branch}", opts.branch)
        return ctx.document(
            doc_id=e.path,
            title=title or PurePosixPath(e.path).stem.replace("-", " ").replace("_", " "),
            text=text,
            format=fmt,
            url=url,
            acl=acl,
            acl_error=acl_error,
            version=e.blob,
            revision=commit,
        )

    def acls(self, ctx: ConnectorContext) -> Iterator[AclEntry]:
        """Current ACL per file at the branch head: a tree listing and the ACL files, no document reads."""
        repo, commit = self._repo(ctx)
        try:
            entries, acl_files = self._tree(ctx, repo, commit)
        except _GitError as exc:
            raise SourceUnavailable(f"source {ctx.source.id!r}: {exc}") from None
        blobs = _Blobs(repo)
        try:
            acls = self._acl_resolver(ctx, blobs, acl_files)
        finally:
            blobs.close()
        for e in entries:
            acl, err = acls.acl(e.path)
            yield AclEntry(e.path, acl, err)


class _AclResolver:
    def __init__(self, ctx: ConnectorContext, files: dict[str, tuple[frozenset[str] | None, str | None]]):
        self.rules = ctx.source.acl_rules
        self.files = files

    def acl(self, path: str) -> tuple[frozenset[str] | None, str | None]:
        rule = rule_acl(self.rules, path)
        file_acl: tuple[frozenset[str] | None, str | None] | None = None
        parent = PurePosixPath(path).parent
        for folder in [parent, *parent.parents]:
            key = "" if str(folder) == "." else str(folder)
            if key in self.files:
                file_acl = self.files[key]
                break
        if file_acl is not None and file_acl[0] is None:
            return None, file_acl[1]  # an unreadable ACL file: fail closed
        if rule is not None and file_acl is not None:
            both = rule & (file_acl[0] or frozenset())
            if not both:
                return None, "the charter's acl_rules and the folder's ACL file share no token"
            return both, None
        if rule is not None:
            return rule, None
        if file_acl is not None:
            return file_acl[0], None
        return None, "no acl_rules entry or ACL file covers this path"


def blob_hash(data: bytes) -> str:
    """Git's blob id of ``data`` (SHA-1 object format), for tests and tools."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()
