"""Ed25519 signing keys kept in a folder: creation, permissions, signatures, rotation."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from charter.errors import IntegrityError, NotFound
from charter.telemetry.signing import PublicKey, SigningKey, load_public_keys, verify_signature


def test_created_on_first_use_with_tight_permissions(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    key = SigningKey.load_or_create(folder)
    assert (folder.stat().st_mode & 0o777) == 0o700
    assert ((folder / "signing.key").stat().st_mode & 0o777) == 0o600
    assert SigningKey.load_or_create(folder).key_id == key.key_id  # loaded, not replaced
    raw = key.public_key.key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key.key_id == hashlib.sha256(raw).hexdigest()[:16]
    assert PublicKey.from_pem((folder / "signing.pub").read_bytes()).key_id == key.key_id


def test_sign_and_verify(tmp_path: Path) -> None:
    key = SigningKey.load_or_create(tmp_path)
    other = SigningKey.create(tmp_path / "other")
    sig = key.sign(b"launch report")
    assert verify_signature(b"launch report", sig, key.public_key)
    assert verify_signature(b"launch report", sig, key)
    assert not verify_signature(b"launch report!", sig, key.public_key)
    assert not verify_signature(b"launch report", sig, other.public_key)
    for bad in ("", "not base64!!", sig[:-4] + "AAAA", "A" * 88):
        assert not key.verify(b"launch report", bad)


def test_missing_and_broken_keys(tmp_path: Path) -> None:
    with pytest.raises(NotFound):
        SigningKey.load(tmp_path)
    (tmp_path / "signing.key").write_text("garbage")
    with pytest.raises(IntegrityError):
        SigningKey.load(tmp_path)
    assert load_public_keys(tmp_path / "nowhere") == {}


def test_rotation_keeps_old_public_keys(tmp_path: Path) -> None:
    old = SigningKey.load_or_create(tmp_path)
    sig = old.sign(b"x")
    new = SigningKey.rotate(tmp_path)
    keys = load_public_keys(tmp_path)
    assert set(keys) == {old.key_id, new.key_id}
    assert keys[old.key_id].verify(b"x", sig)
    assert SigningKey.load(tmp_path).key_id == new.key_id
