"""The canonical form of an audit entry: input validation, timestamps, and the hash over it.

An entry's hash is the SHA-256 (hex) of the UTF-8 bytes of this JSON document::

    {"action":…,"actor":…,"details":…,"outcome":…,"prev_hash":…,"resource":…,"seq":N,"ts":…}

i.e. exactly ``json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` of the
entry without its ``hash``. ``ts`` is ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC, always six fractional digits) and
``details`` is itself canonical JSON. Both are *stored* in exactly that text form, so verification hashes
the stored bytes with no parsing or re-serialisation: what is checked is what is on disk, on SQLite and
PostgreSQL alike. Every field other than ``details`` and ``seq`` is a JSON string literal (no unescaped
``"`` can occur inside one), which makes the mapping from stored row to hashed text injective.
"""

from __future__ import annotations

import hashlib
import json
import math
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any

from charter.errors import UsageError

GENESIS_HASH = "0" * 64
TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
MAX_DETAILS_BYTES = 64 * 1024
MAX_DEPTH = 32
FIELD_LIMITS = {"actor": 200, "action": 100, "resource": 500, "outcome": 50}

_enc = encode_basestring
_sha256 = hashlib.sha256


def format_ts(ts: datetime) -> str:
    """The canonical text of an aware timestamp, in UTC with microseconds."""
    if ts.tzinfo is None:
        raise UsageError("audit timestamps must be timezone-aware")
    return ts.astimezone(UTC).strftime(TS_FORMAT)


def parse_ts(text: str) -> datetime:
    """The aware datetime of a canonical timestamp (``fromisoformat`` reads the ``Z`` suffix on 3.11+)."""
    return datetime.fromisoformat(text)


def preimage(
    seq: int, ts: str, actor: str, action: str, resource: str, outcome: str, details: str, prev_hash: str
) -> str:
    """The canonical JSON text that is hashed (``details`` is already canonical JSON text)."""
    return (
        f'{{"action":{_enc(action)},"actor":{_enc(actor)},"details":{details},'
        f'"outcome":{_enc(outcome)},"prev_hash":{_enc(prev_hash)},"resource":{_enc(resource)},'
        f'"seq":{seq},"ts":{_enc(ts)}}}'
    )


def entry_hash(
    seq: int, ts: str, actor: str, action: str, resource: str, outcome: str, details: str, prev_hash: str
) -> str:
    text = preimage(seq, ts, actor, action, resource, outcome, details, prev_hash)
    return _sha256(text.encode("utf-8")).hexdigest()


_SCALARS = (str, int, bool, type(None))


def _check_json(value: Any, path: str, depth: int) -> None:
    if type(value) in _SCALARS:  # the common case first; subclasses take the slower path below
        return
    if depth > MAX_DEPTH:
        raise UsageError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise UsageError(f"{path}: {value!r} is not allowed (NaN and infinity are not JSON)")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise UsageError(f"{path}: key {key!r} must be a string, got {type(key).__name__}")
            _check_json(item, f"{path}.{key}", depth + 1)
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(item, f"{path}[{i}]", depth + 1)
        return
    raise UsageError(
        f"{path}: {type(value).__name__} is not JSON-serialisable "
        "(use str, int, float, bool, None, list or dict; reference large content by id)"
    )


def canonical_details(details: Any) -> str:
    """Validate ``details`` (a JSON object) and return its canonical JSON text; :class:`UsageError` if not."""
    if details is None:
        return "{}"
    if not isinstance(details, dict):
        raise UsageError(f"details: must be a JSON object (dict), got {type(details).__name__}")
    _check_json(details, "details", 0)
    text = json.dumps(details, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise UsageError(f"details: contains text that is not valid Unicode ({exc.reason})") from exc
    if size > MAX_DETAILS_BYTES:
        raise UsageError(
            f"details: {size} bytes is over the {MAX_DETAILS_BYTES}-byte limit; the audit log "
            "references content (trace, document, report) by id instead of embedding it"
        )
    return text


def check_field(name: str, value: Any) -> str:
    """Validate one of actor, action, resource, outcome: a non-empty string within its length limit."""
    if not isinstance(value, str):
        raise UsageError(f"{name}: must be a string, got {type(value).__name__}")
    if not value:
        raise UsageError(f"{name}: must not be empty")
    limit = FIELD_LIMITS[name]
    if len(value) > limit:
        raise UsageError(f"{name}: {len(value)} characters is over the limit of {limit}")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise UsageError(f"{name}: not valid Unicode ({exc.reason})") from exc
    if "\x00" in value:
        raise UsageError(f"{name}: must not contain NUL characters")
    return value
