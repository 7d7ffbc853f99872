"""Ed25519 signing keys kept outside the database: audit checkpoints today, launch-gate reports later.

A key lives in a folder (by default ``.charter/keys/`` beside the charter) as two files:

* ``signing.key`` — the private key (PKCS#8 PEM, unencrypted), mode ``0600``; the folder is ``0700``;
* ``signing.pub`` — the public key (SubjectPublicKeyInfo PEM). Anything signed can be verified with this file
  alone, so auditors need no access to the private key.

Retired public keys stay verifiable: :meth:`SigningKey.rotate` renames ``signing.pub`` to ``<key_id>.pub``,
and :func:`load_public_keys` reads every ``*.pub`` in the folder. ``key_id`` is the first 16 hex digits of the
SHA-256 of the raw 32-byte public key. Signatures are base64 (standard alphabet) text.

Example::

    key = SigningKey.load_or_create(key_dir)
    sig = key.sign(b"report bytes")
    assert verify_signature(b"report bytes", sig, key.public_key)
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from charter.errors import IntegrityError, NotFound
from charter.store import private_dir, write_private

PRIVATE_KEY_FILE = "signing.key"
PUBLIC_KEY_FILE = "signing.pub"


def _key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    """A public key that checks signatures; ``key_id`` names it in signed records."""

    key: Ed25519PublicKey
    key_id: str

    @classmethod
    def from_pem(cls, data: bytes) -> PublicKey:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise IntegrityError(f"not a PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise IntegrityError("public key is not an Ed25519 key")
        return cls(key, _key_id(key))

    def to_pem(self) -> bytes:
        return self.key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, data: bytes, signature: str) -> bool:
        """True when ``signature`` (base64) is this key's signature over ``data``; never raises."""
        try:
            raw = base64.b64decode(signature.encode("ascii"), validate=True)
            self.key.verify(raw, data)
        except (InvalidSignature, binascii.Error, ValueError, UnicodeEncodeError, AttributeError):
            return False
        return True


class SigningKey:
    """An Ed25519 private key stored in ``key_dir``. Create with :meth:`load_or_create` or :meth:`load`."""

    def __init__(self, private: Ed25519PrivateKey, key_dir: Path | None = None) -> None:
        self._private = private
        self.public_key = PublicKey(private.public_key(), _key_id(private.public_key()))
        self.key_id = self.public_key.key_id
        self.key_dir = key_dir

    # ------------------------------------------------------------------------------ loading
    @staticmethod
    def exists(key_dir: Path | str) -> bool:
        return (Path(key_dir) / PRIVATE_KEY_FILE).is_file()

    @classmethod
    def load(cls, key_dir: Path | str) -> SigningKey:
        """Load the private key; :class:`NotFound` when there is none."""
        path = Path(key_dir) / PRIVATE_KEY_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(f"no signing key at {path}") from exc
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise IntegrityError(f"signing key {path} is unreadable: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise IntegrityError(f"signing key {path} is not an Ed25519 key")
        return cls(key, Path(key_dir))

    @classmethod
    def create(cls, key_dir: Path | str) -> SigningKey:
        """Create a new key in ``key_dir`` (0700); refuses to overwrite an existing private key."""
        folder = private_dir(key_dir)
        with contextlib.suppress(OSError):
            folder.chmod(0o700)
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path = folder / PRIVATE_KEY_FILE
        try:
            # O_EXCL: two processes creating the key at once cannot both win; the loser loads the winner's.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls.load(folder)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
            fh.flush()
            os.fsync(fh.fileno())
        key = cls(private, folder)
        _write_public(folder / PUBLIC_KEY_FILE, key.public_key)
        return key

    @classmethod
    def load_or_create(cls, key_dir: Path | str) -> SigningKey:
        """The key in ``key_dir``, created (0600, folder 0700) on first use."""
        if cls.exists(key_dir):
            key = cls.load(key_dir)
            pub = Path(key_dir) / PUBLIC_KEY_FILE
            if not pub.exists():
                _write_public(pub, key.public_key)
            return key
        return cls.create(key_dir)

    @classmethod
    def rotate(cls, key_dir: Path | str) -> SigningKey:
        """Retire the current key (its public half stays as ``<key_id>.pub``) and create a new one."""
        folder = Path(key_dir)
        old = cls.load(folder)
        _write_public(folder / f"{old.key_id}.pub", old.public_key)
        (folder / PRIVATE_KEY_FILE).unlink()
        (folder / PUBLIC_KEY_FILE).unlink(missing_ok=True)
        return cls.create(folder)

    # ------------------------------------------------------------------------------ use
    def sign(self, data: bytes) -> str:
        """The base64 Ed25519 signature over ``data``."""
        return base64.b64encode(self._private.sign(data)).decode("ascii")

    def verify(self, data: bytes, signature: str) -> bool:
        return self.public_key.verify(data, signature)

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.key_id!r})"


def _write_public(path: Path, public: PublicKey) -> None:
    write_private(path, public.to_pem())  # 0600 like everything under .charter/ (export it to share it)


def load_public_keys(key_dir: Path | str) -> dict[str, PublicKey]:
    """Every public key in ``key_dir`` by key id: ``signing.pub``, retired ``*.pub``, or the private key's."""
    folder = Path(key_dir)
    keys: dict[str, PublicKey] = {}
    if not folder.is_dir():
        return keys
    for path in sorted(folder.glob("*.pub")):
        try:
            pk = PublicKey.from_pem(path.read_bytes())
        except (IntegrityError, OSError):
            continue
        keys[pk.key_id] = pk
    if SigningKey.exists(folder):
        try:
            own = SigningKey.load(folder).public_key
            keys.setdefault(own.key_id, own)
        except IntegrityError:
            pass
    return keys


def verify_signature(data: bytes, signature: str, public_key: PublicKey | SigningKey) -> bool:
    """True when ``signature`` over ``data`` was made by ``public_key``'s private half."""
    pk = public_key.public_key if isinstance(public_key, SigningKey) else public_key
    return pk.verify(data, signature)


__all__ = [
    "PRIVATE_KEY_FILE",
    "PUBLIC_KEY_FILE",
    "PublicKey",
    "SigningKey",
    "load_public_keys",
    "verify_signature",
]
