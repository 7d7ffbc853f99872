"""The audit chain: appending, checkpoints, and detection of every kind of tampering (raw SQL).

Every test that touches the database runs on SQLite and on PostgreSQL (``db_url``, ``tests/_pg.py``)."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from _audit_helpers import RawDB, canonical, fill

import charter.telemetry.audit as audit_module
from charter.errors import IntegrityError, UsageError
from charter.store import Store, open_store
from charter.telemetry import _audit_verify
from charter.telemetry.audit import AuditEntry, AuditEvent, AuditLog
from charter.telemetry.signing import SigningKey, load_public_keys


def test_exported_names() -> None:
    assert set(audit_module.__all__) == {
        "DEFAULT_CHECKPOINT_EVERY",
        "DEFAULT_CHECKPOINT_SECONDS",
        "start_checkpointer",
        "PG_LOCK_KEY",
        "AuditEntry",
        "AuditEvent",
        "AuditLog",
        "Checkpoint",
        "VerifyResult",
    }


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """The audit tests' database on this test's backend (overrides the SQLite-only telemetry fixture)."""
    st = open_store(db_url)
    yield st
    st.dispose()


@pytest.fixture
def raw(db_url: str) -> RawDB:
    return RawDB(db_url)


# ------------------------------------------------------------------------------------------- appending
def test_append_builds_a_chain_with_the_documented_hash(log: AuditLog, raw: RawDB) -> None:
    first = log.append(
        actor="ana",
        action="token.used",
        resource="workflow:billing-support",
        outcome="allowed",
        details={"token_id": "t1", "z": [1, "é"], "a": {"b": None}},
    )
    second = log.append(
        actor="omar", action="charter.changed", resource="workflow:billing-support", outcome="recorded"
    )
    assert isinstance(first, AuditEntry)
    assert (first.seq, second.seq) == (1, 2)
    assert first.prev_hash == "0" * 64
    assert second.prev_hash == first.hash
    assert second.details == {}
    assert first.ts.tzinfo is not None and first.ts <= second.ts
    stored = raw.row(1)
    assert stored["ts"] == first.ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert stored["details"] == '{"a":{"b":null},"token_id":"t1","z":[1,"é"]}'
    record = {k: stored[k] for k in ("seq", "ts", "actor", "action", "resource", "outcome", "prev_hash")}
    record["details"] = json.loads(str(stored["details"]))
    assert hashlib.sha256(canonical(record).encode()).hexdigest() == stored["hash"] == first.hash


def test_append_many_is_one_batch_and_verifies(log: AuditLog) -> None:
    entries = log.append_many(
        [
            AuditEvent("a", "x.y", "r", "ok", {"i": 1}),
            {"actor": "b", "action": "x.z", "resource": "r", "outcome": "ok"},
        ]
    )
    assert [e.seq for e in entries] == [1, 2]
    assert entries[1].prev_hash == entries[0].hash
    assert log.append_many([]) == []
    result = log.verify()
    assert result.ok and result.entries_verified == 2 and result.head_hash == entries[1].hash


def test_a_transaction_appends_a_batch_with_its_own_writes_or_nothing(log: AuditLog) -> None:
    with log.transaction() as tx:
        entries = tx.append_many(
            [
                {"actor": "a", "action": "x.y", "resource": "r", "outcome": "ok", "details": {"i": 1}},
                {"actor": "b", "action": "x.z", "resource": "r", "outcome": "ok"},
            ]
        )
        assert tx.append_many([]) == []
    assert [e.seq for e in entries] == [1, 2] and entries[1].prev_hash == entries[0].hash
    with pytest.raises(RuntimeError), log.transaction() as tx:
        tx.append_many([{"actor": "c", "action": "x.w", "resource": "r", "outcome": "ok"}])
        raise RuntimeError("the caller's own write failed")
    assert [e.action for e in log.tail()] == ["x.y", "x.z"]  # rolled back with the caller
    assert log.verify().ok


def test_empty_log_verifies(log: AuditLog) -> None:
    result = log.verify()
    assert result.ok and result.entries_verified == 0 and result.head_seq == 0
    assert log.checkpoint() is None
    assert log.tail() == [] and log.head() is None


def test_tail_filters_by_action_and_keeps_order(log: AuditLog) -> None:
    fill(log, 9)
    tail = log.tail(3)
    assert [e.seq for e in tail] == [7, 8, 9]
    denied = log.tail(2, action="policy.denied")
    assert [e.seq for e in denied] == [7, 9] and all(e.action == "policy.denied" for e in denied)
    assert log.tail(0) == []
    assert log.tail(5)[0].to_dict()["ts"].endswith("Z")


def test_timestamps_never_go_backwards(log: AuditLog, raw: RawDB) -> None:
    fill(log, 2)
    future = "2999-01-01T00:00:00.000000Z"
    raw.execute("UPDATE audit_log SET ts = ? WHERE seq = 2", (future,))
    raw.rehash_from(2)
    entry = log.append(actor="a", action="b", resource="c", outcome="d")
    assert entry.ts == datetime(2999, 1, 1, tzinfo=UTC)


# ------------------------------------------------------------------------------------------- checkpoints
def test_checkpoints_every_n_entries_signed_with_a_key_outside_the_db(log: AuditLog, key_dir: Path) -> None:
    fill(log, 25)
    cps = log.checkpoints()
    assert [c.seq for c in cps] == [10, 20]
    key = SigningKey.load(key_dir)
    assert all(c.key_id == key.key_id and key.verify(c.message(), c.signature) for c in cps)
    assert (key_dir.stat().st_mode & 0o777) == 0o700
    assert ((key_dir / "signing.key").stat().st_mode & 0o777) == 0o600
    result = log.verify()
    assert result.ok and result.checkpoints_verified == 2 and result.last_checkpoint_seq == 20
    assert result.anchor_seq == 20
    assert any("after the last signed checkpoint" in n for n in result.notes)


def test_checkpoint_on_demand_and_on_verify(log: AuditLog) -> None:
    fill(log, 13)
    cp = log.checkpoint()
    assert cp is not None and cp.seq == 13
    assert log.checkpoint() == cp  # idempotent at the same head
    fill(log, 2, start=13)
    result = log.verify(checkpoint=True)
    assert result.ok and result.last_checkpoint_seq == 15
    assert [c.seq for c in log.checkpoints()] == [10, 13, 15]
    log.close()  # nothing new: no extra checkpoint
    assert len(log.checkpoints()) == 3


def test_close_signs_an_unsigned_head(log: AuditLog, raw: RawDB) -> None:
    fill(log, 13)
    log.close()
    assert [c.seq for c in log.checkpoints()] == [10, 13]
    raw.execute("DELETE FROM audit_log WHERE seq > 11")
    assert log.verify().first_bad_seq == 12


def test_batch_crossing_a_boundary_checkpoints_its_head(log: AuditLog) -> None:
    log.append_many([AuditEvent("a", "b", "c", "d")] * 25)
    assert [c.seq for c in log.checkpoints()] == [25]
    assert log.verify().ok


# ------------------------------------------------------------------------------------------- tampering
Tamper = Callable[[RawDB, Path], None]


def _flip_hash_byte(raw: RawDB, _: Path) -> None:
    h = str(raw.row(7)["hash"])
    flipped = h[:10] + ("0" if h[10] != "0" else "1") + h[11:]
    raw.execute("UPDATE audit_log SET hash = ? WHERE seq = 7", (flipped,))


def _modify_actor(raw: RawDB, _: Path) -> None:
    raw.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 5")


def _modify_details(raw: RawDB, _: Path) -> None:
    raw.execute("UPDATE audit_log SET details = replace(details, '\"i\":4', '\"i\":44') WHERE seq = 5")


def _modify_ts(raw: RawDB, _: Path) -> None:
    raw.execute("UPDATE audit_log SET ts = replace(ts, '.', ',') WHERE seq = 12")


def _delete_row(raw: RawDB, _: Path) -> None:
    raw.execute("DELETE FROM audit_log WHERE seq = 5")


def _swap_rows(raw: RawDB, _: Path) -> None:
    a, b = raw.row(4), raw.row(6)
    cols = [c for c in a if c != "seq"]
    for src, dst in ((b, 4), (a, 6)):
        raw.execute(
            f"UPDATE audit_log SET {', '.join(f'{c} = ?' for c in cols)} WHERE seq = ?",
            (*[src[c] for c in cols], dst),
        )


def _insert_forged_row(raw: RawDB, _: Path) -> None:
    # Make room after 12, then insert a well-formed entry that links correctly to 12.
    raw.execute("UPDATE audit_log SET seq = seq + 1000 WHERE seq > 12")
    raw.execute("UPDATE audit_log SET seq = seq - 999 WHERE seq > 1000")
    prev = raw.row(12)
    record = {
        "seq": 13,
        "ts": prev["ts"],
        "actor": "mallory",
        "action": "refund.approved",
        "resource": "invoice:9",
        "outcome": "allowed",
        "details": {},
        "prev_hash": prev["hash"],
    }
    digest = hashlib.sha256(canonical(record).encode()).hexdigest()
    raw.execute(
        "INSERT INTO audit_log (seq, ts, actor, action, resource, outcome, details, prev_hash, hash) VALUES (13, ?, 'mallory', 'refund.approved', 'invoice:9', 'allowed', "
        "'{}', ?, ?)",
        (prev["ts"], prev["hash"], digest),
    )


def _append_forged_bad_hash(raw: RawDB, _: Path) -> None:
    last = raw.row(25)
    raw.execute(
        "INSERT INTO audit_log (seq, ts, actor, action, resource, outcome, details, prev_hash, hash) VALUES (26, ?, 'mallory', 'x', 'y', 'z', '{}', ?, ?)",
        (last["ts"], last["hash"], "f" * 64),
    )


def _insert_row_before_the_chain(raw: RawDB, _: Path) -> None:
    first = raw.row(1)
    raw.execute(
        "INSERT INTO audit_log (seq, ts, actor, action, resource, outcome, details, prev_hash, hash) VALUES (0, ?, 'mallory', 'x', 'y', 'z', '{}', ?, ?)",
        (first["ts"], "0" * 64, first["prev_hash"]),
    )


def _truncate_below_checkpoint(raw: RawDB, _: Path) -> None:
    raw.execute("DELETE FROM audit_log WHERE seq > 15")


def _truncate_and_drop_checkpoints(raw: RawDB, _: Path) -> None:
    raw.execute("DELETE FROM audit_log WHERE seq > 15")
    raw.execute("DELETE FROM audit_checkpoints WHERE seq > 15")


def _rewrite_and_rehash(raw: RawDB, _: Path) -> None:
    raw.execute("UPDATE audit_log SET outcome = 'escalated' WHERE seq = 4")
    raw.rehash_from(4)


def _rewrite_rehash_and_drop_checkpoints(raw: RawDB, _: Path) -> None:
    _rewrite_and_rehash(raw, _)
    raw.execute("DELETE FROM audit_checkpoints")


def _corrupt_signature(raw: RawDB, _: Path) -> None:
    sig = str(raw.execute("SELECT signature FROM audit_checkpoints WHERE seq = 10")[0][0])
    raw.execute(
        "UPDATE audit_checkpoints SET signature = ? WHERE seq = 10",
        (("A" if sig[0] != "A" else "B") + sig[1:],),
    )


def _forge_checkpoint_head(raw: RawDB, _: Path) -> None:
    _rewrite_and_rehash(raw, _)
    new_head = raw.row(10)["hash"]
    raw.execute("UPDATE audit_checkpoints SET head_hash = ? WHERE seq = 10", (new_head,))


def _delete_key(_: RawDB, key_dir: Path) -> None:
    shutil.rmtree(key_dir)


def _corrupt_anchor(_: RawDB, key_dir: Path) -> None:
    for anchor in key_dir.glob("audit-anchor-*.json"):
        anchor.write_text("{not json")


def _non_monotonic_ts(raw: RawDB, _: Path) -> None:
    raw.execute("UPDATE audit_log SET ts = '2000-01-01T00:00:00.000000Z' WHERE seq = 3")
    raw.rehash_from(3)


TAMPERS: dict[str, tuple[Tamper, int, str]] = {
    # name: (tamper, first bad seq, words in the reason)
    "flip-one-byte-of-a-hash": (_flip_hash_byte, 7, "stored hash"),
    "modify-a-field": (_modify_actor, 5, "stored hash"),
    "modify-details": (_modify_details, 5, "stored hash"),
    "modify-timestamp": (_modify_ts, 12, "stored hash"),
    "delete-a-row": (_delete_row, 5, "missing"),
    "swap-two-rows": (_swap_rows, 4, "stored hash"),
    "insert-a-forged-row": (_insert_forged_row, 14, "stored hash"),
    "append-a-row-with-a-bad-hash": (_append_forged_bad_hash, 26, "stored hash"),
    "insert-a-row-before-the-chain": (_insert_row_before_the_chain, 0, "impossible seq"),
    "truncate-below-a-checkpoint": (_truncate_below_checkpoint, 16, "truncated"),
    "truncate-and-drop-its-checkpoints": (_truncate_and_drop_checkpoints, 16, "anchor file"),
    "rewrite-and-rehash-without-key": (_rewrite_and_rehash, 1, "rewritten"),
    "rewrite-rehash-drop-checkpoints": (_rewrite_rehash_and_drop_checkpoints, 1, "anchor file"),
    "corrupt-a-checkpoint-signature": (_corrupt_signature, 10, "invalid signature"),
    "forge-a-checkpoint-head": (_forge_checkpoint_head, 10, "invalid signature"),
    "delete-the-key": (_delete_key, 10, "not in the key folder"),
    "corrupt-the-anchor": (_corrupt_anchor, 1, "anchor"),
    "timestamps-out-of-order": (_non_monotonic_ts, 3, "earlier"),
}


@pytest.fixture(params=["one-pass", "two-ranges"])
def scan_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Verify in one pass, or as two ranges with a forked child (forced on for small chains)."""
    stitched: list[int] = []
    if request.param == "two-ranges":
        real = _audit_verify._stitch

        def spy(low: Any, high: Any, mid: int) -> Any:
            stitched.append(mid)
            return real(low, high, mid)

        monkeypatch.setattr(_audit_verify, "PARALLEL_MIN_ENTRIES", 2)
        monkeypatch.setattr(_audit_verify, "_can_fork", lambda: True)
        monkeypatch.setattr(_audit_verify, "_stitch", spy)
    return stitched


