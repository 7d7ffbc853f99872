"""The unsigned tail: entries after the last signed checkpoint are sealed, so rewriting them (and re-hashing the
chain, as an attacker with database access but no key can) is detected, reported and never signed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from _audit_helpers import RawDB, fill

from charter.errors import IntegrityError
from charter.store import Store
from charter.telemetry.audit import AuditLog, start_checkpointer


def _log(store: Store, key_dir: Path) -> AuditLog:
    return AuditLog(store, key_dir=key_dir, checkpoint_every=10)


def test_intact_tail_is_reported_and_checked(log: AuditLog) -> None:
    fill(log, 14)  # a checkpoint at 10, four entries after it
    result = log.verify(parallel=False)
    assert result.ok, result.reason
    assert result.last_checkpoint_seq == 10 and result.unsigned_tail == 4 and result.tail_checked
    assert result.to_dict()["unsigned_tail"] == 4


def test_forged_unsigned_tail_is_detected_and_not_signed(log: AuditLog, raw: RawDB) -> None:
    fill(log, 14)
    before = len(log.checkpoints())
    raw.execute("UPDATE audit_log SET details = ? WHERE seq = 12", ('{"i":12,"note":"nothing happened"}',))
    raw.rehash_from(12)  # the chain is internally consistent again: only the seal can tell
    result = log.verify(checkpoint=True, parallel=False)
    assert not result.ok
    assert result.first_bad_seq == 12
    assert "rewritten after the last signed checkpoint" in (result.reason or "")
    assert len(log.checkpoints()) == before, "verify must not sign a forged tail"
    with pytest.raises(IntegrityError, match="refusing to sign"):
        log.checkpoint()


def test_stripped_seals_after_the_marker_are_a_forgery(log: AuditLog, raw: RawDB) -> None:
    fill(log, 13)
    raw.execute("UPDATE audit_log SET details = ?, seal = NULL WHERE seq = 11", ('{"i":0}',))
    raw.rehash_from(11)
    result = log.verify(parallel=False)
    assert not result.ok and result.first_bad_seq == 11 and "has no seal" in (result.reason or "")


def test_automatic_checkpoint_on_append_refuses_a_forged_tail(log: AuditLog, raw: RawDB) -> None:
    fill(log, 15)
    raw.execute("UPDATE audit_log SET actor = ? WHERE seq = 13", ("someone-else",))
    raw.rehash_from(13)
    with pytest.raises(IntegrityError, match="refusing to sign"):
        fill(log, 5, start=15)  # the 20th entry would checkpoint: it must not bless entries 11..19


def test_an_auditor_without_the_private_key_is_told_the_tail_was_not_checked(
    store: Store, key_dir: Path, tmp_path: Path
) -> None:
    log = _log(store, key_dir)
    fill(log, 12)
    auditor_keys = tmp_path / "auditor-keys"
    auditor_keys.mkdir()
    (auditor_keys / "signing.pub").write_bytes((key_dir / "signing.pub").read_bytes())
    result = AuditLog(store, key_dir=auditor_keys).verify(parallel=False)
    assert result.ok and result.unsigned_tail == 2 and not result.tail_checked
    assert any("not checked against their seals" in n for n in result.notes)


def test_server_checkpointer_bounds_the_tail_in_time(log: AuditLog) -> None:
    fill(log, 3)
    assert log.checkpoints() == []
    stop = start_checkpointer(log, 0.1)
    try:
        deadline = time.monotonic() + 10
        while not log.checkpoints():
            assert time.monotonic() < deadline, "no checkpoint was signed"
            time.sleep(0.05)
    finally:
        stop.set()
    assert log.checkpoints()[-1].seq == 3
    assert log.verify(parallel=False).unsigned_tail == 0


def test_the_charter_sets_the_cadence(project: Path) -> None:
    import yaml

    from charter.runtime import Runtime

    data = yaml.safe_load(project.read_text(encoding="utf-8"))
    data.setdefault("monitoring", {})["audit"] = {"checkpoint_every": 7, "checkpoint_interval": "30s"}
    project.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    rt = Runtime.open(project)
    try:
        assert rt.audit.checkpoint_every == 7
        assert rt.spec.monitoring.audit.checkpoint_interval.total_seconds() == 30
    finally:
        rt.close()
