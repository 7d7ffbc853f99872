"""The external anchor: a copy of the latest signed checkpoint kept beside the key, outside the database.

Someone who can write the database can delete the newest entries *and* the checkpoints that cover them;
nothing left in the database can tell. The anchor file (``audit-anchor-<db>.json`` in the key folder, one
per database URL) remembers the highest checkpoint ever written by this machine, so :func:`verify` catches
that truncation as long as the key folder itself was not rewritten. It only ever moves forward.

It also records ``sealed_from``: the entry after which every entry carries a seal (written once, by the
first process that seals). Entries up to it predate seals; a missing seal after it is a forgery.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from charter.errors import IntegrityError
from charter.store import private_dir
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
        doc = json.loads(text)
        if doc["checkpoint"] is None:  # only the seal marker was recorded so far
            return None
        return Checkpoint.from_dict(doc["checkpoint"])
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"audit anchor {path} is corrupt: {exc}") from exc


def read_sealed_from(path: Path) -> int | None:
    """The seq after which every entry must carry a seal (see ``charter.telemetry.audit``); ``None`` when the
    anchor does not record it (entries written before seals existed, or no anchor yet)."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        value = doc.get("sealed_from")
    except (OSError, ValueError, AttributeError):
        return None
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def mark_sealed(path: Path, seq: int, database: str) -> bool:
    """Record once that every entry after ``seq`` is sealed (kept by later anchor updates). False if the
    anchor could not be written, or is corrupt (left for verify to report)."""
    try:
        private_dir(path.parent)
        with _locked(path):
            try:
                current = read_anchor(path)
            except IntegrityError:
                return False
            if read_sealed_from(path) is not None:
                return True
            _write(path, current, database, seq)
    except OSError:
        return False
    return True


def _write(path: Path, checkpoint: Checkpoint | None, database: str, sealed_from: int | None) -> None:
    doc = {
        "database": database,
        "checkpoint": checkpoint.to_dict() if checkpoint is not None else None,
        "sealed_from": sealed_from,
    }
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(path)


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
        from charter.store import private_dir

        private_dir(path.parent)
        with _locked(path):
            try:
                current = read_anchor(path)
            except IntegrityError:
                return False  # evidence of tampering: leave it for verify() to report, never overwrite it
            if current is not None and current.seq >= checkpoint.seq:
                return True
            _write(path, checkpoint, database, read_sealed_from(path))
    except OSError:
        return False
    return True