@pytest.mark.parametrize("name", sorted(TAMPERS))
def test_tampering_is_detected(
    name: str, log: AuditLog, raw: RawDB, key_dir: Path, scan_mode: list[int], request: pytest.FixtureRequest
) -> None:
    fill(log, 25)
    assert log.verify().ok
    tamper, bad_seq, words = TAMPERS[name]
    tamper(raw, key_dir)
    result = log.verify(checkpoint=True)
    # the two-range scan forks a reader of the SQLite file; PostgreSQL is always verified in one pass
    assert bool(scan_mode) == ("two-ranges" in request.node.name and "sqlite" in request.node.name)
    assert not result.ok, name
    assert result.first_bad_seq == bad_seq, result.reason
    assert words in (result.reason or ""), result.reason
    assert not any("signed a checkpoint" in n for n in result.notes)  # never blesses a broken chain


def test_two_range_scan_matches_one_pass(log: AuditLog, scan_mode: list[int]) -> None:
    fill(log, 25)
    result = log.verify()
    assert result.ok and result.entries_verified == 25 and result.head_hash == log.head()[1]  # type: ignore[index]
    assert result.checkpoints_verified == 2


def test_a_rewrite_below_a_checkpoint_blocks_new_checkpoints(log: AuditLog, raw: RawDB) -> None:
    fill(log, 15)
    _rewrite_rehash_and_drop_checkpoints(raw, Path())
    with pytest.raises(IntegrityError, match="refusing to sign"):
        log.checkpoint()


