"""Structure-aware, token-bounded chunking.

A document is split into *sections* by its Markdown headings (``#`` to ``######``, never inside code
fences); each section into *blocks* (paragraphs, lists, tables, code blocks: runs of lines separated by blank
lines). Blocks are packed into chunks of at most ``max_tokens`` tokens; a block that is too long on its own is
split at sentence boundaries, and a sentence that is still too long at word boundaries. Consecutive chunks of
the same section share up to ``overlap`` tokens of trailing sentences, so a fact that straddles a boundary is
whole in at least one chunk. A chunk never crosses a heading or (for PDFs) a page, so its citation is precise.

Tokens are counted with the embedding model's own WordPiece tokenizer (all-MiniLM-L6-v2's
``tokenizer.json``, through the Rust ``tokenizers`` library), once per distinct whitespace-separated piece
(the count of a text is the sum of its pieces' counts: see :func:`count_tokens`). Counting with the
model's tokenizer guarantees that a chunk of ``max_tokens`` is not silently truncated by the model, which
reads at most 256 word pieces; a whitespace estimate undercounts numbers, codes and non-English words by
30-100 %. If the tokenizer cannot be loaded, a conservative estimate (1.5 tokens per word) is used.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from charter.retrieval._types import Chunk

if TYPE_CHECKING:
    from charter.documents import Document
    from charter.spec import Chunking

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_FENCE = re.compile(r"^\s*(```|~~~)")
_SENTENCE = re.compile(r"(?<=[.!?:;])\s+(?=[\"'(\[]?[A-Z0-9])|\n+")


@lru_cache(maxsize=1)
def _tokenizer() -> Any:
    try:
        from pathlib import Path

        from tokenizers import Tokenizer

        from charter.retrieval._embedding import minilm_model_dir

        tok = Tokenizer.from_file(str(Path(minilm_model_dir()) / "tokenizer.json"))
        tok.no_truncation()
        tok.no_padding()
        return tok
    except Exception:  # pragma: no cover - fall back to an estimate
        return None


def tokenizer_counts(texts: list[str]) -> list[int]:
    """Word-piece tokens of each text (without the model's special tokens), straight from the tokenizer."""
    tok = _tokenizer()
    if tok is None:  # pragma: no cover
        return [int(len(t.split()) * 1.5 + 0.999) for t in texts]
    return [len(e.ids) for e in tok.encode_batch(texts, add_special_tokens=False)]


# The BERT pipeline (clean-up, lower-casing, accent stripping, splitting on whitespace and punctuation,
# WordPiece) never joins across whitespace, so a text's count is the sum of the counts of its
# whitespace-separated pieces, and a piece's count can be remembered. Except for these control characters:
# Python's ``str.split`` splits on them, while the tokenizer deletes them (joining their neighbours).
_JOINING_CONTROLS = re.compile("[\x0b\x0c\x1c-\x1f\x85]")
_piece_counts: dict[str, int] = {}
MAX_REMEMBERED_PIECES = 500_000  # a few tens of MB at most; a fresh table is started when exceeded


def count_tokens(texts: list[str]) -> list[int]:
    """Word-piece tokens of each text (without the model's special tokens).

    Exactly :func:`tokenizer_counts` (``tests/retrieval/test_token_counts.py`` checks it, and that the
    chunks are the same), several times faster on prose: each distinct whitespace-separated piece is
    tokenized once per process and its count remembered. Texts holding a control character that the
    tokenizer deletes (``_JOINING_CONTROLS``) are tokenized whole. Thread-safe (a table that grew too
    large is replaced, never emptied under another caller)."""
    global _piece_counts
    if _tokenizer() is None:  # pragma: no cover
        return tokenizer_counts(texts)
    split = [None if _JOINING_CONTROLS.search(t) else t.split() for t in texts]
    known = _piece_counts
    missing = {p for pieces in split if pieces is not None for p in pieces if p not in known}
    if missing:
        if len(known) + len(missing) > MAX_REMEMBERED_PIECES:
            known = {}
            missing = {p for pieces in split if pieces is not None for p in pieces}
        new = list(missing)
        known.update(zip(new, tokenizer_counts(new), strict=True))
        _piece_counts = known
    whole = [t for t, pieces in zip(texts, split, strict=True) if pieces is None]
    whole_counts = iter(tokenizer_counts(whole) if whole else [])
    return [next(whole_counts) if pieces is None else sum([known[p] for p in pieces]) for pieces in split]


Counter = Callable[[list[str]], list[int]]


@dataclass
class _Unit:
    text: str
    tokens: int
    block_start: bool  # first unit of a block: joined with a blank line instead of a space


def _sections(text: str) -> list[tuple[list[str], list[str]]]:
    """(heading path, blocks) for each run of text under one heading."""
    out: list[tuple[list[str], list[str]]] = []
    path: list[tuple[int, str]] = []
    blocks: list[str] = []
    current: list[str] = []
    in_fence = False

    def flush_block() -> None:
        if current and any(line.strip() for line in current):
            blocks.append("\n".join(current).strip("\n"))
        current.clear()

    def flush_section() -> None:
        flush_block()
        if blocks:
            out.append(([h for _, h in path], list(blocks)))
        blocks.clear()

    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence
            current.append(line)
            continue
        if not in_fence:
            m = _HEADING.match(line)
            if m:
                flush_section()
                level = len(m.group(1))
                while path and path[-1][0] >= level:
                    path.pop()
                path.append((level, m.group(2).strip()))
                continue
            if not line.strip():
                flush_block()
                continue
        current.append(line)
    flush_section()
    return out


def _split_long(block: str, max_tokens: int, count: Counter) -> list[_Unit]:
    """A block as units of at most ``max_tokens``: sentences, and word runs for over-long sentences."""
    sentences = [s.strip() for s in _SENTENCE.split(block) if s and s.strip()]
    counts = count(sentences)
    units: list[_Unit] = []
    for sentence, n in zip(sentences, counts, strict=True):
        if n <= max_tokens:
            units.append(_Unit(sentence, n, False))
            continue
        words = sentence.split()
        wcounts = count(words)
        run: list[str] = []
        run_tokens = 0
        for word, wn in zip(words, wcounts, strict=True):
            if run and run_tokens + wn > max_tokens:
                units.append(_Unit(" ".join(run), run_tokens, False))
                run, run_tokens = [], 0
            run.append(word)
            run_tokens += wn
        if run:
            units.append(_Unit(" ".join(run), run_tokens, False))
    if units:
        units[0].block_start = True
    return units


def _pack(units: list[_Unit], max_tokens: int, overlap: int) -> Iterable[tuple[str, int]]:
    """Greedy packing of units into chunks, carrying trailing units (up to ``overlap`` tokens) forward."""
    chunk: list[_Unit] = []
    size = 0
    fresh = 0  # units in ``chunk`` that are not overlap carried from the previous chunk

    def render(us: list[_Unit]) -> str:
        parts: list[str] = []
        for i, u in enumerate(us):
            if i and u.block_start:
                parts.append("\n\n")
            elif i:
                parts.append(" ")
            parts.append(u.text)
        return "".join(parts)

    for unit in units:
        if chunk and size + unit.tokens > max_tokens:
            yield render(chunk), size
            carried: list[_Unit] = []
            carried_size = 0
            for prev in reversed(chunk):
                if (
                    carried_size + prev.tokens > overlap
                    or carried_size + prev.tokens + unit.tokens > max_tokens
                ):
                    break
                carried.insert(0, prev)
                carried_size += prev.tokens
            chunk, size, fresh = carried, carried_size, 0
        chunk.append(unit)
        size += unit.tokens
        fresh += 1
    if chunk and fresh:
        yield render(chunk), size


def chunk_text(
    text: str, max_tokens: int, overlap: int, *, count: Counter = count_tokens
) -> list[tuple[str, str, int]]:
    """(heading path, chunk text, tokens) for a text, in document order. ``count``: the token counter
    (tests pass :func:`tokenizer_counts` to check that the default one gives the same chunks)."""
    out: list[tuple[str, str, int]] = []
    for path, blocks in _sections(text):
        heading = " > ".join(path)
        counts = count(blocks)
        units: list[_Unit] = []
        for block, n in zip(blocks, counts, strict=True):
            if n <= max_tokens:
                units.append(_Unit(block, n, True))
            else:
                units.extend(_split_long(block, max_tokens, count))
        for body, size in _pack(units, max_tokens, overlap):
            out.append((heading, body, size))
    return out


def chunk_document(doc: Document, chunking: Chunking) -> list[Chunk]:
    """Chunks of ``doc`` following its structure (headings, paragraphs; pages for PDFs)."""
    pages: list[tuple[int | None, str]] = (
        [(i + 1, p) for i, p in enumerate(doc.pages)] if doc.pages else [(None, doc.text)]
    )
    chunks: list[Chunk] = []
    for page, text in pages:
        for heading, body, size in chunk_text(text, chunking.max_tokens, chunking.overlap):
            chunks.append(
                Chunk(
                    source_id=doc.source_id,
                    doc_id=doc.doc_id,
                    title=doc.title,
                    heading=heading,
                    position=len(chunks),
                    text=body,
                    tokens=size,
                    page=page,
                )
            )
    return chunks
