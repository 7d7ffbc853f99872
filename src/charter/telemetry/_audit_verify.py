"""Verifying the chain: one streaming pass in ``seq`` order, checking every hash, link and checkpoint.

The hot loop avoids per-row objects: rows arrive as tuples in batches (a server-side cursor on PostgreSQL,
``fetchmany`` on SQLite), the canonical text is built with one f-string and hashed with :mod:`hashlib`.

A large SQLite chain is checked as two ranges at once: a forked child scans the upper half on its own
read-only connection while this process scans the lower half; the halves are then stitched (the first
entry of the upper half must link to the last of the lower, timestamps must not go back). The result is
the same as one pass: the first failure in ``seq`` order wins. Forking is used only when it is safe (no
other threads in the process but the store's fork-safe WAL checkpointer, a ``fork`` start method, a file
database); otherwise one pass is made.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from json.encoder import encode_basestring
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, text

from charter.telemetry._audit_canon import GENESIS_HASH
from charter.telemetry._audit_types import Checkpoint, VerifyResult
from charter.telemetry.signing import PublicKey

COLUMNS = "seq, ts, actor, action, resource, outcome, details, prev_hash, hash"
BATCH = 20_000
PARALLEL_MIN_ENTRIES = 200_000


def iter_batches(
    conn: Connection, start_seq: int, end_seq: int | None = None, batch: int = BATCH
) -> Iterator[Sequence[Any]]:
    """Rows with ``start_seq <= seq (<= end_seq)`` in order, in batches, never the whole table in memory."""
    end = end_seq if end_seq is not None else 2**62
    if conn.dialect.name == "sqlite":
        # The raw DBAPI cursor streams natively and skips SQLAlchemy's per-row processing.
        yield from _sqlite_batches(conn.connection.driver_connection, start_seq, end, batch)
        return
    # Per-statement options: ``Connection.execution_options()`` would switch the whole connection (and so
    # a later INSERT in the same transaction) to a server-side cursor.
    result = conn.execute(
        text(f"SELECT {COLUMNS} FROM audit_log WHERE seq >= :start AND seq <= :end ORDER BY seq"),
        {"start": start_seq, "end": end},
        execution_options={"stream_results": True, "yield_per": batch},
    )
    yield from result.partitions(batch)


def _sqlite_batches(dbapi_conn: Any, start_seq: int, end_seq: int, batch: int) -> Iterator[Sequence[Any]]:
    cur = dbapi_conn.cursor()
    try:
        cur.execute(
            f"SELECT {COLUMNS} FROM audit_log WHERE seq >= ? AND seq <= ? ORDER BY seq", (start_seq, end_seq)
        )
        while rows := cur.fetchmany(batch):
            yield rows
    finally:
        cur.close()


@dataclass
class CheckedCheckpoint:
    """A checkpoint with its signature already checked (``problem`` is None when it is valid)."""

    checkpoint: Checkpoint
    source: str  # "database" or "anchor"
    problem: str | None = None


def check_signatures(
    checkpoints: Sequence[Checkpoint], keys: dict[str, PublicKey], source: str = "database"
) -> list[CheckedCheckpoint]:
    out = []
    for cp in checkpoints:
        key = keys.get(cp.key_id)
        where = "the anchor file" if source == "anchor" else "checkpoint"
        if key is None:
            problem = (
                f"{where} at seq {cp.seq} is signed by key {cp.key_id}, which is not in the key "
                "folder (key deleted or replaced): its signature cannot be checked"
            )
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
    first_prev: str | None = None  # the stored link of the first row scanned
    first_ts: str | None = None
    last_ts: str = ""


def _by_seq(checkpoints: Sequence[CheckedCheckpoint]) -> dict[int, list[CheckedCheckpoint]]:
    by_seq: dict[int, list[CheckedCheckpoint]] = {}
    for cc in checkpoints:
        by_seq.setdefault(cc.checkpoint.seq, []).append(cc)
    return by_seq


def scan(
    conn: Connection,
    checkpoints: Sequence[CheckedCheckpoint],
    *,
    start_seq: int = 1,
    prev_hash: str | None = GENESIS_HASH,
    end_seq: int | None = None,
) -> ScanOutcome:
    """Check entries from ``start_seq`` to ``end_seq`` (default: the end). ``prev_hash=None`` trusts the
    first row's stored link."""
    by_seq = _by_seq(checkpoints)
    out = scan_rows(
        iter_batches(conn, start_seq, end_seq),
        by_seq,
        start_seq=start_seq,
        prev_hash=prev_hash,
        good_cp=start_seq - 1,
        end_seq=end_seq,
    )
    return finish(out, by_seq, start_seq)


