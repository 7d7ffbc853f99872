"""File modes for everything Charter keeps on disk: private folders (0700) and private files (0600).

The database (and SQLite's ``-wal``/``-shm``, which SQLite creates with the database file's own mode), the
signing and sealing keys, the audit anchor, gate reports and every other file under ``.charter/`` hold
restricted text, traces or secrets. They are created private whatever the process umask is:

* :func:`private_dir` — ``mkdir`` with mode 0700 (parents too), and a folder *we* just created is chmod-ed
  0700 in case the umask widened nothing but the platform did;
* :func:`create_private_file` — create an empty file 0600 if it does not exist (the database, before SQLite
  opens it), :func:`write_private` — write bytes atomically into a 0600 file.

Existing files are never silently re-moded: :func:`wide_modes` lists what is group- or world-accessible
with the command that fixes it; ``charter check`` prints those as warnings and the launch gate fails on them.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
MAX_LISTED = 200  # files scanned under one folder before giving up (a .charter folder holds a handful)


def private_dir(path: Path | str) -> Path:
    """``path`` as a folder, created 0700 (with missing parents) if it does not exist."""
    p = Path(path)
    if p.is_dir():
        return p
    p.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    with contextlib.suppress(OSError):  # e.g. a folder owned by someone else that appeared meanwhile
        p.chmod(DIR_MODE)
    return p


def create_private_file(path: Path | str) -> None:
    """Create ``path`` empty with mode 0600 unless it exists (so that whoever fills it inherits the mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def write_private(path: Path | str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + rename), mode 0600; the folder is made 0700."""
    p = Path(path)
    private_dir(p.parent)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class WideMode:
    """A file or folder readable (or writable) by other users, and how to fix it."""

    path: str
    mode: str  # e.g. "0644"
    expected: str  # "0600" or "0700"

    @property
    def fix(self) -> str:
        return f"chmod {self.expected[1:]} {_quote(self.path)}"

    def message(self) -> str:
        return f"{self.path} is mode {self.mode} (should be {self.expected}): run `{self.fix}`"

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "mode": self.mode, "expected": self.expected, "fix": self.fix}


def _quote(path: str) -> str:
    import shlex

    return shlex.quote(path)


def _check(path: Path, out: list[WideMode]) -> None:
    try:
        st = path.lstat()
    except OSError:
        return
    if stat.S_ISLNK(st.st_mode):
        return
    expected = DIR_MODE if stat.S_ISDIR(st.st_mode) else FILE_MODE
    if stat.S_IMODE(st.st_mode) & 0o077:
        out.append(WideMode(str(path), f"{stat.S_IMODE(st.st_mode):04o}", f"{expected:04o}"))


def wide_modes(folders: Sequence[Path], files: Sequence[Path] = ()) -> list[WideMode]:
    """Every existing folder in ``folders`` (and everything under it) and file in ``files`` whose mode gives
    group or other users any access."""
    out: list[WideMode] = []
    seen: set[str] = set()
    for folder in folders:
        if not folder.is_dir():
            continue
        _check(folder, out)
        for n, (dirpath, dirnames, filenames) in enumerate(os.walk(folder)):
            if n > MAX_LISTED:
                break
            for name in sorted(dirnames) + sorted(filenames):
                p = Path(dirpath) / name
                seen.add(str(p))
                _check(p, out)
    for f in files:
        if str(f) not in seen:
            _check(f, out)
    return out


def sqlite_files(url: str) -> list[Path]:
    """The database file and its ``-wal``/``-shm`` companions of a SQLite URL (empty for other databases)."""
    path = sqlite_path(url)
    if path is None:
        return []
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///…`` URL; ``None`` for in-memory databases and other backends."""
    if not url.startswith("sqlite"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def storage_wide_modes(
    base_dir: Path, database_url: str | None, key_dir: Path | None = None
) -> list[WideMode]:
    """What ``charter check`` and the launch gate look at: ``.charter/`` beside the charter (everything in
    it), the key folder if it lives elsewhere, and a SQLite database with its ``-wal``/``-shm`` files."""
    folders = [base_dir / ".charter"]
    if key_dir is not None and not str(key_dir).startswith(str(folders[0])):
        folders.append(key_dir)
    url = database_url or f"sqlite:///{(base_dir / '.charter' / 'charter.db').resolve()}"
    return wide_modes(folders, sqlite_files(url))
