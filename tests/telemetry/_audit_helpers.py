"""Helpers for the audit tests: content to append and raw-SQL tampering, as an attacker with write access."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path

from charter.telemetry.audit import AuditLog


def fill(log: AuditLog, n: int, *, start: int = 0) -> None:
    """``n`` single-transaction appends with varied content."""
    for i in range(start, start + n):
        log.append(
            actor=f"user-{i % 3}",
            action="token.used" if i % 2 else "policy.denied",
            resource=f"workflow:billing/{i}",
            outcome="allowed" if i % 2 else "denied",
            details={"i": i, "note": "ünïcödé ✓", "nested": {"list": [1, 2.5, None, True]}},
        )


class RawDB:
    """Direct SQL access to the database file, as an attacker with write access would have."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        conn = sqlite3.connect(self.path)
        try:
            rows = conn.execute(sql, params).fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()

    def row(self, seq: int) -> dict[str, object]:
        conn = sqlite3.connect(self.path)
        conn.row_factory = sqlite3.Row
        try:
            r = conn.execute("SELECT * FROM audit_log WHERE seq = ?", (seq,)).fetchone()
            return dict(r)
        finally:
            conn.close()

    def rehash_from(self, seq: int) -> None:
        """Recompute every hash from ``seq`` on so the chain is internally consistent (no key needed)."""
        conn = sqlite3.connect(self.path)
        try:
            prev = conn.execute("SELECT prev_hash FROM audit_log WHERE seq = ?", (seq,)).fetchone()[0]
            rows = conn.execute(
                "SELECT seq, ts, actor, action, resource, outcome, details FROM audit_log "
                "WHERE seq >= ? ORDER BY seq",
                (seq,),
            ).fetchall()
            for s, ts, actor, action, resource, outcome, details in rows:
                record = {
                    "seq": s,
                    "ts": ts,
                    "actor": actor,
                    "action": action,
                    "resource": resource,
                    "outcome": outcome,
                    "details": json.loads(details),
                    "prev_hash": prev,
                }
                digest = hashlib.sha256(canonical(record).encode()).hexdigest()
                conn.execute("UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, digest, s))
                prev = digest
            conn.commit()
        finally:
            conn.close()


def canonical(record: dict[str, object]) -> str:
    """The documented canonical form, computed independently of the implementation."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
