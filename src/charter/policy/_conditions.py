"""The charter's condition mini-language for approval rules, and its strict translation to Cedar.

A condition compares tool arguments with literals::

    amount <= 100
    amount > 100 and currency == 'EUR'
    plan == 'enterprise' or amount >= 1000.50

Grammar (``and`` binds tighter than ``or``; there are no parentheses, functions or arithmetic)::

    condition  := conjunct ("or" conjunct)*
    conjunct   := comparison ("and" comparison)*
    comparison := ARG OP (NUMBER | STRING)
    ARG        := [a-z_][a-z0-9_]*                      (a key of the tool call's arguments)
    OP         := "<" | "<=" | ">" | ">=" | "==" | "!="
    NUMBER     := -?[0-9]+(.[0-9]{1,4})?                (at most 4 decimal places)
    STRING     := '...'                                 (single quotes; no quotes or backslashes inside)

Strings can only be compared with ``==`` and ``!=``. Anything else is rejected when the charter is checked.

Numbers become Cedar ``decimal`` values (Cedar has no floats; ``decimal`` holds 4 decimal places exactly),
so money is compared in currency units with cent precision and never rounded. Every generated comparison
makes Cedar raise a *type error* when the argument has the wrong type or is missing (``.lessThan`` needs a
decimal, ``like`` needs a string); a policy that errors is skipped, and because every generated conditional
policy is a ``permit``, a malformed argument can only ever deny.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from charter.errors import UsageError

# Cedar's decimal: a signed 64-bit integer scaled by 10^4.
DECIMAL_MAX = Decimal("922337203685477.5807")
DECIMAL_MIN = Decimal("-922337203685477.5808")

_TOKEN = re.compile(
    r"\s*(?:(?P<num>-?\d+(?:\.\d+)?)|(?P<str>'[^']*')|(?P<op><=|>=|==|!=|<|>)|(?P<word>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<bad>\S))"
)
_ARG = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
_STRING_OK = re.compile(r"^[^'\"\\\x00-\x1f\x7f]{0,200}$")
_KEYWORDS = {"and", "or"}
_NUMBER_OPS = {"<": "lessThan", "<=": "lessThanOrEqual", ">": "greaterThan", ">=": "greaterThanOrEqual"}


@dataclass(frozen=True)
class Comparison:
    """``arg op value`` where value is a :class:`~decimal.Decimal` or a ``str``."""

    arg: str
    op: str
    value: Decimal | str

    def to_cedar(self) -> str:
        ref = f'context.args["{self.arg}"]'
        if isinstance(self.value, str):
            # `like "*"` is true for every string and a type error for anything else: it pins the type,
            # so `plan != 'free'` cannot be satisfied by a number.
            return f'({ref} like "*" && {ref} {self.op} "{self.value}")'
        lit = f'decimal("{cedar_decimal(self.value)}")'
        if self.op in _NUMBER_OPS:
            return f"{ref}.{_NUMBER_OPS[self.op]}({lit})"
        if self.op == "==":
            return f"({ref}.greaterThanOrEqual({lit}) && {ref}.lessThanOrEqual({lit}))"
        return f"({ref}.lessThan({lit}) || {ref}.greaterThan({lit}))"  # !=

    def evaluate(self, args: dict[str, Any]) -> bool:
        if self.arg not in args:
            raise UsageError(f"argument {self.arg!r} is missing (needed by the condition '{self}')")
        actual = args[self.arg]
        if isinstance(self.value, str):
            if not isinstance(actual, str):
                raise UsageError(f"argument {self.arg!r} must be a string, got {type(actual).__name__}")
            return actual == self.value if self.op == "==" else actual != self.value
        number = to_decimal(actual, self.arg)
        return {
            "<": number < self.value,
            "<=": number <= self.value,
            ">": number > self.value,
            ">=": number >= self.value,
            "==": number == self.value,
            "!=": number != self.value,
        }[self.op]

    def __str__(self) -> str:
        value = f"'{self.value}'" if isinstance(self.value, str) else str(self.value)
        return f"{self.arg} {self.op} {value}"


@dataclass(frozen=True)
class Condition:
    """A parsed condition: a disjunction of conjunctions of comparisons."""

    text: str
    clauses: tuple[tuple[Comparison, ...], ...]

    def to_cedar(self) -> str:
        """A Cedar expression over ``context.args`` (parenthesised, so it can be combined)."""
        ors = [" && ".join(c.to_cedar() for c in conj) for conj in self.clauses]
        if len(ors) == 1:
            return f"({ors[0]})"
        return "(" + " || ".join(f"({o})" for o in ors) + ")"

    def evaluate(self, args: dict[str, Any]) -> bool:
        """Evaluate in Python with the same semantics; raises :class:`UsageError` on missing/mistyped args."""
        return any(all(c.evaluate(args) for c in conj) for conj in self.clauses)

    @property
    def args(self) -> frozenset[str]:
        return frozenset(c.arg for conj in self.clauses for c in conj)


def cedar_decimal(value: Decimal) -> str:
    """Format as a Cedar decimal literal (always 4 decimal places)."""
    return f"{value:.4f}"


def to_decimal(value: Any, name: str = "value") -> Decimal:
    """A number as an exact Decimal within Cedar's range; NaN, infinities, bools, strings are refused."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise UsageError(f"{name} must be a number, got {type(value).__name__}")
    try:
        number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except (InvalidOperation, ValueError):
        raise UsageError(f"{name} is not a valid number") from None
    if not number.is_finite():
        raise UsageError(f"{name} must be a finite number, got {value!r}")
    if not DECIMAL_MIN <= number <= DECIMAL_MAX:
        raise UsageError(f"{name} is out of range for a decimal (±9.2e14)")
    exponent = number.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -4 and number != number.quantize(Decimal("0.0001")):
        raise UsageError(f"{name} has more than 4 decimal places; it cannot be compared exactly")
    return number