def test_appending_over_a_truncated_log_refuses_to_checkpoint(log: AuditLog, raw: RawDB) -> None:
    fill(log, 15)
    raw.execute("DELETE FROM audit_log WHERE seq > 5")
    fill(log, 4, start=100)  # entries 6..9: no checkpoint due yet
    with pytest.raises(IntegrityError, match="truncated"):
        log.append(actor="a", action="b", resource="c", outcome="d")  # entry 10 would need one
    result = log.verify()
    assert not result.ok and "truncated" in (result.reason or "")


def test_truncation_after_the_last_checkpoint_needs_an_external_anchor(log: AuditLog, raw: RawDB) -> None:
    """The documented limit: the unsigned tail can be cut; --expect-at-least (or a checkpoint) catches it."""
    fill(log, 25)
    raw.execute("DELETE FROM audit_log WHERE seq > 22")
    assert log.verify().ok  # entries 21..25 were never signed
    result = log.verify(expect_at_least=25)
    assert not result.ok and result.first_bad_seq == 23 and "truncated" in (result.reason or "")


def test_verify_with_checkpoint_protects_the_tail(log: AuditLog, raw: RawDB) -> None:
    fill(log, 25)
    assert log.verify(checkpoint=True).ok
    raw.execute("DELETE FROM audit_log WHERE seq > 22")
    result = log.verify()
    assert not result.ok and result.first_bad_seq == 23


