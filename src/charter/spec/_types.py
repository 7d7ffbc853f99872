"""Small value types used across the charter schema: durations, money, thresholds."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, PlainSerializer

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: Any) -> timedelta:
    """``"90d"``, ``"4h"``, ``"30m"``, ``"15s"``, ``"250ms"`` or a number of seconds."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '4h', '30m' or '90d'")
    if isinstance(value, int | float):
        if value != value or value < 0:  # NaN or negative
            raise ValueError("expected a non-negative duration")
        return timedelta(seconds=value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    raise ValueError(f"expected a duration such as '4h', '30m' or '90d', got {value!r}")


_ACL_ID = r"[a-z][a-z0-9_.-]{0,99}"
_ACL_TOKEN = re.compile(rf"^(?:public|group:{_ACL_ID}|user:{_ACL_ID})$")


def is_valid_token(token: str) -> bool:
    """Whether ``token`` is an ACL token: ``public``, ``group:<id>`` or ``user:<id>`` (the charter's ACL
    rules and every connector's document ACLs, :mod:`charter.sources`, use this one rule)."""
    return bool(_ACL_TOKEN.match(token))


def format_duration(value: timedelta) -> str:
    # integer milliseconds: float seconds turn 1001 ms into 1000.9999…
    ms = round(value / timedelta(milliseconds=1))
    for unit in ("w", "d", "h", "m", "s"):
        size = round(_UNITS[unit] * 1000)
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str)
]

Identifier = Annotated[str, BeforeValidator(lambda v: _identifier(v))]
_IDENT = re.compile(r"^[a-z][a-z0-9_.-]{0,99}$")


def _identifier(value: Any) -> str:
    if not isinstance(value, str) or not _IDENT.match(value):
        raise ValueError(
            f"expected an identifier (lower-case letters, digits, '_', '-', '.', starting with a letter), got {value!r}"
        )
    return value


Comparator = Literal[">=", "<=", ">", "<", "=="]
_THRESHOLD = re.compile(
    r"^\s*(?P<metric>[a-z_][a-z0-9_]*(?:\.[a-z0-9_@]+)+)\s*(?P<op>>=|<=|==|>|<)\s*(?P<value>-?\d+(?:\.\d+)?)"
    r"\s*(?:\((?P<bound>lower|upper|point)\))?\s*$"
)


def parse_threshold(value: Any) -> dict[str, Any]:
    """``"retrieval.recall@5 >= 0.9"`` or ``"generation.groundedness >= 0.8 (lower)"`` → dict."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a threshold such as 'retrieval.recall@5 >= 0.9'")
    m = _THRESHOLD.match(value)
    if not m:
        raise ValueError(
            f"expected '<area>.<metric> <op> <number> [(lower|upper)]' such as 'retrieval.recall@5 >= 0.9', got {value!r}"
        )
    return {"metric": m["metric"], "op": m["op"], "value": float(m["value"]), "bound": m["bound"] or "point"}
