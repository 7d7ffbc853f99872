"""The shapes the audit log hands out: entries, events to append, checkpoints and verification results."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from charter.telemetry._audit_canon import format_ts, parse_ts


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """An event to append (see :meth:`AuditLog.append_many`)."""

    actor: str
    action: str
    resource: str
    outcome: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One stored entry of the chain."""

    seq: int
    ts: datetime
    actor: str
    action: str
    resource: str
    outcome: str
    details: dict[str, Any]
    prev_hash: str
    hash: str

    @classmethod
    def from_row(cls, row: Any) -> AuditEntry:
        seq, ts, actor, action, resource, outcome, details, prev_hash, hash_ = row
        return cls(
            int(seq), parse_ts(ts), actor, action, resource, outcome, json.loads(details), prev_hash, hash_
        )

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["ts"] = format_ts(self.ts)
        return doc


CHECKPOINT_DOMAIN = "charter-audit-checkpoint/v1"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed statement "the chain had ``seq`` entries and its head hash was ``head_hash``"."""

    seq: int
    head_hash: str
    created_at: datetime
    key_id: str
    signature: str

    def message(self) -> bytes:
        """The exact bytes that are signed."""
        return (
            f"{CHECKPOINT_DOMAIN}\nseq={self.seq}\nhead={self.head_hash}\n"
            f"created={format_ts(self.created_at)}\nkey={self.key_id}\n"
        ).encode()

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "head_hash": self.head_hash,
            "created_at": format_ts(self.created_at),
            "key_id": self.key_id,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Checkpoint:
        return cls(
            int(doc["seq"]),
            str(doc["head_hash"]),
            parse_ts(str(doc["created_at"])),
            str(doc["key_id"]),
            str(doc["signature"]),
        )


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """What :meth:`AuditLog.verify` found. ``first_bad_seq`` is the first entry that fails (or may have)."""

    ok: bool
    entries_verified: int
    checkpoints_verified: int
    first_bad_seq: int | None = None
    reason: str | None = None
    head_seq: int = 0
    head_hash: str | None = None
    last_checkpoint_seq: int | None = None
    anchor_seq: int | None = None
    elapsed_s: float = 0.0
    notes: tuple[str, ...] = ()
    #: entries after the last signed checkpoint (covered only by their seals until the next checkpoint)
    unsigned_tail: int = 0
    #: whether the tail's seals were checked (False: no private key here to check them with)
    tail_checked: bool = False

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["notes"] = list(self.notes)
        doc["elapsed_s"] = round(self.elapsed_s, 3)
        return doc

    def __bool__(self) -> bool:
        return self.ok