def test_public_key_alone_verifies_but_cannot_sign(log: AuditLog, store: Store, key_dir: Path) -> None:
    fill(log, 15)
    (key_dir / "signing.key").unlink()
    fresh = AuditLog(store, key_dir=key_dir, checkpoint_every=10)
    assert fresh.verify().ok
    fill(fresh, 4, start=15)
    with pytest.raises(IntegrityError, match="signing key is missing"):
        fresh.append(actor="a", action="b", resource="c", outcome="d")  # entry 20 needs a checkpoint
    assert fresh.head() is not None and fresh.head()[0] == 19  # type: ignore[index]
    assert not SigningKey.exists(key_dir)  # never silently replaced


def test_rotated_keys_still_verify_old_checkpoints(log: AuditLog, store: Store, key_dir: Path) -> None:
    fill(log, 12)
    old = SigningKey.load(key_dir)
    new = SigningKey.rotate(key_dir)
    assert new.key_id != old.key_id and set(load_public_keys(key_dir)) == {old.key_id, new.key_id}
    rotated = AuditLog(store, key_dir=key_dir, checkpoint_every=10)
    fill(rotated, 10, start=12)
    assert {c.key_id for c in rotated.checkpoints()} == {old.key_id, new.key_id}
    assert rotated.verify().ok


