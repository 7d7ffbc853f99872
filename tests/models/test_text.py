"""Sentence splitting for drafts and checks: the fast paths (tail-only abbreviation search, skipped link and
emphasis passes) split exactly as the plain definition does."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

_PIECES = [
    "e.g. ", "i.e. ", "approx. ", "Dr. ", "No. ", "A. ", "x approx. ", "See [the guide](http://x/y). ",
    "**Bold** ", "__under__ ", "`code` ", "a_b ", "Refunds take 5–10 days. ", "Pay now! ", "Why? ",
    "\n", "\n\n", "# Heading\n", "- item one\n", "1. first\n", "| A | B |\n", "|---|---|\n", "| x | y |\n",
    "> quoted. ", "(see How refunds work) ", "“Quoted.” Next ", "ſt. ", "  ", "\t",
]  # fmt: skip


def _reference_sentences(text: str) -> list[tuple[str, str]]:
    """sentences_with_headings as written before its fast paths (full regex passes, whole-string search)."""
    import re

    from charter.models import _text as T

    def inline(t: str) -> str:
        return re.sub(r"\s+", " ", T._EMPH.sub("", T._LINK.sub(r"\1", t))).strip()

    original = T._inline
    T._inline = inline  # type: ignore[assignment]
    try:
        lines = T.markdown_lines(text)
    finally:
        T._inline = original  # type: ignore[assignment]
    out: list[tuple[str, str]] = []
    for heading, line in lines:
        merged: list[str] = []
        for piece in T._SPLIT.split(line):
            if merged and T._ABBREV.search(merged[-1]):
                merged[-1] = merged[-1] + " " + piece
            else:
                merged.append(piece)
        out.extend((heading, s.strip()) for s in merged if s.strip())
    return out


@settings(max_examples=400)
@given(st.lists(st.one_of(st.sampled_from(_PIECES), st.text(max_size=12)), max_size=25))
def test_sentence_split_fast_paths_match_the_reference(parts: list[str]) -> None:
    from charter.models._text import sentences_with_headings

    text = "".join(parts)
    assert sentences_with_headings(text) == _reference_sentences(text)
