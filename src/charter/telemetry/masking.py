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


def _phone_ok(text: str) -> bool:
    digits = re.sub(r"\D", "", re.split(r"x|ext", text)[0])
    return 7 <= len(digits) <= 15


def _card_ok(text: str) -> bool:
    digits = re.sub(r"\D", "", text)
    return 12 <= len(digits) <= 19 and _luhn_ok(digits)


PatternSpec = tuple[str, str, float]  # name, regex, score
#: Charter's recognizers: (entity kind, patterns, validator). Presidio's analyzer runs exactly these (see
#: ``_presidio.py``); :class:`PatternMasker` runs them with the standard library only.
RECOGNIZERS: list[tuple[str, list[PatternSpec], Callable[[str], bool] | None]] = [
    (
        "PRIVATE_KEY",
        [("pem", r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z ]*PRIVATE KEY-----|\Z)", 1.0)],
        None,
    ),
    (
        "SECRET",
        [
            (
                "provider_key",
                r"\b(?:sk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_-]{16,}|(?:AKIA|ASIA)[0-9A-Z]{16}"
                r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|xox[abprs]-[A-Za-z0-9-]{10,}"
                r"|AIza[0-9A-Za-z_-]{35}|(?:rk|pk|sk)_(?:live|test)_[A-Za-z0-9]{16,}"
                r"|glpat-[A-Za-z0-9_-]{20,}|chr_[a-z0-9]{12}_[A-Za-z0-9_-]{20,})",
                1.0,
            ),
            (
                "assignment",
                r"(?i)\b(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|password|passwd"
                r"|client[_-]?secret)\b\s*[:=]\s*[\"']?[^\s\"',;]{6,}",
                0.9,
            ),
        ],
        None,
    ),
    # canary tokens planted in restricted documents: never in a trace, span or report, whoever reads it
    ("CANARY", [("canary", r"\bCANARY-[A-Z0-9]+-[A-Za-z0-9]+\b", 1.0)], None),
    ("BEARER", [("bearer", r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{12,}", 1.0)], None),
    ("JWT", [("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", 1.0)], None),
    (
        "EMAIL",
        [("email", r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b", 1.0)],
        None,
    ),
    (
        "IBAN",
        [("iban", r"\b[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]{4}){2,7}(?:[ -]?[A-Z0-9]{1,4})?\b", 0.95)],
        lambda t: _iban_ok(t.replace("-", " ")),
    ),
    ("CARD", [("card", r"(?<![\d.,])\d(?:[ -]?\d){11,18}(?![\d,]|\.\d)", 0.95)], _card_ok),
    (
        "PHONE",
        [
            (
                # groups of digits separated by space, dot or dash, optionally +CC / 00CC and an (area) code;
                # not an ISO date, not a dotted date, not the tail of an identifier such as INV-2026-0042
                "phone",
                r"(?<![\d+:])(?<![A-Za-z]-)(?<![A-Za-z]\.)(?!\d{4}-\d{2}-\d{2}(?!\d))(?!\d{1,2}[./-]\d{1,2}[./-]\d{4}(?!\d))"
                r"(?:(?:\+|00)\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{1,8}(?:[ .-]\d{1,8}){1,5}"
                r"(?:\s?(?:x|ext\.?)\s?\d{1,6})?(?![\d]|\.\d)",
                0.7,
            ),
            (
                "phone_compact",
                r"(?<![\d+.:])(?<![A-Za-z]-)(?:(?:\+|00)\d{8,14}|\(\d{2,5}\)[ .-]?\d{5,9}|\d{10,11})"
                r"(?:\s?(?:x|ext\.?)\s?\d{1,6})?(?![\d,]|\.\d)",
                0.6,
            ),
        ],
        _phone_ok,
    ),
]

_FLAGS = re.MULTILINE | re.DOTALL
_COMPILED: list[tuple[str, str, re.Pattern[str], float, Callable[[str], bool] | None]] = [
    (kind, name, re.compile(regex, _FLAGS), score, check)
    for kind, pats, check in RECOGNIZERS
    for name, regex, score in pats
]

_DIGIT = re.compile(r"\d")  # the same (Unicode) digits the patterns' \d matches
# Seven digits apart by at most two of " .()-": every phone the validator accepts (7+ digits before any
# extension, in groups separated by one [ .-], after an optional +CC / (area) code) contains such a run.
_SEVEN_DIGITS = re.compile(r"\d(?:[ .()-]{0,2}\d){6}")
_IBAN_HEAD = re.compile(r"[A-Z]{2}\d{2}")
_PROVIDER_PREFIXES = (
    "sk-", "AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xox", "AIza",
    "_live_", "_test_", "glpat-", "chr_",
)  # fmt: skip


#: The only non-ASCII characters that Python's case-insensitive matching equates with ASCII letters
#: (İ ı → i, ſ → s, K → k); ``tests/telemetry/test_masking.py`` checks every code point.
ASCII_FOLDS = {0x130: "i", 0x131: "i", 0x17F: "s", 0x212A: "k"}


class _Gate:
    """What the cheap tests need to know about one text, each part computed at most once."""

    __slots__ = ("_folded", "_run7", "digits", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.digits = len(_DIGIT.findall(text))
        self._folded: str | None = None
        self._run7: bool | None = None

    @property
    def folded(self) -> str:
        """The text lower-cased with :data:`ASCII_FOLDS` applied: wherever a case-insensitive pattern
        matches an ASCII word, that word occurs in here in lower case."""
        if self._folded is None:
            t = self.text
            special = not t.isascii() and any(chr(cp) in t for cp in ASCII_FOLDS)
            self._folded = (t.translate(ASCII_FOLDS) if special else t).lower()
        return self._folded

    @property
    def run7(self) -> bool:
        if self._run7 is None:
            self._run7 = self.digits >= 7 and _SEVEN_DIGITS.search(self.text) is not None
        return self._run7


def _has_any(g: _Gate, words: tuple[str, ...]) -> bool:
    folded = g.folded
    return any(w in folded for w in words)


#: Necessary conditions, cheap to test, under which a pattern *can* produce a finding (a match that also
#: passes its validator); a pattern whose condition is false is not run. Each one is implied by the pattern
#: itself (a literal it must contain, or the digits its validator requires), so skipping never changes
#: the findings — ``tests/telemetry/test_masking.py`` checks that against the ungated scan.
_NEEDS: dict[str, Callable[[_Gate], bool]] = {
    "pem": lambda g: "PRIVATE KEY-----" in g.text,
    "provider_key": lambda g: any(p in g.text for p in _PROVIDER_PREFIXES),
    "assignment": lambda g: _has_any(g, ("api", "secret", "token", "passw")),
    "canary": lambda g: "CANARY-" in g.text,
    "bearer": lambda g: _has_any(g, ("bearer",)),
    "jwt": lambda g: "eyJ" in g.text,
    "email": lambda g: "@" in g.text,
    "iban": lambda g: g.digits >= 2 and _IBAN_HEAD.search(g.text) is not None,
    "card": lambda g: g.digits >= 12 and g.run7,  # _card_ok: 12–19 digits, apart by at most one [ -]
    "phone": lambda g: g.run7,  # _phone_ok: 7–15 digits
    "phone_compact": lambda g: g.run7,
}


NER_KINDS = frozenset({"PERSON", "LOCATION"})


def merge_findings(found: list[tuple[int, int, float, str]]) -> list[tuple[int, int, str]]:
    """Merge overlapping (start, end, score, kind) findings into disjoint spans covering their union.

    Masking the union means a partial overlap can never leave part of a value raw. The merged span takes
    the kind of its strongest member: pattern kinds before NER kinds, then the higher score, then the longer.
    """
    found = sorted(found, key=lambda f: (f[0], -f[1]))
    merged: list[tuple[int, int, str]] = []
    group: list[tuple[int, int, float, str]] = []
    end = -1

    def close() -> None:
        if group:
            best = max(group, key=lambda f: (f[3] not in NER_KINDS, f[2], f[1] - f[0]))
            merged.append((group[0][0], max(f[1] for f in group), best[3]))

    for f in found:
        if f[0] >= end:
            close()
            group = [f]
        else:
            group.append(f)
        end = max(end, f[1])
    close()
    return merged


def _findings(text: str, *, gated: bool = True) -> list[tuple[int, int, str]]:
    """Disjoint (start, end, kind) spans of everything the recognizers find (see :func:`merge_findings`)."""
    found: list[tuple[int, int, float, str]] = []
    gate = _Gate(text)
    for kind, name, pattern, score, check in _COMPILED:
        needs = _NEEDS.get(name)
        if gated and needs is not None and not needs(gate):
            continue
        for m in pattern.finditer(text):
            if m.end() > m.start() and (check is None or check(m.group(0))):
                found.append((m.start(), m.end(), score, kind))
    return merge_findings(found)


class PatternMasker:
    """Charter's recognizers with the standard library only; deterministic placeholders keyed by ``salt``."""

    def __init__(self, salt: bytes = b"charter") -> None:
        self._salt = salt

    def _placeholder(self, kind: str, value: str) -> str:
        digest = hmac.new(self._salt, value.encode(), hashlib.sha256).hexdigest()[:8]
        return f"<{kind}_{digest}>"

    def mask(self, text: str) -> str:
        out, pos = [], 0
        for start, stop, kind in _findings(text):
            out.append(text[pos:start])
            out.append(self._placeholder(kind, text[start:stop]))
            pos = stop
        out.append(text[pos:])
        return "".join(out)


class NullMasker:
    """``monitoring.masking: off`` — content is stored as the field policies say, without recognizers."""

    def mask(self, text: str) -> str:
        return text


def find_sensitive(text: str) -> list[tuple[str, str]]:
    """Every (kind, value) the pattern recognizers find in ``text``."""
    return [(kind, text[start:stop]) for start, stop, kind in _findings(text)]


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
