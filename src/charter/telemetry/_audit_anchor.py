"""The external anchor: a copy of the latest signed checkpoint kept beside the key, outside the database.

Someone who can write the database can delete the newest entries *and* the checkpoints that cover them;
nothing left in the database can tell. The anchor file (``audit-anchor-<db>.json`` in the key folder, one
per database URL) remembers the highest checkpoint ever written by this machine, so :func:`verify` catches
that truncation as long as the key folder itself was not rewritten. It only ever moves forward.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from charter.errors import IntegrityError
from charter.telemetry._audit_types import Checkpoint

try:  # POSIX; elsewhere concurrent anchor updates are only best effort
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]


def anchor_path(key_dir: Path, database_url: str) -> Path:
    digest = hashlib.sha256(database_url.encode("utf-8")).hexdigest()[:12]
    return key_dir / f"audit-anchor-{digest}.json"


def read_anchor(path: Path) -> Checkpoint | None:
    """The anchored checkpoint, ``None`` without an anchor; :class:`IntegrityError` if it is unreadable."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise IntegrityError(f"audit anchor {path} is unreadable: {exc}") from exc
    try:
        return Checkpoint.from_dict(json.loads(text)["checkpoint"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"audit anchor {path} is corrupt: {exc}") from exc


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def write_anchor(path: Path, checkpoint: Checkpoint, database: str) -> bool:
    """Record ``checkpoint`` unless the anchor holds a later one. False if it could not (read-only, corrupt)."""
    try:
        from charter.store._perms import private_dir

        private_dir(path.parent)
        with _locked(path):
            try:
                current = read_anchor(path)
            except IntegrityError:
                return False  # evidence of tampering: leave it for verify() to report, never overwrite it
            if current is not None and current.seq >= checkpoint.seq:
                return True
            doc = {"database": database, "checkpoint": checkpoint.to_dict()}
            tmp = path.with_name(path.name + f".tmp{os.getpid()}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(doc, fh, indent=2)
                fh.flush()
                os.fsync(fh.fileno())
            tmp.replace(path)
    except OSError:
        return False
    return True