def scan_rows(
    batches: Iterable[Sequence[Any]],
    by_seq: dict[int, list[CheckedCheckpoint]],
    *,
    start_seq: int,
    prev_hash: str | None,
    good_cp: int,
    end_seq: int | None = None,
) -> ScanOutcome:
    """The hot loop over one contiguous range. ``good_cp``: the last checkpoint at or before the range.

    It stays over 80 lines on purpose: it is the per-row loop of audit verification (millions of entries),
    where a helper call per row costs measurable time, and its checks read best in the order they run."""
    out = ScanOutcome()
    enc = encode_basestring
    sha = hashlib.sha256
    expected = start_seq
    prev = prev_hash
    last_ts = ""

    def fail(seq: int, reason: str) -> ScanOutcome:
        out.bad_seq, out.reason = seq, reason
        out.entries = expected - start_seq
        return out

    # A timestamp is shared by a whole batch: it is re-encoded only when it changes. A stored link equal to
    # the expected one is known hex, so it goes into the text unescaped.
    ets = enc(last_ts)
    for rows in batches:
        if out.first_ts is None and rows:
            out.first_ts, out.first_prev = rows[0][1], rows[0][7]
            last_ts = out.first_ts if isinstance(out.first_ts, str) else ""
            ets = enc(last_ts)
        for seq, ts, actor, action, resource, outcome, details, stored_prev, stored_hash in rows:
            if seq != expected:
                if isinstance(seq, int) and seq > expected:
                    return fail(
                        expected,
                        f"entry {expected} is missing (next stored entry is {seq}): deleted or renumbered",
                    )
                return fail(expected, f"entry {expected} is out of order or duplicated (found seq {seq!r})")
            linked = stored_prev == prev
            try:
                if ts != last_ts:
                    ets = enc(ts)
                if linked:
                    text = (
                        f'{{"action":{enc(action)},"actor":{enc(actor)},"details":{details},'
                        f'"outcome":{enc(outcome)},"prev_hash":"{prev}","resource":{enc(resource)},'
                        f'"seq":{seq},"ts":{ets}}}'
                    )
                else:
                    text = (
                        f'{{"action":{enc(action)},"actor":{enc(actor)},"details":{details},'
                        f'"outcome":{enc(outcome)},"prev_hash":{enc(stored_prev)},'
                        f'"resource":{enc(resource)},"seq":{seq},"ts":{ets}}}'
                    )
                digest = sha(text.encode()).hexdigest()
            except (TypeError, UnicodeEncodeError) as exc:
                return fail(seq, f"entry {seq} has a malformed field ({exc})")
            if digest != stored_hash:
                return fail(
                    seq,
                    f"entry {seq}: stored hash does not match its contents "
                    "(the entry or its hash was modified)",
                )
            if prev is not None and not linked:
                return fail(
                    seq,
                    f"entry {seq}: prev_hash does not link to entry {seq - 1} "
                    "(entries were inserted, deleted, reordered or rewritten)",
                )
            if ts < last_ts:
                return fail(seq, f"entry {seq}: timestamp {ts} is earlier than entry {seq - 1}'s ({last_ts})")
            cps = by_seq.get(seq)
            if cps is not None:
                for cc in cps:
                    if cc.problem is not None:
                        return fail(seq, cc.problem)
                    if cc.checkpoint.head_hash != digest:
                        what = "the anchor file" if cc.source == "anchor" else "the signed checkpoint"
                        return fail(
                            good_cp + 1,
                            f"entries {good_cp + 1}..{seq} were rewritten: {what} at seq {seq} "
                            "does not match the recomputed chain (re-hashed without the signing key)",
                        )
                    out.checkpoints += cc.source == "database"
                good_cp = seq
            prev = stored_hash
            last_ts = ts
            expected += 1
    out.entries = expected - start_seq
    out.last_seq = expected - 1
    out.last_hash = prev
    out.last_ts = last_ts
    if end_seq is not None and out.last_seq < end_seq:
        return fail(expected, f"entry {expected} is missing: deleted or renumbered")
    return out


