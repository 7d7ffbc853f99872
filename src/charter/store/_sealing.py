"""Sealing at rest: content that people must read back exactly (a draft under review, the reviewer's edit)
but that must not sit readable in the database.

Masking (``charter.telemetry``) is the rule for everything analysts read; some content cannot be masked
because it is the work product itself — the reply a reviewer approves is the reply that is sent. Such values
are *sealed*: encrypted with Fernet (AES-128-CBC + HMAC-SHA256, from ``cryptography``) under a key kept
outside the database, beside the audit signing key (``.charter/keys/sealing.key``, mode 0600), or given in
``CHARTER_SEALING_KEY`` for deployments whose workers share one database. A copy of the database alone
reveals nothing of it; losing the key loses the sealed content (back it up with the signing key).
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Protocol

from cryptography.fernet import Fernet, InvalidToken

from charter.errors import IntegrityError

PREFIX = "sealed:v1:"
_CACHE: dict[str, Sealer] = {}


class Sealer:
    """Encrypts and decrypts strings (and JSON values) under one key."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def load_or_create(cls, key_dir: Path) -> Sealer:
        env = os.environ.get("CHARTER_SEALING_KEY")
        if env:
            return cls(env.encode())
        path = key_dir / "sealing.key"
        cached = _CACHE.get(str(path))
        if cached is not None:
            return cached
        sealer = cls(create_secret_file(path, Fernet.generate_key()))
        _CACHE[str(path)] = sealer
        return sealer

    def seal(self, value: str | None) -> str | None:
        if value is None:
            return None
        return PREFIX + self._fernet.encrypt(value.encode("utf-8")).decode("ascii")

    def open(self, value: str | None) -> str | None:
        """The plain text of a sealed value; values written before sealing existed pass through."""
        if value is None or not value.startswith(PREFIX):
            return value
        try:
            return self._fernet.decrypt(value[len(PREFIX) :].encode("ascii")).decode("utf-8")
        except InvalidToken:
            raise IntegrityError(
                "sealed content cannot be opened: wrong sealing key or modified data"
            ) from None

    def seal_json(self, value: Any) -> dict[str, str]:
        return {"sealed": self.seal(json.dumps(value, ensure_ascii=False)) or ""}

    def open_json(self, value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"sealed"} and isinstance(value["sealed"], str):
            return json.loads(self.open(value["sealed"]) or "null")
        return value


def create_secret_file(path: Path, data: bytes) -> bytes:
    """Create ``path`` (mode 0600) holding ``data`` unless it exists; return what the file holds.

    Safe under races between threads and processes: the content is written to a private temporary file and
    linked into place atomically, so a reader never sees a half-written key and exactly one writer wins.
    """
    if path.exists():
        return path.read_bytes().strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another writer won; use its content
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_bytes().strip()


class _SealerSlot(Protocol):
    sealer: tuple[tuple[str | None, Path], Sealer] | None  # (key env and folder it was loaded for, it)


class SealingContext(Protocol):
    """What :func:`sealer_for` uses of a runtime (:class:`charter.runtime.Runtime`): its key folder and the
    slot of :class:`charter.runtime.Services` where the sealer is kept."""

    @property
    def key_dir(self) -> Path: ...

    @property
    def services(self) -> _SealerSlot: ...


def sealer_for(rt: SealingContext) -> Sealer:
    """The runtime's sealer (:meth:`Sealer.load_or_create` for its key folder), kept on the runtime while
    ``CHARTER_SEALING_KEY`` and the key folder stay what they were (every sealed value asks for it)."""
    which = (os.environ.get("CHARTER_SEALING_KEY"), rt.key_dir)
    kept = rt.services.sealer
    if kept is not None and kept[0] == which:
        return kept[1]
    sealer = Sealer.load_or_create(rt.key_dir)
    rt.services.sealer = (which, sealer)
    return sealer
