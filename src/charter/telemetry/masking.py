"""Masking at one choke point: every write of content goes through :func:`protect`.

The :class:`Masker` protocol has one method; the default :class:`PatternMasker` recognises e-mail
addresses, phone numbers, payment cards (Luhn-checked), IBANs (mod-97), secrets (API keys, bearer tokens,
JWTs, private keys) and canary tokens (:mod:`charter.canaries`). Masking is deterministic per value
(``<EMAIL_1a2b3c>``) so analysts can follow an entity without seeing it. If masking fails, the value is
replaced by :data:`REDACTED` — never stored raw (fail closed).

Invariants: the recognizers run on the *normalised* text (:func:`normalise_for_masking`: NFKC, format
characters such as zero-width spaces and bidi controls removed) and every finding is mapped back to the
original characters, which are replaced; a value is recognised whatever punctuation, bracket, quote or line
break surrounds it (only a character that would continue the value stops a match at its edge). Tested by
construction in ``tests/telemetry/test_masking_properties.py`` against independent oracles.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Protocol

from charter.canaries import DEFAULT as DEFAULT_CANARIES
from charter.canaries import DEFAULT_PATTERN as DEFAULT_CANARY
from charter.canaries import Canaries

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
    s = re.sub(r"[\s-]", "", candidate).upper()
    if not 15 <= len(s) <= 34 or not s[:2].isalpha() or not s[2:4].isdigit():
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


# ---------------------------------------------------------------------------------------- normalisation
def _invisible(ch: str) -> bool:
    """Format characters (zero-width spaces and joiners, bidi controls, soft hyphen, BOM …): removed."""
    return unicodedata.category(ch) == "Cf"


def normalise_for_masking(text: str) -> tuple[str, list[int] | None, list[int] | None]:
    """``(normalised, starts, ends)``: ``text`` with every character NFKC-normalised (full-width ``＠`` and
    digits, no-break spaces, ligatures become ASCII) and format characters (zero-width, bidi controls)
    removed. ``starts[j]``/``ends[j]`` is the span of the original character that produced normalised
    character ``j``; both are None when the text is unchanged (the common, ASCII case)."""
    if text.isascii():
        return text, None, None
    # each distinct non-ASCII character classified once (a text repeats the few it has: "–", "é")
    if unicodedata.is_normalized("NFKC", text) and not any(_invisible(c) for c in set(text) if c > "\x7f"):
        return text, None, None
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for i, ch in enumerate(text):
        if ch.isascii():
            out.append(ch)
            starts.append(i)
            ends.append(i + 1)
            continue
        if _invisible(ch):
            continue
        norm = unicodedata.normalize("NFKC", ch)
        for c in norm:
            if not _invisible(c):
                out.append(c)
                starts.append(i)
                ends.append(i + 1)
    return "".join(out), starts, ends


# ----------------------------------------------------------------------------------------- recognizers
# Boundaries. A value is recognised whatever punctuation, bracket, quote or line break surrounds it: the
# only things that stop a match at its edge are characters that would *continue* the value (a letter or
# digit for words and keys; a digit, or a decimal point or comma followed by a digit, for numbers).
_NOT_WORD_BEFORE = r"(?<![A-Za-z0-9])"
_NOT_WORD_AFTER = r"(?![A-Za-z0-9])"
_NUMBER_BEFORE = r"(?<![\dA-Za-z])(?<!\d[.,:])"  # not inside a number or word, a decimal or a time
_NUMBER_AFTER = r"(?!\d)(?![.,]\d)"
#: Between the digit groups of a card: one of ``- . / _`` (with optional spaces around it) or 1–4 spaces.
_CARD_SEP = r"(?: {0,3}[-./_] {0,3}| {1,4})"

PatternSpec = tuple[str, str, float]  # name, regex, score
#: Charter's recognizers: (entity kind, patterns, validator). Both maskers run exactly these, on the
#: normalised text (see :func:`normalise_for_masking`); the canary pattern is :mod:`charter.canaries`'.
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
                _NOT_WORD_BEFORE
                + r"(?:sk-(?:proj-|ant-|live-|test-)?[A-Za-z0-9_-]{16,}|(?:AKIA|ASIA)[0-9A-Z]{16}"
                r"|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|xox[abprs]-[A-Za-z0-9-]{10,}"
                r"|AIza[0-9A-Za-z_-]{35}|(?:rk|pk|sk)_(?:live|test)_[A-Za-z0-9]{16,}"
                r"|glpat-[A-Za-z0-9_-]{20,}|chr_[a-z0-9]{12}_[A-Za-z0-9_-]{20,})",
                1.0,
            ),
            (
                "assignment",
                r"(?i)(?<![A-Za-z0-9])(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token"
                r"|password|passwd|client[_-]?secret)(?![A-Za-z0-9])\s*[:=]\s*[\"']?[^\s\"',;]{6,}",
                0.9,
            ),
        ],
        None,
    ),
    # canary tokens planted in restricted documents: never in a trace, span or report, whoever reads it
    ("CANARY", [("canary", DEFAULT_CANARY, 1.0)], None),
    ("BEARER", [("bearer", r"(?i)(?<![A-Za-z0-9])bearer\s+[A-Za-z0-9._~+/=-]{12,}", 1.0)], None),
    (
        "JWT",
        [("jwt", _NOT_WORD_BEFORE + r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", 1.0)],
        None,
    ),
    (
        "EMAIL",
        [
            (
                "email",
                r"(?<![A-Za-z0-9_.%+-])[A-Za-z0-9_.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
                + _NOT_WORD_AFTER,
                1.0,
            )
        ],
        None,
    ),
    (
        "IBAN",
        [
            (
                "iban",
                r"(?i)"
                + _NOT_WORD_BEFORE
                + r"[A-Z]{2}\d{2}(?:[ -]?[A-Z0-9]{4}){2,7}(?:[ -]?[A-Z0-9]{1,4})?"
                + _NOT_WORD_AFTER,
                0.95,
            )
        ],
        _iban_ok,
    ),
    ("CARD", [("card", _NUMBER_BEFORE + r"\d(?:" + _CARD_SEP + r"?\d){11,18}(?!\d)", 0.95)], _card_ok),
    (
        "PHONE",
        [
            (
                # groups of digits separated by space, dot or dash, optionally +CC / 00CC and an (area) code;
                # not an ISO date, not a dotted date, not the tail of an identifier such as INV-2026-0042
                "phone",
                r"(?<![\d+A-Za-z])(?<!\d[.,:])(?<![A-Za-z]-)(?!\d{4}-\d{2}-\d{2}(?!\d))"
                r"(?!\d{1,2}[./-]\d{1,2}[./-]\d{4}(?!\d))"
                r"(?:(?:\+|00)\d{1,3}[ .-]?)?(?:\(\d{1,5}\)[ .-]?)?\d{1,8}(?:[ .-]\d{1,8}){1,5}"
                r"(?:\s?(?:x|ext\.?)\s?\d{1,6})?" + _NUMBER_AFTER,
                0.7,
            ),
            (
                "phone_compact",
                r"(?<![\d+A-Za-z])(?<!\d[.,:])(?<![A-Za-z]-)(?:(?:\+|00)\d{8,14}|\(\d{2,5}\)[ .-]?\d{5,9}|\d{10,11}"
                r"|0\d{8})(?:\s?(?:x|ext\.?)\s?\d{1,6})?" + _NUMBER_AFTER,
                0.6,
            ),
        ],
        _phone_ok,
    ),
]
#: Kinds whose validator is a checksum: when a greedy match fails it (a card followed by an expiry date, an
#: IBAN followed by a word), its sub-spans cut at separators are tried, longest first.
_SHRINK_KINDS = frozenset({"CARD", "IBAN"})

_FLAGS = re.MULTILINE | re.DOTALL
_COMPILED: list[tuple[str, str, re.Pattern[str], float, Callable[[str], bool] | None]] = [
    (kind, name, re.compile(regex, _FLAGS), score, check)
    for kind, pats, check in RECOGNIZERS
    for name, regex, score in pats
    if name != "canary"  # run through charter.canaries (built-in pattern plus the charter's own)
]

_DIGIT = re.compile(r"\d")  # the same (Unicode) digits the patterns' \d matches
# Seven digits apart by at most seven characters of " .()/_-": every phone the validator accepts (7+ digits
# before any extension, in groups separated by one [ .-], after an optional +CC / (area) code) and every
# card (12+ digits apart by at most one card separator) contains such a run.
_SEVEN_DIGITS = re.compile(r"\d(?:[ .()/_-]{0,7}\d){6}")
_IBAN_HEAD = re.compile(r"(?i)[A-Z]{2}\d{2}")
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
    "bearer": lambda g: _has_any(g, ("bearer",)),
    "jwt": lambda g: "eyJ" in g.text,
    "email": lambda g: "@" in g.text,
    "iban": lambda g: g.digits >= 2 and _IBAN_HEAD.search(g.text) is not None,
    "card": lambda g: g.digits >= 12 and g.run7,  # _card_ok: 12–19 digits, apart by at most one separator
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


def _shrunk(
    text: str, start: int, end: int, pattern: re.Pattern[str], check: Callable[[str], bool]
) -> tuple[int, int] | None:
    """The first sub-span of a failed match (the earliest start, then the longest), cut where a separator
    meets a letter or digit, that the pattern matches on its own and the validator accepts (None if there
    is none). Earliest first: the scan goes on from inside the span returned, so a valid value before a
    longer one ("IBAN-1 this IBAN-2" where IBAN-2 is written with spaces) must not be passed over."""
    starts = [start] + [p for p in range(start + 1, end) if text[p].isalnum() and not text[p - 1].isalnum()]
    ends = [p for p in range(start + 1, end) if text[p - 1].isalnum() and not text[p].isalnum()] + [end]
    spans = sorted(((s, e) for s in starts[:24] for e in ends[-24:] if e > s), key=lambda se: (se[0], -se[1]))
    for s, e in spans:
        if (s, e) != (start, end) and pattern.fullmatch(text, s, e) is not None and check(text[s:e]):
            return s, e
    return None


def _scan(text: str, *, gated: bool, canaries: Canaries) -> list[tuple[int, int, float, str]]:
    found: list[tuple[int, int, float, str]] = [(s, e, 1.0, "CANARY") for s, e in canaries.spans(text)]
    gate = _Gate(text)
    for kind, name, pattern, score, check in _COMPILED:
        needs = _NEEDS.get(name)
        if gated and needs is not None and not needs(gate):
            continue
        pos = 0
        while (m := pattern.search(text, pos)) is not None:
            start, end = m.span()
            pos = max(end, start + 1)
            if end <= start:
                continue
            if check is None or check(m.group(0)):
                found.append((start, end, score, kind))
            elif kind in _SHRINK_KINDS:
                # a greedy match that fails its checksum may have swallowed the start of the next value
                # ("IBAN-1 this IBAN-2 …"): the search resumes inside the match, at the second word of
                # its first valid part (or, if none, of the match) — not after it, so a value starting
                # inside or overlapping that part is still found (overlaps are merged into one span)
                sub = _shrunk(text, start, end, pattern, check)
                if sub is not None:
                    found.append((sub[0], sub[1], score, kind))
                    pos = _next_word(text, sub[0], end)
                else:
                    pos = _next_word(text, start, end)
    return found


def _next_word(text: str, start: int, end: int) -> int:
    """Where the second word of ``text[start:end]`` starts (``end`` if it has one word)."""
    p = start + 1
    while p < end and not (text[p].isalnum() and not text[p - 1].isalnum()):
        p += 1
    return p


def _findings(
    text: str, *, gated: bool = True, canaries: Canaries = DEFAULT_CANARIES
) -> list[tuple[int, int, str]]:
    """Disjoint (start, end, kind) spans of ``text`` — positions in the text as given — of everything the
    recognizers find in its normalised form (see :func:`normalise_for_masking`, :func:`merge_findings`)."""
    norm, starts, ends = normalise_for_masking(text)
    found = _scan(norm, gated=gated, canaries=canaries)
    if starts is not None and ends is not None:
        found = [(starts[s], ends[e - 1], score, kind) for s, e, score, kind in found]
    return merge_findings(found)


class PatternMasker:
    """Charter's recognizers with the standard library only; deterministic placeholders keyed by ``salt``.

    ``canaries`` adds a charter's own canary patterns to the built-in one (:mod:`charter.canaries`).
    """

    def __init__(
        self, salt: bytes = b"charter", *, canaries: Canaries | None = None, cache_size: int = 8192
    ) -> None:
        self._salt = salt
        self.canaries = canaries or DEFAULT_CANARIES
        self._mask_cached = lru_cache(maxsize=cache_size)(self._mask)

    def _placeholder(self, kind: str, value: str) -> str:
        return placeholder(self._salt, kind, value)

    def findings(self, text: str) -> list[tuple[int, int, str]]:
        """Disjoint (start, end, kind) spans of every sensitive value in ``text``."""
        return _findings(text, canaries=self.canaries)

    def _mask(self, text: str) -> str:
        return apply_findings(text, self.findings(text), self._salt)

    def mask(self, text: str) -> str:
        if len(text) > 4096:  # long texts: do not fill the cache with them
            return self._mask(text)
        return self._mask_cached(text)


def placeholder(salt: bytes, kind: str, value: str) -> str:
    """``<KIND_hmac8>`` of the value's normalised form: one value, one placeholder (full-width or not)."""
    norm = normalise_for_masking(value)[0]
    digest = hmac.new(salt, norm.encode(), hashlib.sha256).hexdigest()[:8]
    return f"<{kind}_{digest}>"


