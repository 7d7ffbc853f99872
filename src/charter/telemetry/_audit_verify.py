"""Verifying the chain: one streaming pass in ``seq`` order, checking every hash, link and checkpoint.

The hot loop avoids per-row objects: rows arrive as tuples in batches (a server-side cursor on PostgreSQL,
``fetchmany`` on SQLite), the canonical text is built with one f-string and hashed with :mod:`hashlib`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any

from sqlalchemy import Connection, text

from charter.telemetry._audit_canon import GENESIS_HASH
from charter.telemetry._audit_types import Checkpoint, VerifyResult
from charter.telemetry.signing import PublicKey

COLUMNS = "seq, ts, actor, action, resource, outcome, details, prev_hash, hash"
BATCH = 20_000


def iter_batches(conn: Connection, start_seq: int, batch: int = BATCH) -> Iterator[Sequence[Any]]:
    """Rows with ``seq >= start_seq`` in order, in batches, without loading the table into memory."""
    if conn.dialect.name == "sqlite":
        # The raw DBAPI cursor streams natively and skips SQLAlchemy's per-row processing.
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cur.execute(f"SELECT {COLUMNS} FROM audit_log WHERE seq >= ? ORDER BY seq", (start_seq,))
            while rows := cur.fetchmany(batch):
                yield rows
        finally:
            cur.close()
        return
    result = conn.execution_options(stream_results=True, yield_per=batch).execute(
        text(f"SELECT {COLUMNS} FROM audit_log WHERE seq >= :start ORDER BY seq"), {"start": start_seq})
    yield from result.partitions(batch)


@dataclass
class CheckedCheckpoint:
    """A checkpoint with its signature already checked (``problem`` is None when it is valid)."""

    checkpoint: Checkpoint
    source: str  # "database" or "anchor"
    problem: str | None = None


def check_signatures(checkpoints: Sequence[Checkpoint], keys: dict[str, PublicKey],
                     source: str = "database") -> list[CheckedCheckpoint]:
    out = []
    for cp in checkpoints:
        key = keys.get(cp.key_id)
        where = "the anchor file" if source == "anchor" else "checkpoint"
        if key is None:
            problem = (f"{where} at seq {cp.seq} is signed by key {cp.key_id}, which is not in the key "
                       "folder (key deleted or replaced): its signature cannot be checked")
        elif not key.verify(cp.message(), cp.signature):
            problem = f"{where} at seq {cp.seq} has an invalid signature (forged or modified checkpoint)"
        elif cp.seq < 1:
            problem = f"{where} has an impossible seq {cp.seq}"
        else:
            problem = None
        out.append(CheckedCheckpoint(cp, source, problem))
    return out


@dataclass
class ScanOutcome:
    entries: int = 0
    checkpoints: int = 0
    last_seq: int = 0
    last_hash: str | None = None
    bad_seq: int | None = None
    reason: str | None = None
    notes: list[str] = field(default_factory=list)


def scan(conn: Connection, checkpoints: Sequence[CheckedCheckpoint], *, start_seq: int = 1,
         prev_hash: str | None = GENESIS_HASH) -> ScanOutcome:
    """Check entries from ``start_seq`` on. ``prev_hash=None`` trusts the first row's stored link."""
    by_seq: dict[int, list[CheckedCheckpoint]] = {}
    for cc in checkpoints:
        by_seq.setdefault(cc.checkpoint.seq, []).append(cc)
    out = ScanOutcome()
    enc = encode_basestring
    sha = hashlib.sha256
    expected = start_seq
    prev = prev_hash
    last_ts = ""
    good_cp = start_seq - 1  # entries up to here are covered by a matching signed checkpoint

    def fail(seq: int, reason: str) -> ScanOutcome:
        out.bad_seq, out.reason = seq, reason
        out.entries = expected - start_seq
        return out

    for rows in iter_batches(conn, start_seq):
        for seq, ts, actor, action, resource, outcome, details, stored_prev, stored_hash in rows:
            if seq != expected:
                if isinstance(seq, int) and seq > expected:
                    return fail(expected, f"entry {expected} is missing (next stored entry is {seq}): "
                                          "deleted or renumbered")
                return fail(expected, f"entry {expected} is out of order or duplicated (found seq {seq!r})")
            try:
                digest = sha((f'{{"action":{enc(action)},"actor":{enc(actor)},"details":{details},'
                              f'"outcome":{enc(outcome)},"prev_hash":{enc(stored_prev)},'
                              f'"resource":{enc(resource)},"seq":{seq},"ts":{enc(ts)}}}').encode()).hexdigest()
            except (TypeError, UnicodeEncodeError) as exc:
                return fail(seq, f"entry {seq} has a malformed field ({exc})")
            if digest != stored_hash:
                return fail(seq, f"entry {seq}: stored hash does not match its contents "
                                 "(the entry or its hash was modified)")
            if prev is not None and stored_prev != prev:
                return fail(seq, f"entry {seq}: prev_hash does not link to entry {seq - 1} "
                                 "(entries were inserted, deleted, reordered or rewritten)")
            if ts < last_ts:
                return fail(seq, f"entry {seq}: timestamp {ts} is earlier than entry {seq - 1}'s ({last_ts})")
            cps = by_seq.get(seq)
            if cps is not None:
                for cc in cps:
                    if cc.problem is not None:
                        return fail(seq, cc.problem)
                    if cc.checkpoint.head_hash != digest:
                        what = "the anchor file" if cc.source == "anchor" else "the signed checkpoint"
                        return fail(good_cp + 1,
                                    f"entries {good_cp + 1}..{seq} were rewritten: {what} at seq {seq} "
                                    "does not match the recomputed chain (re-hashed without the signing key)")
                    out.checkpoints += cc.source == "database"
                good_cp = seq
            prev = stored_hash
            last_ts = ts
            expected += 1
    out.entries = expected - start_seq
    out.last_seq = expected - 1
    out.last_hash = prev
    for seq in sorted(s for s in by_seq if s > out.last_seq or s < start_seq):
        for cc in by_seq[seq]:
            if cc.problem is not None:
                return fail(max(seq, 1) if seq < start_seq else out.last_seq + 1, cc.problem)
            if seq > out.last_seq:
                what = "the anchor file" if cc.source == "anchor" else "a signed checkpoint"
                return fail(out.last_seq + 1,
                            f"the log was truncated: {what} records {seq} entries but the log ends at entry "
                            f"{out.last_seq} (entries {out.last_seq + 1}..{seq} are missing)")
    return out


