"""ACL tokens: parsing what connectors find, and the effective tokens the index stores.

A document ACL is a set of tokens: ``public``, ``group:<id>`` or ``user:<id>`` (ids are charter
identifiers: lower-case letters, digits, ``_``, ``-``, ``.``). Anything else makes the *whole* ACL invalid:
we never guess which half of a malformed list the author meant. The sync then treats the document as
private — readable only by the source owner — and reports it (fail closed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from charter.errors import CharterError
from charter.spec import is_valid_token

if TYPE_CHECKING:
    from charter.spec import Source

MAX_ACL_TOKENS = 1000


class AclParseError(CharterError):
    """An ACL value that is not a list of valid tokens; connectors turn it into ``Document.acl_error``."""


def parse_acl(value: Any) -> frozenset[str]:
    """Parse an ACL as written by people: a list of tokens, or one string of comma/space-separated tokens.

    Raises :class:`AclParseError` with a short reason when the value is missing, empty or holds a token
    that is not ``public``, ``group:<id>`` or ``user:<id>``.
    """
    if value is None:
        raise AclParseError("no ACL")
    if isinstance(value, str):
        items: list[Any] = [t for t in re.split(r"[,\s]+", value.strip()) if t]
    elif isinstance(value, list | tuple | set | frozenset):
        items = list(value)
    else:
        raise AclParseError(f"ACL must be a list of tokens, not {type(value).__name__}")
    if not items:
        raise AclParseError("empty ACL")
    if len(items) > MAX_ACL_TOKENS:
        raise AclParseError(f"ACL has more than {MAX_ACL_TOKENS} tokens")
    tokens: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            raise AclParseError(f"ACL token must be a string, not {type(item).__name__}: {item!r}"[:200])
        token = item.strip()
        if not is_valid_token(token):
            raise AclParseError(
                f"invalid ACL token {token[:80]!r} (expected 'public', 'group:<id>' or 'user:<id>')"
            )
        tokens.add(token)
    return frozenset(tokens)


def parse_acl_file(text: str) -> frozenset[str]:
    """A sidecar ``.acl`` file: tokens separated by newlines, commas or spaces; ``#`` starts a comment."""
    lines = [line.split("#", 1)[0] for line in text.splitlines()]
    return parse_acl(" ".join(lines))


@dataclass(frozen=True)
class EffectiveAcl:
    """The tokens the index stores for a document, and whether they came from the fail-closed rule."""

    tokens: frozenset[str]
    private_by_default: bool
    reason: str | None = None  # why the document is private by default


def owner_only(source: Source) -> frozenset[str]:
    return frozenset({f"user:{source.owner}"})


def effective_acl(source: Source, acl: frozenset[str] | None, acl_error: str | None = None) -> EffectiveAcl:
    """The ACL tokens a document of ``source`` is indexed with.

    * ``public`` model: ``{"public"}`` whatever the document says;
    * ``groups`` model: ``{"group:<g>" for g in permissions.groups}``;
    * ``per-document`` model: the document's own ACL, or — when it is missing, empty or unparseable —
      ``{"user:<source owner>"}`` with ``private_by_default=True`` (fail closed).
    """
    model = source.permissions.model
    if model == "public":
        return EffectiveAcl(frozenset({"public"}), False)
    if model == "groups":
        return EffectiveAcl(frozenset(f"group:{g}" for g in source.permissions.groups), False)
    if model == "per-document":
        if acl:
            bad = sorted(t for t in acl if not is_valid_token(t))
            if not bad:
                return EffectiveAcl(frozenset(acl), False)
            acl_error = f"invalid ACL token {bad[0][:80]!r}"
        return EffectiveAcl(owner_only(source), True, acl_error or "no ACL")
    # An unknown model cannot come from a validated charter; deny anyway.
    return EffectiveAcl(owner_only(source), True, f"unknown permission model {model!r}")


# --------------------------------------------------------------------------------------------- path rules
_GLOB_CACHE: dict[str, re.Pattern[str]] = {}


def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex: ``**`` matches anything (including ``/``), ``*`` and ``?`` stay within one
    segment, everything else is literal. ``dir/**`` also matches ``dir`` itself; a leading ``/`` is
    optional on both sides."""
    cached = _GLOB_CACHE.get(pattern)
    if cached is not None:
        return cached
    p = pattern.lstrip("/")
    out, i = [], 0
    while i < len(p):
        if p.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif p.startswith("/**", i) and i + 3 == len(p):
            out.append("(?:/.*)?")
            i += 3
        elif p.startswith("**", i):
            out.append(".*")
            i += 2
        elif p[i] == "*":
            out.append("[^/]*")
            i += 1
        elif p[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(p[i]))
            i += 1
    rx = re.compile("^" + "".join(out) + "$", re.DOTALL)
    _GLOB_CACHE[pattern] = rx
    return rx


def glob_match(pattern: str, path: str) -> bool:
    """Whether ``path`` matches the glob ``pattern`` (see :func:`glob_regex`)."""
    return bool(glob_regex(pattern).match(path.lstrip("/")))


def rule_acl(rules: Any, path: str) -> frozenset[str] | None:
    """The ACL of the **last** rule (``.path``, ``.acl``) whose glob matches ``path``; ``None`` if none does."""
    found: frozenset[str] | None = None
    for rule in rules:
        if glob_match(rule.path, path):
            found = frozenset(rule.acl)
    return found