# ------------------------------------------------------------------------------------------- bad input
BAD_DETAILS: list[object] = [
    {"x": math.nan},
    {"x": math.inf},
    {"x": [1, -math.inf]},
    {"x": {1, 2}},
    {"x": b"bytes"},
    {"x": datetime.now(UTC)},
    {1: "non-string key"},
    {"x": object()},
    ["not", "a", "dict"],
    "text",
    {"x": "\ud800 lone surrogate"},
    {"big": "x" * 70_000},
    {"deep": json.loads("[" * 40 + "]" * 40)},
]


@pytest.mark.parametrize("details", BAD_DETAILS, ids=lambda d: type(d).__name__ + ":" + repr(d)[:20])
def test_malformed_details_are_refused_and_nothing_is_written(log: AuditLog, details: object) -> None:
    fill(log, 1)
    with pytest.raises(UsageError, match="details"):
        log.append(actor="a", action="b", resource="c", outcome="d", details=details)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="event 1"):
        log.append_many(
            [
                AuditEvent("a", "b", "c", "d"),
                {"actor": "a", "action": "b", "resource": "c", "outcome": "d", "details": details},
            ]
        )
    assert [e.seq for e in log.tail()] == [1]
    assert log.verify().ok


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("actor", ""),
        ("actor", None),
        ("action", 5),
        ("resource", "r" * 501),
        ("outcome", "a\x00b"),
        ("actor", "\udfff"),
    ],
)
def test_malformed_fields_are_refused(log: AuditLog, field: str, value: object) -> None:
    event: dict[str, object] = {"actor": "a", "action": "b", "resource": "c", "outcome": "d", field: value}
    with pytest.raises(UsageError, match=field):
        log.append(**event)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="unknown field"):
        log.append_many([{**event, "extra": 1}])
    assert log.head() is None


def test_checkpoint_every_must_be_positive(store: Store, key_dir: Path) -> None:
    with pytest.raises(UsageError):
        AuditLog(store, key_dir=key_dir, checkpoint_every=0)


def test_the_documented_independent_check_runs(db_path: Path, key_dir: Path) -> None:
    """The Python example in docs/security.md ("Audit log") verifies a real entry without Charter (SQLite)."""
    log = AuditLog(open_store(f"sqlite:///{db_path}"), key_dir=key_dir)
    doc = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text(encoding="utf-8")
    section = doc.split("## Audit log", 1)[1]
    code = section.split("```python", 1)[1].split("```", 1)[0]
    log.append(
        actor="ana",
        action="token.used",
        resource="workflow:billing-support",
        outcome="allowed",
        details={"token_id": "t1", "note": "Grüße"},
    )
    exec(compile(code, "docs/security.md", "exec"), {"DATABASE": str(db_path)})
    assert str(audit_module.PG_LOCK_KEY) in section