def verify_all(conn: Connection, checkpoints: Sequence[Checkpoint], anchor: Checkpoint | None,
               keys: dict[str, PublicKey], *, expect_at_least: int | None = None,
               anchor_problem: str | None = None) -> VerifyResult:
    """The full verification used by :meth:`AuditLog.verify`."""
    started = time.perf_counter()
    checked = check_signatures(checkpoints, keys)
    if anchor is not None:
        checked += check_signatures([anchor], keys, source="anchor")
    out = scan(conn, checked)
    last_cp = max((cp.seq for cp in checkpoints), default=None)
    notes = list(out.notes)
    if out.bad_seq is None and anchor_problem is not None:
        out.bad_seq, out.reason = 1, anchor_problem
    if out.bad_seq is None and expect_at_least is not None and out.last_seq < expect_at_least:
        out.bad_seq = out.last_seq + 1
        out.reason = (f"the log was truncated: at least {expect_at_least} entries were expected but it ends "
                      f"at entry {out.last_seq}")
    if out.bad_seq is None and out.last_seq > (last_cp or 0):
        notes.append(f"entries {(last_cp or 0) + 1}..{out.last_seq} are after the last signed checkpoint: "
                     "their deletion could only be detected against an external anchor")
    return VerifyResult(
        ok=out.bad_seq is None, entries_verified=out.entries, checkpoints_verified=out.checkpoints,
        first_bad_seq=out.bad_seq, reason=out.reason, head_seq=out.last_seq, head_hash=out.last_hash,
        last_checkpoint_seq=last_cp, anchor_seq=anchor.seq if anchor else None,
        elapsed_s=time.perf_counter() - started, notes=tuple(notes),
    )