def finish(out: ScanOutcome, by_seq: dict[int, list[CheckedCheckpoint]], start_seq: int) -> ScanOutcome:
    """After the last entry: checkpoints beyond it mean truncation; unchecked bad checkpoints still fail."""
    if out.bad_seq is not None:
        return out
    for seq in sorted(s for s in by_seq if s > out.last_seq or s < start_seq):
        for cc in by_seq[seq]:
            if cc.problem is not None:
                out.bad_seq, out.reason = (max(seq, 1) if seq < start_seq else out.last_seq + 1), cc.problem
                return out
            if seq > out.last_seq:
                what = "the anchor file" if cc.source == "anchor" else "a signed checkpoint"
                out.bad_seq = out.last_seq + 1
                out.reason = (
                    f"the log was truncated: {what} records {seq} entries but the log ends at "
                    f"entry {out.last_seq} (entries {out.last_seq + 1}..{seq} are missing)"
                )
                return out
    return out


def _sqlite_file(conn: Connection) -> str | None:
    if conn.dialect.name != "sqlite":
        return None
    database = conn.engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.abspath(database)


def _can_fork() -> bool:
    from charter.store import other_threads_fork_safe

    return (
        "fork" in multiprocessing.get_all_start_methods()
        and other_threads_fork_safe()  # no thread but the store's checkpointer (which is fork-safe)
        and (os.cpu_count() or 1) > 1
    )


def _child_scan(
    path: str, by_seq: dict[int, list[CheckedCheckpoint]], start: int, end: int, good_cp: int, send: Any
) -> None:
    """In the forked child: scan ``start..end`` on a fresh read-only connection and send the outcome."""
    try:
        db = sqlite3.connect(f"file:{quote(path)}?mode=ro", uri=True)
        try:
            out = scan_rows(
                _sqlite_batches(db, start, end, BATCH),
                by_seq,
                start_seq=start,
                prev_hash=None,
                good_cp=good_cp,
                end_seq=end,
            )
        finally:
            db.close()
        send.send(out)
    except BaseException as exc:  # reported by the parent, which then falls back to one pass
        send.send(exc)
    finally:
        send.close()


def scan_parallel(conn: Connection, checkpoints: Sequence[CheckedCheckpoint]) -> ScanOutcome:
    """Like :func:`scan` from seq 1, using a forked child for the upper half of a large SQLite chain."""
    by_seq = _by_seq(checkpoints)
    path = _sqlite_file(conn)
    n = int(conn.exec_driver_sql("SELECT COALESCE(MAX(seq), 0) FROM audit_log").scalar() or 0)
    if path is None or n < PARALLEL_MIN_ENTRIES or not _can_fork():
        return scan(conn, checkpoints)
    mid = n // 2
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    good_cp = max((s for s in by_seq if s <= mid), default=0)
    child = ctx.Process(target=_child_scan, args=(path, by_seq, mid + 1, n, good_cp, send), daemon=True)
    child.start()
    send.close()
    try:
        low = scan_rows(
            iter_batches(conn, 1, mid), by_seq, start_seq=1, prev_hash=GENESIS_HASH, good_cp=0, end_seq=mid
        )
        high = recv.recv()
    finally:
        recv.close()
        child.join(timeout=60)
        if child.is_alive():
            child.kill()
    if isinstance(high, BaseException):
        return scan(conn, checkpoints)
    return finish(_stitch(low, high, mid), by_seq, 1)


def _stitch(low: ScanOutcome, high: ScanOutcome, mid: int) -> ScanOutcome:
    """One outcome from two adjacent ranges, reporting the first failure in ``seq`` order."""
    if low.bad_seq is not None:
        return low
    combined = ScanOutcome(
        entries=low.entries,
        checkpoints=low.checkpoints,
        last_seq=low.last_seq,
        last_hash=low.last_hash,
        last_ts=low.last_ts,
    )
    first = mid + 1
    if high.bad_seq is not None and high.bad_seq <= first:
        pass  # a missing or altered first entry of the upper half (or a rewrite reaching below it)
    elif high.first_prev != low.last_hash:
        combined.bad_seq = first
        combined.reason = (
            f"entry {first}: prev_hash does not link to entry {mid} "
            "(entries were inserted, deleted, reordered or rewritten)"
        )
        return combined
    elif (high.first_ts or "") < low.last_ts:
        combined.bad_seq = first
        combined.reason = (
            f"entry {first}: timestamp {high.first_ts} is earlier than entry {mid}'s ({low.last_ts})"
        )
        return combined
    combined.entries += high.entries
    combined.checkpoints += high.checkpoints
    combined.bad_seq, combined.reason = high.bad_seq, high.reason
    if high.bad_seq is None:
        combined.last_seq, combined.last_hash, combined.last_ts = high.last_seq, high.last_hash, high.last_ts
    return combined


