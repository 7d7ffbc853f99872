"""Canary tokens: the one definition used by the check stage, the eval scorers and masking.

A canary is a unique token planted in a restricted document; seeing it in an answer, a note, a trace or an
eval output proves that content of that document got there. The built-in pattern :data:`DEFAULT_PATTERN`
matches ``CANARY``-style tokens with any prefix and at least one suffix part — ``CANARY-FIN-7d3a91``,
``ACME-CANARY-2f9c``, ``CANARY-PROBE-0a1b2c3d4e5f``, ``acme_CANARY_x1`` — and always applies. A charter adds
its own shapes in ``monitoring.canaries`` (a list of regular expressions); they add to the built-in pattern,
they never replace it, so a configuration cannot switch canary detection off.

Invariants: :meth:`Canaries.find` runs on text as given (callers normalise first, see
``charter._answer_checks.normalise`` and ``charter.telemetry.masking.normalise_for_masking``); a pattern that can
match the empty string, or does not compile, is refused with a :class:`~charter.errors.UsageError` that
names it. This module imports nothing heavy: the check stage and the evals load it on every request.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from charter.errors import UsageError

#: ``CANARY`` with any prefix (letters, digits, ``-`` or ``_``) and at least one ``-``/``_``-separated part
#: after it, ending on a letter or digit (so a full stop or a closing bracket after it is not part of it).
DEFAULT_PATTERN = r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]*CANARY[-_][A-Za-z0-9_-]*[A-Za-z0-9]"
#: A literal every match of :data:`DEFAULT_PATTERN` contains (a cheap pre-filter, e.g. in SQL ``LIKE``).
DEFAULT_LITERAL = "CANARY"
MAX_PATTERN_LENGTH = 500


def validate_pattern(pattern: str) -> str:
    """``pattern`` if it is a usable canary regex; else :class:`UsageError` saying what to fix."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise UsageError("a canary pattern must be a non-empty regular expression")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise UsageError(f"canary pattern is longer than {MAX_PATTERN_LENGTH} characters: {pattern[:60]!r}…")
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"canary pattern {pattern!r} is not a valid regular expression: {exc}") from None
    if compiled.fullmatch("") is not None or compiled.search("") is not None:
        raise UsageError(f"canary pattern {pattern!r} matches the empty string; it would flag every text")
    return pattern


class Canaries:
    """The built-in canary pattern plus a charter's own ones, compiled once."""

    __slots__ = ("_compiled", "extra", "patterns")

    def __init__(self, extra: Iterable[str] = ()) -> None:
        self.extra: tuple[str, ...] = tuple(validate_pattern(p) for p in extra if p != DEFAULT_PATTERN)
        self.patterns: tuple[str, ...] = (DEFAULT_PATTERN, *self.extra)
        self._compiled = tuple(re.compile(p) for p in self.patterns)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) of every canary match in ``text``, in order, possibly overlapping."""
        out: list[tuple[int, int]] = []
        for i, pattern in enumerate(self._compiled):
            if i == 0 and DEFAULT_LITERAL not in text:
                continue  # the built-in pattern needs its literal
            out.extend(m.span() for m in pattern.finditer(text) if m.end() > m.start())
        return sorted(out)

    def find(self, text: str) -> list[str]:
        """The distinct canary tokens in ``text``, sorted."""
        return sorted({text[s:e] for s, e in self.spans(text)})

    def __contains__(self, text: object) -> bool:
        return isinstance(text, str) and bool(self.spans(text))

    @property
    def sql_literal(self) -> str | None:
        """A substring every canary contains (for a ``LIKE`` pre-filter), or None when custom patterns
        make that impossible (then every row must be scanned)."""
        return None if self.extra else DEFAULT_LITERAL


@lru_cache(maxsize=64)
def canaries(extra: tuple[str, ...] = ()) -> Canaries:
    """The (cached) :class:`Canaries` for a charter's ``monitoring.canaries`` list."""
    return Canaries(extra)


def canaries_for(spec: object) -> Canaries:
    """The canaries of a charter spec (or of anything with ``.spec``, such as a runtime)."""
    inner = getattr(spec, "spec", spec)
    monitoring = getattr(inner, "monitoring", None)
    extra: Sequence[str] = getattr(monitoring, "canaries", ()) or ()
    return canaries(tuple(extra))


DEFAULT = canaries()
