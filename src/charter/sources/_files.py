"""The one safe way for a connector to read a local file: :func:`read_source_file`.

Every connector that reads files (``folder``, ``jsonl``, sidecars, and any connector added later — SQL dumps,
Git checkouts, crawled pages saved to disk) calls :func:`read_source_file` or :func:`open_source_file`
instead of ``open``/``Path.read_bytes``. The rule, in one place:

* **Regular files only.** The path is ``lstat``-ed first; FIFOs, sockets, character and block devices
  (``/dev/zero``, a named pipe left in the folder) are refused *without opening them*, so nothing blocks
  and no device is touched. The file is then opened ``O_RDONLY | O_NONBLOCK | O_NOFOLLOW`` and ``fstat``-ed
  again: it must still be a regular file and the very inode that was checked (a swap between the check
  and the open is refused, not followed).
* **Symlinks stay inside the root.** A symlink is followed only when its fully resolved target lies inside
  ``root`` (the source's own folder, itself resolved); anything else (``leaked.md -> ../../.charter/keys/…``,
  ``/etc/passwd``, a document of another source) raises :class:`FileRefused`. ``root=None`` (a source that
  *is* one file, such as ``jsonl``) still requires a regular file.
* **Sizes are enforced on bytes actually read**, never on ``st_size`` alone (``/proc`` files and growing
  files report less than they hold): at most ``max_bytes + 1`` bytes are read, and more is an error.

:class:`FileRefused` (a policy refusal: the sync reports it and removes any version indexed earlier) and
:class:`~charter.sources._extract.ExtractionError` (too large: that document fails, its previous version is
kept) are both subclasses of ``ExtractionError``, so connectors that already turn that into
:class:`~charter.sources.Failed` need no other handling.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from charter.sources._extract import ExtractionError

_O_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)
_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISDIR, "a folder"),
)


class FileRefused(ExtractionError):
    """The file is refused by the safe-read rule (not a regular file, or a symlink leaving the root)."""


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _inside(target: str, root: str) -> bool:
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


def check_source_file(path: Path | str, root: Path | str | None) -> tuple[str, os.stat_result]:
    """``(real path, stat)`` of a readable regular file under ``root``, or :class:`FileRefused`.

    Nothing is opened. ``FileNotFoundError`` (vanished, or a dangling symlink) passes through.
    """
    p = os.fspath(path)
    st = os.lstat(p)
    real = p
    if stat.S_ISLNK(st.st_mode):
        real = os.path.realpath(p)
        if root is not None and not _inside(real, os.path.realpath(os.fspath(root))):
            raise FileRefused("refused: a symlink to a file outside the source folder")
        st = os.stat(real)
    if not stat.S_ISREG(st.st_mode):
        raise FileRefused(f"refused: {_kind(st.st_mode)}, not a regular file")
    return real, st


@contextlib.contextmanager
def open_source_file(path: Path | str, root: Path | str | None) -> Iterator[tuple[BinaryIO, os.stat_result]]:
    """Open a file under the safe-read rule (see the module docstring): ``(binary file, fstat)``.

    For line-by-line readers; the caller must still bound what it reads (e.g. ``readline(limit)``)."""
    real, checked = check_source_file(path, root)
    try:
        fd = os.open(real, _O_FLAGS)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise FileRefused("refused: the file was replaced by a symlink while being read") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (checked.st_dev, checked.st_ino):
            raise FileRefused("refused: the file changed between its check and its opening")
        with contextlib.suppress(OSError):  # back to blocking reads: a regular file never blocks anyway
            os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with fh:
        yield fh, st


def read_source_file(
    path: Path | str, root: Path | str | None, max_bytes: int
) -> tuple[bytes, os.stat_result]:
    """The whole file under the safe-read rule, at most ``max_bytes`` bytes actually read.

    Raises :class:`FileRefused` (not a regular file, symlink leaving ``root``) or
    :class:`~charter.sources._extract.ExtractionError` (``file too large``)."""
    with open_source_file(path, root) as (fh, st):
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ExtractionError(f"file too large: more than {max_bytes} bytes (limit {max_bytes})")
    return data, st
