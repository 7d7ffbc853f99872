"""The tamper-evident audit log: an append-only SHA-256 hash chain with Ed25519-signed checkpoints.

Every security-relevant action is one entry ``(seq, ts, actor, action, resource, outcome, details)``. Each
entry stores the previous entry's hash and its own hash over a canonical JSON form (``_audit_canon``), so
changing, deleting, inserting or reordering any entry breaks the chain. Because anyone who can write the
database can also re-hash the chain, the head is periodically **checkpointed**: ``(seq, head_hash)`` signed
with an Ed25519 key kept outside the database (:mod:`charter.telemetry.signing`), and the latest checkpoint
is also copied to an **anchor file** beside the key. :meth:`AuditLog.verify` recomputes everything.

**The unsigned tail.** Entries after the last checkpoint are not covered by a signature yet. Each entry is
therefore also **sealed**: ``seal = HMAC-SHA256(k, "seq:hash")`` with ``k`` a random secret kept beside the
signing key (``audit-seal.key``, 0600; it is not rotated with the signing key, never in the database). Rewriting tail entries and re-computing their hashes breaks their seals;
:meth:`AuditLog.verify` reports the tail's length, checks its seals when the key is present, and never signs
a tail whose seals fail — nor does the automatic checkpoint. The window in which an attacker holding the
database *and* the key could rewrite unsigned entries is bounded by the checkpoint cadence: a checkpoint at
least every ``checkpoint_every`` entries (on append) and, in the server, every ``checkpoint_seconds``
(:func:`start_checkpointer`); both come from the charter's ``monitoring.audit`` settings.

Writers are serialised: SQLite ``BEGIN IMMEDIATE``, PostgreSQL ``pg_advisory_xact_lock`` inside the
transaction; one :meth:`~AuditLog.append` is one transaction, :meth:`~AuditLog.append_many` one for the
batch. ``details`` must be a JSON object (no NaN, no infinity, string keys) of at most 64 KiB: the audit
log references trace, document and report content by id; it never embeds it.

Example::

    log = AuditLog(store, key_dir=Path(".charter/keys"))
    log.append(actor="ana", action="token.used", resource="workflow:hr-answers",
               outcome="allowed", details={"token_id": "t_12"})
    assert log.verify().ok

The guarantees, precisely, are in ``docs/security.md`` ("Audit log").
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, inspect, select, text
from sqlalchemy.exc import SQLAlchemyError

from charter.errors import IntegrityError, UsageError
from charter.store import Store, run_driver, sqlite_driver, utcnow
from charter.store.tables import audit_checkpoints, audit_log
from charter.telemetry._audit_anchor import (
    anchor_path,
    mark_sealed,
    read_anchor,
    read_sealed_from,
    write_anchor,
)
from charter.telemetry._audit_canon import (
    GENESIS_HASH,
    canonical_details,
    check_field,
    entry_hash,
    format_ts,
    parse_ts,
)
from charter.telemetry._audit_types import AuditEntry, AuditEvent, Checkpoint, VerifyResult
from charter.telemetry._audit_verify import (
    COLUMNS,
    check_seals,
    check_signatures,
    scan,
    seal_of,
    verify_all,
)
from charter.telemetry.signing import PublicKey, SigningKey, load_public_keys

#: The PostgreSQL advisory lock that serialises audit writers (the bytes ``b"chartaud"``).
PG_LOCK_KEY = int.from_bytes(b"chartaud", "big")
DEFAULT_CHECKPOINT_EVERY = 1000
DEFAULT_CHECKPOINT_SECONDS = 300.0
SEAL_KEY_FILE = "audit-seal.key"

_Prepared = tuple[str, str, str, str, str]  # actor, action, resource, outcome, canonical details


class AuditLog:
    """The audit log of one store. Thread-safe and multi-process-safe; cheap to construct."""

    def __init__(
        self, store: Store, *, key_dir: Path | str, checkpoint_every: int = DEFAULT_CHECKPOINT_EVERY
    ) -> None:
        if checkpoint_every < 1:
            raise UsageError("checkpoint_every must be at least 1")
        self.store = store
        self.key_dir = Path(key_dir)
        self.checkpoint_every = checkpoint_every
        self.anchor_path = anchor_path(self.key_dir, store.url)
        self._key: SigningKey | None = None
        self._seal_key: bytes | None = None
        self._sealed_marked = False
        self._has_seal: bool | None = None  # the 0011 column (absent only before migrating an old store)
        self._keys: dict[str, PublicKey] = {}

    # ------------------------------------------------------------------------------------ writing
    def append(
        self,
        *,
        actor: str,
        action: str,
        resource: str,
        outcome: str,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        """Append one event in its own transaction and return the stored entry."""
        return self._append([_prepare(actor, action, resource, outcome, details)])[0]

    def append_many(self, events: Iterable[AuditEvent | Mapping[str, Any]]) -> list[AuditEntry]:
        """Append several events in one transaction (all or nothing); returns them in order."""
        prepared = []
        for i, ev in enumerate(events):
            try:
                if isinstance(ev, AuditEvent):
                    prepared.append(_prepare(ev.actor, ev.action, ev.resource, ev.outcome, ev.details))
                elif isinstance(ev, Mapping):
                    unknown = set(ev) - {"actor", "action", "resource", "outcome", "details"}
                    if unknown:
                        raise UsageError(f"unknown field(s) {sorted(unknown)}")
                    prepared.append(
                        _prepare(
                            ev.get("actor"),
                            ev.get("action"),
                            ev.get("resource"),
                            ev.get("outcome"),
                            ev.get("details"),
                        )
                    )
                else:
                    raise UsageError(f"expected an AuditEvent or a mapping, got {type(ev).__name__}")
            except UsageError as exc:
                raise UsageError(f"event {i}: {exc}") from exc
        if not prepared:
            return []
        return self._append(prepared)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[AuditTransaction]:
        """A write transaction whose own changes and audit entries commit together, or not at all.

        For state changes that must never be stored without their audit entry (a tool action becoming
        ``executed``): ``with audit.transaction() as tx: tx.conn.execute(update...); tx.append(...)``. The
        audit lock is taken first, so writers serialise exactly as :meth:`append` does."""
        written: list[Checkpoint] = []
        with self.store.begin(immediate=True) as conn:
            _lock(conn)
            yield AuditTransaction(self, conn, written)
        self._anchor(written)

    def _append(self, prepared: Sequence[_Prepared]) -> list[AuditEntry]:
        written: list[Checkpoint] = []
        with self.store.begin(immediate=True) as conn:
            _lock(conn)
            entries = self._append_in(conn, prepared, written)
        self._anchor(written)
        return entries

    def _append_in(
        self, conn: Connection, prepared: Sequence[_Prepared], written: list[Checkpoint]
    ) -> list[AuditEntry]:
        """Append inside the caller's write transaction, which holds the audit lock (see :func:`_lock`)."""
        # on SQLite the two chain statements run straight on the driver (same transaction, plain SQL): this
        # runs for every audited action, and SQLAlchemy's per-execution machinery would cost more than SQLite
        driver = sqlite_driver(conn) if conn.dialect.name == "sqlite" else None
        if driver is not None:
            found = run_driver(driver, _HEAD_SQL)
            head = found[0] if found else None
        else:
            head = conn.execute(text(_HEAD_SQL)).first()
        last_seq, prev, last_ts = 0, GENESIS_HASH, ""
        if head is not None:
            last_seq, prev, last_ts = int(head[0]), str(head[1]), str(head[2])
        if self._key is None:
            self._key = self._load_key(conn, create=True)
        if self._has_seal is None:
            self._has_seal = any(c["name"] == "seal" for c in inspect(conn).get_columns("audit_log"))
        if self._key is not None and self._seal_key is None and self._has_seal:
            self._seal_key = self._seal_key_or_none(create=True)
        if self._seal_key is not None and self._has_seal and not self._sealed_marked:
            # once per process, under the audit lock: entries after this head must carry a seal
            self._sealed_marked = mark_sealed(self.anchor_path, last_seq, self.store.url)
        seal_key = self._seal_key if self._has_seal else None
        head_prev = prev
        ts = max(format_ts(utcnow()), last_ts)  # non-decreasing even if the clock steps back
        rows = []
        seq = last_seq
        for actor, action, resource, outcome, details in prepared:
            seq += 1
            digest = entry_hash(seq, ts, actor, action, resource, outcome, details, prev)
            seal = seal_of(seal_key, seq, digest) if seal_key is not None else None
            rows.append((seq, ts, actor, action, resource, outcome, details, prev, digest, seal))
            prev = digest
        sql, values = (
            _insert_sql(conn, sealed=bool(self._has_seal)),
            rows if self._has_seal else [r[:9] for r in rows],
        )
        if driver is not None:
            run_driver(driver, sql, values, many=True)
        else:
            conn.exec_driver_sql(sql, values)
        if seq // self.checkpoint_every > last_seq // self.checkpoint_every:
            written.append(self._checkpoint_in(conn, seq, prev, old_head=(last_seq, head_prev)))
        when = parse_ts(ts)
        return [AuditEntry(r[0], when, r[2], r[3], r[4], r[5], json.loads(r[6]), r[7], r[8]) for r in rows]

    # ------------------------------------------------------------------------------------ checkpoints
    def checkpoint(self) -> Checkpoint | None:
        """Sign the current head now (no-op if it is already checkpointed); ``None`` for an empty log.

        Before signing, the entries since the previous checkpoint (or anchor) are re-verified, so a
        checkpoint never blesses a chain that was rewritten below it: :class:`IntegrityError` instead.
        """
        with self.store.begin(immediate=True) as conn:
            _lock(conn)
            head = conn.execute(text("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")).first()
            if head is None:
                return None
            cp = self._checkpoint_in(conn, int(head[0]), str(head[1]))
        self._anchor([cp])
        return cp

    def _checkpoint_in(
        self, conn: Connection, seq: int, head_hash: str, *, old_head: tuple[int, str] | None = None
    ) -> Checkpoint:
        """Sign ``(seq, head_hash)`` inside the caller's write transaction.

        ``old_head``: the head before this transaction's own entries, which were just computed here and
        link to it by construction; only the stored entries from the last checkpoint up to it are re-read.
        """
        end, end_hash = old_head if old_head is not None else (seq, head_hash)
        latest = _latest_checkpoint(conn)
        anchor = read_anchor(self.anchor_path)  # a corrupt anchor raises: fail closed
        base = max((c for c in (latest, anchor) if c is not None), key=lambda c: c.seq, default=None)
        if base is not None and base.seq > end:
            raise IntegrityError(
                f"audit log truncated: a checkpoint records {base.seq} entries but the log "
                f"has {end}; run `charter audit verify`"
            )
        if latest is not None and latest.seq == seq and latest.head_hash == head_hash:
            return latest
        if end > 0:
            checked = check_signatures([base], self._public_keys()) if base is not None else []
            out = scan(
                conn,
                checked,
                start_seq=base.seq if base else 1,
                prev_hash=None if base else GENESIS_HASH,
                end_seq=end,
            )
            if out.bad_seq is not None:
                raise IntegrityError(f"refusing to sign an audit checkpoint: {out.reason}")
            if out.last_seq != end or out.last_hash != end_hash:
                raise IntegrityError("the audit head changed during checkpointing")
            seal_key = self._seal_key_or_none()
            if seal_key is not None:
                seals = check_seals(
                    conn, seal_key, (base.seq if base else 0) + 1, end, read_sealed_from(self.anchor_path)
                )
                if seals.bad_seq is not None:
                    raise IntegrityError(f"refusing to sign an audit checkpoint: {seals.reason}")
        key = self._key or self._load_key(conn, create=True)
        if key is None:
            raise IntegrityError(
                f"the audit signing key is missing from {self.key_dir} but signed checkpoints exist: restore "
                "the key from backup (or rotate it explicitly) before more checkpoints can be written"
            )
        self._key = key
        unsigned = Checkpoint(seq, head_hash, utcnow(), key.key_id, "")
        cp = replace(unsigned, signature=key.sign(unsigned.message()))
        conn.execute(
            audit_checkpoints.insert().values(
                seq=cp.seq,
                head_hash=cp.head_hash,
                created_at=cp.created_at,
                key_id=cp.key_id,
                signature=cp.signature,
            )
        )
        return cp

    def checkpoints(self) -> list[Checkpoint]:
        """Every stored checkpoint, oldest first."""
        with self.store.connect() as conn:
            return _all_checkpoints(conn)

    def _anchor(self, written: Sequence[Checkpoint]) -> None:
        if written:
            write_anchor(self.anchor_path, max(written, key=lambda c: c.seq), self.store.url)

    def _load_key(self, conn: Connection, *, create: bool) -> SigningKey | None:
        """The signing key; created on first use, but never silently replaced once something was signed."""
        if SigningKey.exists(self.key_dir):
            return SigningKey.load(self.key_dir)
        try:
            anchored = read_anchor(self.anchor_path) is not None
        except IntegrityError:
            anchored = True  # a corrupt anchor: something was signed; never silently start over
        signed_before = _latest_checkpoint(conn) is not None or anchored
        if signed_before or not create:
            return None
        return SigningKey.load_or_create(self.key_dir)

    def _seal_key_or_none(self, *, create: bool = False) -> bytes | None:
        """The seal secret (``audit-seal.key`` beside the signing key); an auditor holding only public keys
        has none. Created on first use — but never again once entries were sealed (sealed_from is
        recorded): a lost secret must be restored from backup, or every later seal would be "forged"."""
        if self._seal_key is not None:
            return self._seal_key
        path = self.key_dir / SEAL_KEY_FILE
        try:
            if path.is_file():
                self._seal_key = bytes.fromhex(path.read_text(encoding="ascii").strip())
            elif create and read_sealed_from(self.anchor_path) is None:
                from charter.store import create_secret_file

                self._seal_key = bytes.fromhex(
                    create_secret_file(path, secrets.token_hex(32).encode()).decode("ascii")
                )
        except (OSError, ValueError):
            return None
        return self._seal_key

    def _public_keys(self) -> dict[str, PublicKey]:
        if not self._keys or (self._key is not None and self._key.key_id not in self._keys):
            self._keys = load_public_keys(self.key_dir)
        return self._keys

    # ------------------------------------------------------------------------------------ reading
    def verify(
        self, *, expect_at_least: int | None = None, checkpoint: bool = False, parallel: bool = True
    ) -> VerifyResult:
        """Recompute the whole chain and check every checkpoint and the anchor.

        ``expect_at_least``: the log must have at least this many entries (an external anchor, e.g. the
        count printed by an earlier run). ``checkpoint=True``: when intact, sign the head so that a later
        truncation down to below it is detected. ``parallel=False``: never fork a second scanner.

        The entries after the last signed checkpoint (``unsigned_tail``) are also checked against their
        seals when the private key is here (``tail_checked``); a broken seal fails verification, so a
        rewritten tail is reported and never signed.
        """
        keys = load_public_keys(self.key_dir)
        anchor_problem = None
        try:
            anchor = read_anchor(self.anchor_path)
        except IntegrityError as exc:
            anchor, anchor_problem = None, str(exc)
        with self.store.connect() as conn:
            checkpoints = _all_checkpoints(conn)
            result = verify_all(
                conn,
                checkpoints,
                anchor,
                keys,
                expect_at_least=expect_at_least,
                anchor_problem=anchor_problem,
                parallel=parallel,
            )
            result = self._check_tail(conn, result)
        if checkpoint and result.ok and result.head_seq > (result.last_checkpoint_seq or 0):
            try:
                cp = self.checkpoint()
            except (IntegrityError, OSError, SQLAlchemyError) as exc:  # e.g. a read-only auditor
                return replace(result, notes=(*result.notes, f"no checkpoint written: {exc}"))
            if cp is not None:
                with contextlib.suppress(IntegrityError):
                    anchor = read_anchor(self.anchor_path)
                note = f"signed a checkpoint at entry {cp.seq}: truncation below it is now detected"
                return replace(
                    result,
                    last_checkpoint_seq=cp.seq,
                    anchor_seq=anchor.seq if anchor else None,
                    notes=(note,),
                )
        return result

    def _check_tail(self, conn: Connection, result: VerifyResult) -> VerifyResult:
        signed = max(result.last_checkpoint_seq or 0, result.anchor_seq or 0)
        tail = max(0, result.head_seq - signed)
        if not result.ok:
            return replace(result, unsigned_tail=tail)
        seal_key = self._seal_key_or_none()
        if seal_key is None:
            note = (
                f"the {tail} entries after the last signed checkpoint were not checked against their seals: "
                "no private key in this key folder"
            )
            return replace(result, unsigned_tail=tail, notes=(*result.notes, note) if tail else result.notes)
        seals = check_seals(conn, seal_key, signed + 1, result.head_seq, read_sealed_from(self.anchor_path))
        if seals.bad_seq is not None:
            return replace(
                result,
                ok=False,
                first_bad_seq=seals.bad_seq,
                reason=seals.reason,
                unsigned_tail=tail,
                tail_checked=True,
            )
        notes = result.notes
        if seals.legacy:
            notes = (*notes, f"{seals.legacy} unsigned entries predate seals and could not be checked")
        return replace(result, unsigned_tail=tail, tail_checked=True, notes=notes)

    def tail(self, n: int = 20, *, action: str | None = None) -> list[AuditEntry]:
        """The ``n`` most recent entries (only ``action`` if given), oldest first."""
        if n < 0:
            raise UsageError("n must not be negative")
        query = select(*[audit_log.c[name.strip()] for name in COLUMNS.split(",")])
        if action is not None:
            query = query.where(audit_log.c.action == action)
        query = query.order_by(audit_log.c.seq.desc()).limit(n)
        with self.store.connect() as conn:
            rows = conn.execute(query).all()
        return [AuditEntry.from_row(tuple(r)) for r in reversed(rows)]

    def head(self) -> tuple[int, str] | None:
        """``(seq, hash)`` of the newest entry, or ``None`` when the log is empty."""
        with self.store.connect() as conn:
            row = conn.execute(text("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")).first()
        return None if row is None else (int(row[0]), str(row[1]))

    def close_checkpoint(self) -> Checkpoint | None:
        """Checkpoint the head if it is beyond the last checkpoint; raises like :meth:`checkpoint`."""
        with self.store.connect() as conn:
            latest = _latest_checkpoint(conn)
            head = conn.execute(text("SELECT MAX(seq) FROM audit_log")).scalar()
        if head and (latest is None or latest.seq < int(head)):
            return self.checkpoint()
        return None

    def close(self) -> None:
        """Checkpoint the head if it is beyond the last checkpoint (best effort: never raises)."""
        with contextlib.suppress(Exception):  # closing must not mask the caller's own outcome
            self.close_checkpoint()