def verify_all(
    conn: Connection,
    checkpoints: Sequence[Checkpoint],
    anchor: Checkpoint | None,
    keys: dict[str, PublicKey],
    *,
    expect_at_least: int | None = None,
    anchor_problem: str | None = None,
    parallel: bool = True,
) -> VerifyResult:
    """The full verification used by :meth:`AuditLog.verify`."""
    started = time.perf_counter()
    checked = check_signatures(checkpoints, keys)
    if anchor is not None:
        checked += check_signatures([anchor], keys, source="anchor")
    lowest = conn.execute(text("SELECT MIN(seq) FROM audit_log")).scalar()
    if lowest is not None and int(lowest) < 1:
        out = ScanOutcome(
            bad_seq=int(lowest),
            reason=f"entry {lowest} has an impossible seq (inserted outside the chain, which starts at 1)",
        )
    else:
        out = scan_parallel(conn, checked) if parallel else scan(conn, checked)
    last_cp = max((cp.seq for cp in checkpoints), default=None)
    notes = list(out.notes)
    if out.bad_seq is None and anchor_problem is not None:
        out.bad_seq, out.reason = 1, anchor_problem
    if out.bad_seq is None and expect_at_least is not None and out.last_seq < expect_at_least:
        out.bad_seq = out.last_seq + 1
        out.reason = (
            f"the log was truncated: at least {expect_at_least} entries were expected but it ends "
            f"at entry {out.last_seq}"
        )
    if out.bad_seq is None and out.last_seq > (last_cp or 0):
        notes.append(
            f"entries {(last_cp or 0) + 1}..{out.last_seq} are after the last signed checkpoint: "
            "their deletion could only be detected against an external anchor"
        )
    return VerifyResult(
        ok=out.bad_seq is None,
        entries_verified=out.entries,
        checkpoints_verified=out.checkpoints,
        first_bad_seq=out.bad_seq,
        reason=out.reason,
        head_seq=out.last_seq,
        head_hash=out.last_hash,
        last_checkpoint_seq=last_cp,
        anchor_seq=anchor.seq if anchor else None,
        elapsed_s=time.perf_counter() - started,
        notes=tuple(notes),
    )


# ------------------------------------------------------------------------------------------------ seals
def seal_of(key: bytes, seq: int, digest: str) -> str:
    """The seal of entry ``seq`` with hash ``digest``: HMAC-SHA256 under the seal secret (``audit-seal.key``)."""
    import hmac

    return hmac.new(key, f"{seq}:{digest}".encode(), hashlib.sha256).hexdigest()


@dataclass
class SealCheck:
    """Seals of the entries after the last signed checkpoint (the unsigned tail)."""

    checked: int = 0
    legacy: int = 0  # unsealed entries written before seals existed (``seq <= sealed_from``)
    bad_seq: int | None = None
    reason: str | None = None


def check_seals(
    conn: Connection, key: bytes, start_seq: int, end_seq: int | None, sealed_from: int | None
) -> SealCheck:
    """Check every seal from ``start_seq`` to ``end_seq``. The hashes themselves are checked by :func:`scan`;
    a seal binds ``(seq, hash)``, so an entry rewritten and re-hashed without the key fails here.

    ``sealed_from``: entries after it must be sealed; ``None`` (no record) lets unsealed entries pass as
    written before seals existed."""
    import hmac

    out = SealCheck()
    end = end_seq if end_seq is not None else 2**62
    rows = conn.execute(
        text("SELECT seq, hash, seal FROM audit_log WHERE seq >= :s AND seq <= :e ORDER BY seq"),
        {"s": start_seq, "e": end},
    )
    for seq, digest, seal in rows:
        seq = int(seq)
        if seal is None:
            if sealed_from is not None and seq > sealed_from:
                out.bad_seq = seq
                out.reason = (
                    f"entry {seq} is after the last signed checkpoint and has no seal: it was written "
                    "or rewritten without the signing key"
                )
                return out
            out.legacy += 1
            continue
        if not hmac.compare_digest(str(seal), seal_of(key, seq, str(digest))):
            out.bad_seq = seq
            out.reason = (
                f"entry {seq} was rewritten after the last signed checkpoint: its seal does not match "
                "its hash (re-hashed without the signing key)"
            )
            return out
        out.checked += 1
    return out
