"""Structure-aware, token-bounded chunking."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from charter.retrieval import chunk_document, count_tokens
from charter.retrieval._chunking import chunk_text
from charter.sources import Document
from charter.spec._schema import Chunking

DOC = """# Refunds

Intro paragraph about refunds.

## Annual plans

Annual plans are refunded pro rata within 30 days.

```
# not a heading inside a code fence
```

### Exceptions

Seats added by mistake are refundable within 7 days.

## Monthly plans

Monthly plans are not refundable.
"""


def _doc(text: str, **kw) -> Document:  # type: ignore[no-untyped-def]
    return Document(source_id="s", doc_id="d.md", title="Refunds", text=text, format="markdown", **kw)


def test_heading_paths_positions_and_metadata() -> None:
    chunks = chunk_document(_doc(DOC), Chunking(max_tokens=64, overlap=8))
    assert [c.heading for c in chunks] == [
        "Refunds",
        "Refunds > Annual plans",
        "Refunds > Annual plans > Exceptions",
        "Refunds > Monthly plans",
    ]
    assert [c.position for c in chunks] == list(range(len(chunks)))
    assert all(c.source_id == "s" and c.doc_id == "d.md" and c.title == "Refunds" for c in chunks)
    assert "# not a heading" in chunks[1].text
    assert chunks[0].embed_text.startswith("Refunds\n")
    assert chunks[2].embed_text.startswith("Refunds\nAnnual plans > Exceptions\n")


def test_token_bound_and_overlap() -> None:
    sentences = [f"Sentence number {i} talks about invoice {i * 7} and its payment terms." for i in range(60)]
    text = "# Long\n\n" + " ".join(sentences)
    chunks = chunk_text(text, 64, 16)
    assert len(chunks) > 5
    for heading, body, n in chunks:
        assert heading == "Long"
        assert n <= 64
        assert count_tokens([body])[0] <= 64 + 2  # joining units may add a boundary token at most
    # consecutive chunks share trailing sentences
    for (_, a, _), (_, b, _) in itertools.pairwise(chunks):
        assert a.split(". ")[-1].rstrip(".") in b


def test_word_split_for_overlong_sentence() -> None:
    text = " ".join(f"word{i}" for i in range(500))
    chunks = chunk_text(text, 40, 0)
    assert all(n <= 40 for _, _, n in chunks)
    assert " ".join(b for _, b, _ in chunks).split() == text.split()


def test_pdf_pages_are_kept() -> None:
    pages = ("First page text about receipts.", "Second page text about VAT.")
    chunks = chunk_document(_doc("\n".join(pages), pages=pages), Chunking(max_tokens=64, overlap=0))
    assert [(c.page, c.text) for c in chunks] == [(1, pages[0]), (2, pages[1])]


@settings(max_examples=50, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab #\n.é"), max_size=400), st.integers(32, 80), st.integers(0, 31))
def test_any_text_is_chunked_within_bounds(text: str, max_tokens: int, overlap: int) -> None:
    for _, body, n in chunk_text(text, max_tokens, overlap):
        assert body.strip()
        assert n <= max_tokens