def _prepare(actor: Any, action: Any, resource: Any, outcome: Any, details: Any) -> _Prepared:
    if details is not None and isinstance(details, Mapping) and not isinstance(details, dict):
        details = dict(details)
    return (
        check_field("actor", actor),
        check_field("action", action),
        check_field("resource", resource),
        check_field("outcome", outcome),
        canonical_details(details),
    )


_HEAD_SQL = "SELECT seq, hash, ts FROM audit_log ORDER BY seq DESC LIMIT 1"


def _insert_sql(conn: Connection, *, sealed: bool = True) -> str:
    """A plain multi-row INSERT in the driver's own parameter style (no per-row SQLAlchemy processing)."""
    style = conn.dialect.paramstyle
    mark = "?" if style == "qmark" else "%s" if style in ("format", "pyformat") else None
    n = 10 if sealed else 9
    marks = ", ".join([mark] * n) if mark else ", ".join(f":{i}" for i in range(1, n + 1))
    return f"INSERT INTO audit_log ({COLUMNS}{', seal' if sealed else ''}) VALUES ({marks})"


class AuditTransaction:
    """See :meth:`AuditLog.transaction`: ``conn`` for the caller's own statements, :meth:`append` for events."""

    def __init__(self, log: AuditLog, conn: Connection, written: list[Checkpoint]) -> None:
        self.log, self.conn, self._written = log, conn, written

    def append(
        self,
        *,
        actor: str,
        action: str,
        resource: str,
        outcome: str,
        details: Mapping[str, Any] | None = None,
    ) -> AuditEntry:
        prepared = [_prepare(actor, action, resource, outcome, details)]
        return self.log._append_in(self.conn, prepared, self._written)[0]

    def append_many(self, events: Sequence[Mapping[str, Any]]) -> list[AuditEntry]:
        """Append several events (mappings of :meth:`append`'s fields) with one chain write, in order."""
        prepared = [
            _prepare(e["actor"], e["action"], e["resource"], e["outcome"], e.get("details")) for e in events
        ]
        return self.log._append_in(self.conn, prepared, self._written) if prepared else []


