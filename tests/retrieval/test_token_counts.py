"""The remembered per-piece token count (``count_tokens``) equals the tokenizer's count of the whole text,
and chunking with it gives exactly the chunks that counting with the tokenizer gives.

Oracle: ``tokenizer_counts`` — all-MiniLM-L6-v2's own ``tokenizer.json`` run on the whole text."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charter.retrieval._chunking import chunk_text, count_tokens, tokenizer_counts

pytestmark = pytest.mark.slow  # the real tokenizer over every example document

# Everything the BERT pipeline treats specially: every kind of whitespace and control character (some it
# deletes, joining their neighbours), punctuation, accents and combining marks, CJK (split per character),
# special-token look-alikes, words over WordPiece's 100-character limit, emoji.
SPECIAL = st.sampled_from(
    [
        " ",
        "\n",
        "\t",
        "\r",
        "\x0b",
        "\x0c",
        "\x1c",
        "\x1f",
        "\x85",
        "\xa0",
        "\u2003",
        "\u2028",
        "\u3000",
        "\u200b",
        "\ufeff",
        "\ufffd",
        "\x00",
        "\x07",
        "é",
        "e\u0301",
        "\u0301",
        "Σ",
        "ΟΔΟΣ",
        "İ",
        "ß",
        "ﬁ",
        "漢字",
        "かな",
        "한국어",
        "[MASK]",
        "[UNK]",
        "[CLS]",
        "##ing",
        "x" * 120,
        "🙂",
        "₿",
        "½",
        "…",
        "—",
        "it's",
        "e.g.",
        "U.S.A.",
        "3.14",
        "$100",
        "#",
        "##",
        "***",
        "<b>",
        "&amp;",
        "\\",
        "|",
        "-",
        "_",
    ]
)
WORDS = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
TEXT = st.lists(
    st.one_of(SPECIAL, WORDS, st.sampled_from(["refund", "invoice", "unaffable", "PostgreSQL"])), max_size=40
).map("".join)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(TEXT, min_size=1, max_size=6))
def test_counts_equal_the_tokenizer_on_the_whole_text(texts: list[str]) -> None:
    assert count_tokens(texts) == tokenizer_counts(texts)


MARKDOWN = st.lists(
    st.one_of(
        TEXT,
        st.sampled_from(
            ["\n\n", "\n", "# Title\n", "## Section two\n", "```\ncode  block\n```\n", ". ", "? ", "! "]
        ),
        st.text(st.sampled_from(list("abcdefgh .,;:!?\n")), min_size=1, max_size=200),
    ),
    max_size=30,
).map("".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MARKDOWN, st.integers(4, 80), st.integers(0, 16))
def test_same_chunks_as_counting_with_the_tokenizer(text: str, max_tokens: int, overlap: int) -> None:
    assert chunk_text(text, max_tokens, overlap) == chunk_text(
        text, max_tokens, overlap, count=tokenizer_counts
    )


def test_same_chunks_on_the_postgresql_manual() -> None:
    from charter.sources._extract import html_to_text

    pages = sorted(Path("/usr/share/doc/postgresql-doc-15/html").glob("*.html"))
    assert len(pages) > 1000, "apt-get install postgresql-doc-15 (scripts/setup installs it)"
    for path in pages[::6]:
        text = html_to_text(path.read_bytes()).text
        for max_tokens, overlap in ((64, 8), (256, 32)):
            fast = chunk_text(text, max_tokens, overlap)
            assert fast == chunk_text(text, max_tokens, overlap, count=tokenizer_counts), path.name