def apply_findings(text: str, spans: list[tuple[int, int, str]], salt: bytes) -> str:
    """``text`` with each disjoint (start, end, kind) span replaced by its placeholder."""
    if not spans:
        return text
    out, pos = [], 0
    for start, stop, kind in spans:
        out.append(text[pos:start])
        out.append(placeholder(salt, kind, text[start:stop]))
        pos = stop
    out.append(text[pos:])
    return "".join(out)


class NullMasker:
    """``monitoring.masking: off`` — content is stored as the field policies say, without recognizers."""

    def mask(self, text: str) -> str:
        return text


def find_sensitive(text: str, canaries: Canaries = DEFAULT_CANARIES) -> list[tuple[str, str]]:
    """Every (kind, value) the pattern recognizers find in ``text``."""
    return [(kind, text[start:stop]) for start, stop, kind in _findings(text, canaries=canaries)]


def hash_value(value: str, salt: bytes = b"charter") -> str:
    """A pseudonymous, stable id for a value (e.g. a principal in analytics views)."""
    return "h:" + hmac.new(salt, value.encode(), hashlib.sha256).hexdigest()[:16]


class _NotPlain(Exception):
    """Raised by :func:`_mask_plain` on anything but plain JSON-shaped values."""


def _mask_plain(value: Any, mask: Callable[[str], str]) -> Any:
    """:func:`mask_any` for plain JSON-shaped values (exact ``str``/``dict``/``list``/scalar types, as
    ``model_dump(mode="json")`` makes them) without the per-level ``isinstance`` chain and ``try`` — the
    trace writer's hot path. Anything else raises :class:`_NotPlain`, and the caller redoes the whole
    value the general way, so the result is always exactly :func:`_mask_general`'s."""
    t = type(value)
    if t is str:
        return mask(value)
    if t is dict:
        return {(mask(k) if type(k) is str else k): _mask_plain(v, mask) for k, v in value.items()}
    if t is list:
        return [_mask_plain(v, mask) for v in value]
    if value is None or t is bool or t is int or t is float:
        return value
    raise _NotPlain


def mask_any(value: Any, masker: Masker) -> Any:
    """Mask every string inside ``value`` (dicts, lists, scalars); fail closed on any error: a part whose
    masking raises is stored as ``[REDACTED]``, never as-is."""
    try:
        return _mask_plain(value, masker.mask)
    except Exception:  # not plain JSON, or a masker error: the general walk decides part by part
        return _mask_general(value, masker)


def _mask_general(value: Any, masker: Masker) -> Any:
    try:
        if isinstance(value, str):
            return masker.mask(value)
        if isinstance(value, dict):
            return {
                (masker.mask(k) if isinstance(k, str) else k): _mask_general(v, masker)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [_mask_general(v, masker) for v in value]
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
