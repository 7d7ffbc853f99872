"""Masking at one choke point: every write of content goes through :func:`protect`.

The :class:`Masker` protocol has one method; the default :class:`PatternMasker` recognises e-mail
addresses, phone numbers, payment cards (Luhn-checked), IBANs and secrets (API keys, bearer tokens, private
keys). Masking is deterministic per value (``<EMAIL_1a2b3c>``) so analysts can follow an entity without
seeing it. If masking fails, the value is replaced by :data:`REDACTED` — never stored raw (fail closed).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from typing import Any, Protocol

REDACTED = "[REDACTED: masking failed]"
FieldPolicy = str  # "raw" | "masked" | "hashed" | "dropped"


class Masker(Protocol):
    def mask(self, text: str) -> str:
        """Return ``text`` with every sensitive value replaced by a stable placeholder."""
        ...


def _luhn_ok(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _iban_ok(candidate: str) -> bool:
    s = candidate.replace(" ", "").upper()
    if not 15 <= len(s) <= 34:
        return False
    rearranged = s[4:] + s[:4]
    try:
        number = int("".join(str(int(c, 36)) for c in rearranged))
    except ValueError:
        return False
    return number % 97 == 1


_PATTERNS: list[tuple[str, re.Pattern[str], Callable[[str], bool] | None]] = [
    (
        "PRIVATE_KEY",
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)"),
        None,
    ),
    (
        "SECRET",
        re.compile(
            r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}"
            r"|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|chr_[a-z0-9]{12}_[A-Za-z0-9_-]{20,})"
        ),
        None,
    ),
    ("BEARER", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{16,}"), None),
    ("JWT", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"), None),
    ("EMAIL", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"), None),
    ("IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"), _iban_ok),
    ("CARD", re.compile(r"\b(?:\d[ -]?){12,18}\d\b"), lambda m: _luhn_ok(re.sub(r"\D", "", m))),
    (
        "PHONE",
        re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}[ .-]\d{2,4}[ .-]\d{2,6}\b"),
        None,
    ),
]


class PatternMasker:
    """Fast, dependency-free recognizers with deterministic placeholders (keyed by ``salt``)."""

    def __init__(self, salt: bytes = b"charter") -> None:
        self._salt = salt

    def _placeholder(self, kind: str, value: str) -> str:
        digest = hmac.new(self._salt, value.encode(), hashlib.sha256).hexdigest()[:8]
        return f"<{kind}_{digest}>"

    def mask(self, text: str) -> str:
        for kind, pattern, check in _PATTERNS:

            def repl(m: re.Match[str], kind: str = kind, check: Callable[[str], bool] | None = check) -> str:
                value = m.group(0)
                if check is not None and not check(value):
                    return value
                return self._placeholder(kind, value)

            text = pattern.sub(repl, text)
        return text


class NullMasker:
    """``monitoring.masking: off`` — content is stored as the field policies say, without recognizers."""

    def mask(self, text: str) -> str:
        return text


def find_sensitive(text: str) -> list[tuple[str, str]]:
    """Every (kind, value) the pattern recognizers find in ``text``."""
    found: list[tuple[str, str]] = []
    for kind, pattern, check in _PATTERNS:
        for m in pattern.finditer(text):
            value = m.group(0)
            if check is None or check(value):
                found.append((kind, value))
    return found


def hash_value(value: str, salt: bytes = b"charter") -> str:
    """A pseudonymous, stable id for a value (e.g. a principal in analytics views)."""
    return "h:" + hmac.new(salt, value.encode(), hashlib.sha256).hexdigest()[:16]


def mask_any(value: Any, masker: Masker) -> Any:
    """Mask every string inside ``value`` (dicts, lists, scalars); fail closed on any error."""
    try:
        if isinstance(value, str):
            return masker.mask(value)
        if isinstance(value, dict):
            return {
                (masker.mask(k) if isinstance(k, str) else k): mask_any(v, masker) for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [mask_any(v, masker) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return masker.mask(str(value))  # anything else is stored as (masked) text, never as-is
    except Exception:
        return REDACTED


def protect(value: Any, policy: FieldPolicy, masker: Masker, salt: bytes = b"charter") -> Any:
    """Apply one field policy (``raw``, ``masked``, ``hashed``, ``dropped``). Unknown policy → masked."""
    if value is None:
        return None
    if policy == "raw":
        return value
    if policy == "dropped":
        return None
    if policy == "hashed":
        return hash_value(value if isinstance(value, str) else repr(value), salt)
    return mask_any(value, masker)
