"""Sentence-level text handling for drafts: markdown to sentences, relevance by lexical overlap, and the
detector for text that addresses an AI (prompt-injection attempts) rather than informing a reader.

The detector is deliberately over-eager: a false positive drops one sentence from a draft; a false
negative would put an attacker's words into an outbound reply.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

from charter.models._render import clean_text
from charter.screening import screen_text

# --------------------------------------------------------------------------------------------- markdown
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPH = re.compile(r"(\*\*|__|\*|`)")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}")
_ABBREV = re.compile(
    r"(?:\b(?:e\.g|i\.e|etc|vs|approx|incl|no|nr|inc|ltd|co|mr|mrs|ms|dr|st|min|max|fig)\.|\b[A-Z]\.)$",
    re.IGNORECASE,
)
_SPLIT = re.compile(r"(?<=[.!?])[\"'”’)]*\s+(?=[\"'“‘(]*[A-Z0-9€$£])")


_SPACES = re.compile(r"\s+")


def _inline(text: str) -> str:
    if "](" in text:  # a link needs "](" (checked first: most lines have none)
        text = _LINK.sub(r"\1", text)
    if "*" in text or "_" in text or "`" in text:
        text = _EMPH.sub("", text)
    return _SPACES.sub(" ", text).strip()


def _table_row(header: list[str], cells: list[str]) -> str:
    """``Day | What happens`` / ``14 | Suspended`` → ``Day 14: Suspended.``;
    ``Method | Time to arrive`` / ``Card | 5 days`` → ``Card — Time to arrive: 5 days.``"""
    first = cells[0] if cells else ""
    short_key = len(first) <= 4 or first.replace(",", "").replace(" ", "").isdigit()
    key = f"{header[0]} {first}".strip() if header and header[0] and short_key else first
    values = [c for c in cells[1:] if c and c not in {"—", "-"}]
    if len(cells) == 2 and len(header) == 2 and header[1] and not short_key:
        key = f"{key} — {header[1]}"
    elif len(cells) > 2 and len(header) == len(cells) and all(header[1:]):
        # several columns: name each value by its column ("Admin — Edit: Yes; Delete: Yes.")
        named = [f"{h}: {c.rstrip('.')}" for h, c in zip(header[1:], cells[1:], strict=True) if c]
        return f"{key} — {'; '.join(named)}." if named else ""
    rest = " ".join(c if c.endswith((".", "!", "?")) else c + "." for c in values)
    return f"{key}: {rest}".strip() if rest else ""


def markdown_lines(text: str) -> list[tuple[str, str]]:
    """Prose lines of a markdown passage with the heading they sit under: headings themselves are not
    lines, list markers and emphasis are removed, table rows become ``"<header> <key>: <cells>"`` lines,
    links are reduced to their text."""
    return [(heading, line) for heading, line, _item in markdown_blocks(text)]


def markdown_blocks(text: str) -> list[tuple[str, str, bool]]:
    """:func:`markdown_lines` with, for each line, whether it is a list item or a table row (``item``)."""
    out: list[tuple[str, str, bool]] = []
    header: list[str] | None = None
    paragraph: list[str] = []
    heading = ""

    def flush() -> None:
        if paragraph:
            out.append((heading, _inline(" ".join(paragraph)), False))
            paragraph.clear()

    for raw in clean_text(text).splitlines():
        line = raw.rstrip()
        stripped = line.strip()
        if not stripped:
            flush()
            header = None
            continue
        if stripped.startswith("#") or (stripped.startswith(">") and stripped.lstrip("> ").startswith("#")):
            flush()
            heading = _inline(stripped.lstrip("> ").lstrip("#"))
            continue
        if stripped.startswith("|"):
            flush()
            cells = [_inline(c) for c in stripped.strip("|").split("|")]
            if _TABLE_SEP.match(stripped.replace("|", "", 1)):
                continue
            if header is None:
                header = cells
                continue
            out.append((heading, _table_row(header, cells), True))
            continue
        if _BULLET.match(line):
            flush()
            out.append((heading, _inline(_BULLET.sub("", line)), True))
            continue
        paragraph.append(stripped.lstrip("> "))
    flush()
    return [(h, x, item) for h, x, item in out if x]


def sentences_with_headings(text: str) -> list[tuple[str, str]]:
    """``(heading, sentence)`` for every sentence of a markdown passage, in order."""
    return [(heading, sentence) for heading, sentence, _item in sentences_with_structure(text)]


def sentences_with_structure(text: str) -> list[tuple[str, str, bool]]:
    """``(heading, sentence, item)`` for every sentence of a markdown passage, in order; ``item``: the
    sentence belongs to a list item or a table row."""
    sentences: list[tuple[str, str, bool]] = []
    for heading, line, item in markdown_blocks(text):
        merged: list[str] = []
        for piece in _SPLIT.split(line):
            # every abbreviation match ends at the end of the piece and is at most 8 characters long:
            # search only the tail (``pos`` still lets ``\b`` see the character before it)
            if merged and _ABBREV.search(merged[-1], max(0, len(merged[-1]) - 9)):
                merged[-1] = merged[-1] + " " + piece
            else:
                merged.append(piece)
        sentences.extend((heading, s.strip(), item) for s in merged if s.strip())
    return sentences


def split_sentences(text: str) -> list[str]:
    """Sentences of a markdown passage, in order (headings are not sentences)."""
    return [s for _, s in sentences_with_headings(text)]


# --------------------------------------------------------------------------------------------- relevance
_STOP_WORDS = """
a about above after again against all am an and any are as at be because been before being below
between both but by can cannot could did do does doing down during each few for from further had has
have having he her here hers herself him himself his how i if in into is it its itself just me more
most my myself no nor not now of off on once only or other our ours ourselves out over own same she
should so some such than that the their theirs them themselves then there these they this those
through to too under until up very was we were what when where which while who whom why will with
would you your yours yourself yourselves get got please hi hello thanks thank
asks asked ask wants want know tell us also may might must shall im ive id dont doesnt isnt cant
wont
"""
_STOP = frozenset(_STOP_WORDS.split())


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A deliberately light stemmer: plural and common verb endings."""
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not word.endswith("ss"):
            return word[: -len(suffix)] + keep
    return word