def _lock(conn: Connection) -> None:
    """Serialise writers. SQLite already holds the write lock (``BEGIN IMMEDIATE``)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})


def _row_to_checkpoint(row: Any) -> Checkpoint:
    return Checkpoint(int(row.seq), row.head_hash, row.created_at, row.key_id, row.signature)


def _latest_checkpoint(conn: Connection) -> Checkpoint | None:
    row = conn.execute(
        select(audit_checkpoints)
        .order_by(audit_checkpoints.c.seq.desc(), audit_checkpoints.c.id.desc())
        .limit(1)
    ).first()
    return None if row is None else _row_to_checkpoint(row)


def _all_checkpoints(conn: Connection) -> list[Checkpoint]:
    rows = conn.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.seq, audit_checkpoints.c.id))
    return [_row_to_checkpoint(r) for r in rows]


def start_checkpointer(log: AuditLog, every_seconds: float) -> threading.Event:
    """Sign the head at least every ``every_seconds`` while entries arrive (a daemon thread); set the returned
    event to stop it. A failed checkpoint (e.g. a rewritten tail) is logged and retried at the next tick."""
    import logging

    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_seconds):
            try:
                log.close_checkpoint()
            except Exception:  # reported by `charter audit verify`; the server keeps serving
                logging.getLogger("charter.audit").warning("periodic audit checkpoint failed", exc_info=True)

    threading.Thread(target=loop, name="charter-audit-checkpoint", daemon=True).start()
    return stop


__all__ = [
    "DEFAULT_CHECKPOINT_EVERY",
    "DEFAULT_CHECKPOINT_SECONDS",
    "PG_LOCK_KEY",
    "AuditEntry",
    "AuditEvent",
    "AuditLog",
    "Checkpoint",
    "VerifyResult",
    "start_checkpointer",
]
