"""Just enough lexing of Cedar policy text to split it into policies and to locate errors.

cedarpy reports parse errors without a position ("unexpected token `action`"). To name the line we split
the text into statements (each policy ends with ``;``), parse the statements one by one, and within the
first one that fails we parse ever longer prefixes: the shortest prefix whose error is not "unexpected end
of input" ends at the offending token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import cedarpy

_EOF_ERROR = "unexpected end of input"
_PUNCT = ("::", "==", "!=", "<=", ">=", "&&", "||")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"\d+")
_BACKTICK = re.compile(r"`([^`]+)`")


@dataclass(frozen=True)
class Token:
    kind: str  # "word" | "string" | "number" | "punct"
    text: str
    start: int
    end: int
    line: int


@dataclass(frozen=True)
class Statement:
    """One policy's text (annotations included) and where it starts."""

    tokens: tuple[Token, ...]
    start: int
    end: int
    line: int
    complete: bool  # ends with ';'

    def text(self, source: str) -> str:
        return source[self.start : self.end]

    @property
    def annotations(self) -> dict[str, str]:
        """``@key("value")`` annotations at the head of the statement."""
        out: dict[str, str] = {}
        toks = self.tokens
        i = 0
        while i + 1 < len(toks) and toks[i].text == "@" and toks[i + 1].kind == "word":
            key = toks[i + 1].text
            value = ""
            i += 2
            if (
                i + 2 < len(toks)
                and toks[i].text == "("
                and toks[i + 1].kind == "string"
                and toks[i + 2].text == ")"
            ):
                value = unquote(toks[i + 1].text)
                i += 3
            out[key] = value
        return out

    @property
    def effect(self) -> str | None:
        for t in self.tokens:
            if t.kind == "word" and t.text in ("permit", "forbid"):
                return t.text
        return None


def unquote(literal: str) -> str:
    """The value of a Cedar string literal (common escapes only; good enough for ids and annotations)."""
    body = literal[1:-1] if len(literal) >= 2 and literal.endswith('"') else literal[1:]
    escapes = {"n": "\n", "t": "\t", "r": "\r", "0": "\0"}
    return re.sub(r"\\(.)", lambda m: escapes.get(m.group(1), m.group(1)), body)


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            end = min(j + 1, n)
            tokens.append(Token("string", text[i:end], i, end, line))
            line += text.count("\n", i, end)
            i = end
        elif m := _WORD.match(text, i):
            tokens.append(Token("word", m.group(), i, m.end(), line))
            i = m.end()
        elif m := _NUMBER.match(text, i):
            tokens.append(Token("number", m.group(), i, m.end(), line))
            i = m.end()
        else:
            two = text[i : i + 2]
            size = 2 if two in _PUNCT else 1
            tokens.append(Token("punct", text[i : i + size], i, i + size, line))
            i += size
    return tokens


def statements(text: str) -> list[Statement]:
    """Split policy text into statements; a trailing statement without ``;`` is marked incomplete."""
    out: list[Statement] = []
    current: list[Token] = []
    for tok in tokenize(text):
        current.append(tok)
        if tok.text == ";":
            out.append(Statement(tuple(current), current[0].start, tok.end, current[0].line, True))
            current = []
    if current:
        out.append(Statement(tuple(current), current[0].start, current[-1].end, current[0].line, False))
    return out


def _parse_error(text: str) -> str | None:
    try:
        cedarpy.PolicySet.from_str(text)
    except ValueError as exc:
        return str(exc) or "cannot parse"
    return None


def locate_parse_error(text: str) -> tuple[int | None, str] | None:
    """``None`` if ``text`` parses; else ``(line, message)`` of the first error (line may be unknown)."""
    message = _parse_error(text)
    if message is None:
        return None
    for stmt in statements(text):
        stmt_error = _parse_error(stmt.text(text))
        if stmt_error is None:
            continue
        line, hint = _locate_in_statement(text, stmt, stmt_error)
        return line, stmt_error + hint
    return None, message


def _locate_in_statement(text: str, stmt: Statement, message: str) -> tuple[int, str]:
    """The line of the offending token, and a hint to append to the message."""
    culprit: Token | None = None
    for k, tok in enumerate(stmt.tokens):
        err = _parse_error(text[stmt.start : tok.end])
        if err is not None and err != _EOF_ERROR:
            culprit = stmt.tokens[k]
            if k >= 2 and stmt.tokens[k - 1].text in ("permit", "forbid"):
                effects = [t for t in stmt.tokens[:k] if t.text in ("permit", "forbid")]
                if len(effects) > 1:
                    prev = stmt.tokens[k - 1]
                    return prev.line, f" (is the ';' missing before the policy on line {prev.line}?)"
            break
    named = _BACKTICK.search(message)
    if named and (culprit is None or culprit.text != named.group(1)):
        for tok in stmt.tokens:
            if tok.text == named.group(1) or tok.text == f'"{named.group(1)}"':
                return tok.line, ""
    if culprit is None or (culprit.text == ";" and culprit is stmt.tokens[-1] and not named):
        if not stmt.complete and stmt.tokens:
            return stmt.tokens[-1].line, ""  # unterminated policy: the error is at its end
        return stmt.line, ""
    return culprit.line, ""


@dataclass(frozen=True)
class EntityRef:
    """A literal entity uid in policy text, e.g. ``Charter::Group::"contractors"``."""

    type: str  # full type path, e.g. "Charter::Group"
    id: str
    line: int


def entity_refs(stmt: Statement) -> list[EntityRef]:
    """Every ``Path::"id"`` literal in a statement."""
    refs: list[EntityRef] = []
    toks = stmt.tokens
    for i, tok in enumerate(toks):
        if tok.kind != "string" or i < 2 or toks[i - 1].text != "::":
            continue
        parts: list[str] = []
        j = i - 2
        while j >= 0 and toks[j].kind == "word":
            parts.insert(0, toks[j].text)
            if j >= 1 and toks[j - 1].text == "::":
                j -= 2
            else:
                break
        if parts:
            refs.append(EntityRef("::".join(parts), unquote(tok.text), tok.line))
    return refs