def terms(text: str) -> list[str]:
    """Content terms of ``text``: lower-cased, stop words removed, lightly stemmed."""
    return list(_terms(text))


@functools.lru_cache(maxsize=32768)
def _terms(text: str) -> tuple[str, ...]:
    # passages repeat across requests: their sentences' terms are computed once per process
    words = re.findall(r"[a-z0-9]+", unicodedata.normalize("NFKC", text).lower())
    return tuple(stem(w) for w in words if w not in _STOP and (len(w) > 1 or w.isdigit()))


class Overlap:
    """Question-term coverage of candidate texts, IDF-weighted over the candidates."""

    def __init__(self, question: str, candidates: Iterable[str]) -> None:
        self.question_terms = list(dict.fromkeys(terms(question)))
        docs = [set(terms(c)) for c in candidates]
        df: Counter[str] = Counter()
        for d in docs:
            df.update(d)
        n = max(len(docs), 1)
        self.idf = {t: math.log(1 + n / (1 + df.get(t, 0))) + 0.1 for t in self.question_terms}
        self.total = sum(self.idf.values())

    def matched(self, text: str) -> frozenset[str]:
        """The question's terms that occur in ``text``."""
        found = set(terms(text))
        return frozenset(t for t in self.idf if t in found)

    def weight(self, matched: Iterable[str]) -> float:
        """IDF-weighted share of the question covered by ``matched`` terms, 0..1."""
        return sum(self.idf[t] for t in set(matched)) / self.total if self.total else 0.0

    def coverage(self, text: str) -> float:
        """Share of the question's (IDF-weighted) terms found in ``text``, 0..1."""
        return self.weight(self.matched(text))


# --------------------------------------------------------------------------------------------- injection
def looks_like_instruction(text: str) -> bool:
    """Whether any sentence of ``text`` addresses an AI (an injection attempt). The rule lives in one place,
    :mod:`charter.screening` (normalised view against invisible characters, look-alike letters, leetspeak,
    spaced-out letters and encoded payloads); this is its yes/no form."""
    return bool(screen_text(text).flagged)


def is_statement(sentence: str) -> bool:
    """A declarative sentence worth quoting: not a question, not a heading-like fragment, not too short."""
    s = sentence.strip()
    if not s or "?" in s or s.endswith(":") or s.lower().startswith(("see ", "for more")):
        return False
    words = s.split()
    if len(words) < 4 or len(words) > 80:
        return False
    return s[-1] in ".!" or len(words) >= 6
