"""Helpers for the audit tests: content to append and raw-SQL tampering, as an attacker with write access."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

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
    """Direct SQL access to the database, as an attacker with write access would have.

    ``where`` is a SQLite file path or a database URL (SQLite or PostgreSQL); SQL uses ``?`` placeholders.
    """

    def __init__(self, where: Path | str) -> None:
        self.url = where if isinstance(where, str) and "://" in where else f"sqlite:///{where}"

    def _run(self, fn: Callable[[Any], Any]) -> Any:
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            with engine.begin() as conn:
                return fn(conn)
        finally:
            engine.dispose()

    def _sql(self, sql: str) -> str:
        return sql if self.url.startswith("sqlite") else sql.replace("%", "%%").replace("?", "%s")

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        def run(conn: Any) -> list[tuple[object, ...]]:
            result = conn.exec_driver_sql(self._sql(sql), params)
            return [tuple(r) for r in result] if result.returns_rows else []

        return self._run(run)  # type: ignore[no-any-return]

    def row(self, seq: int) -> dict[str, object]:
        def run(conn: Any) -> dict[str, object]:
            r = conn.exec_driver_sql(self._sql("SELECT * FROM audit_log WHERE seq = ?"), (seq,)).first()
            return dict(r._mapping)

        return self._run(run)  # type: ignore[no-any-return]

    def rehash_from(self, seq: int) -> None:
        """Recompute every hash from ``seq`` on so the chain is internally consistent (no key needed)."""

        def run(conn: Any) -> None:
            q = self._sql
            prev = conn.exec_driver_sql(q("SELECT prev_hash FROM audit_log WHERE seq = ?"), (seq,)).first()[0]
            rows = conn.exec_driver_sql(
                q(
                    "SELECT seq, ts, actor, action, resource, outcome, details FROM audit_log "
                    "WHERE seq >= ? ORDER BY seq"
                ),
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
                conn.exec_driver_sql(
                    q("UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?"), (prev, digest, s)
                )
                prev = digest

        self._run(run)


def canonical(record: dict[str, object]) -> str:
    """The documented canonical form, computed independently of the implementation."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