def parse_condition(text: str) -> Condition:
    """Parse a condition; raises :class:`UsageError` naming the column and what was expected."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError("empty condition; expected e.g. 'amount > 100'")
    if len(text) > 1000:
        raise UsageError("condition is longer than 1000 characters")
    tokens: list[tuple[str, str, int]] = []  # (kind, text, column)
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # only trailing whitespace left
            break
        kind = m.lastgroup or "bad"
        tok = m.group(kind)
        if kind == "bad":
            raise UsageError(
                f"unexpected {tok!r} at column {m.start(kind) + 1} in condition {text!r}; "
                f"expected '<arg> <op> <number|'string'>' joined by 'and'/'or'"
            )
        tokens.append((kind, tok, m.start(kind) + 1))
        pos = m.end()
        if not text[pos:].strip():
            break

    clauses: list[tuple[Comparison, ...]] = []
    current: list[Comparison] = []
    i = 0

    def fail(msg: str, col: int | None) -> UsageError:
        where = f" at column {col}" if col else " at the end"
        return UsageError(
            f"{msg}{where} in condition {text!r}; expected '<arg> <op> <number|'string'>' "
            f"joined by 'and'/'or'"
        )

    while True:
        if i + 3 > len(tokens):
            col = tokens[i][2] if i < len(tokens) else None
            raise fail("incomplete comparison", col)
        (k1, arg, c1), (k2, op, c2), (k3, lit, c3) = tokens[i], tokens[i + 1], tokens[i + 2]
        if k1 != "word" or arg in _KEYWORDS or not _ARG.match(arg):
            raise fail(f"expected an argument name (lower-case), got {arg!r}", c1)
        if k2 != "op":
            raise fail(f"expected a comparison operator (<, <=, >, >=, ==, !=), got {op!r}", c2)
        value: Decimal | str
        if k3 == "num":
            if not re.fullmatch(r"-?\d+(?:\.\d{1,4})?", lit):
                raise fail(f"number {lit!r} has more than 4 decimal places", c3)
            value = Decimal(lit)
            if not DECIMAL_MIN <= value <= DECIMAL_MAX:
                raise fail(f"number {lit!r} is out of range", c3)
        elif k3 == "str":
            value = lit[1:-1]
            if not _STRING_OK.match(value):
                raise fail("strings may not contain quotes, backslashes or control characters", c3)
            if op not in ("==", "!="):
                raise fail(f"strings can only be compared with == or !=, not {op}", c2)
        else:
            raise fail(f"expected a number or a 'quoted string', got {lit!r}", c3)
        current.append(Comparison(arg, op, value))
        i += 3
        if i == len(tokens):
            clauses.append(tuple(current))
            return Condition(text=text.strip(), clauses=tuple(clauses))
        kind, word, wcol = tokens[i]
        if kind != "word" or word not in _KEYWORDS:
            raise fail(f"expected 'and' or 'or', got {word!r}", wcol)
        if word == "or":
            clauses.append(tuple(current))
            current = []
        i += 1
