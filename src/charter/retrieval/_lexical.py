"""Lexical analysis and BM25 over the *permitted* chunks only.

Analysis: Unicode lower-casing with accents folded (like SQLite FTS5's ``unicode61``), words of two or more
characters (the ``\\w\\w+`` pattern of scikit-learn and bm25s), a short English stop-word list, and the
Snowball English stemmer (PyStemmer). The analysed terms of each chunk are stored with the chunk, so loading
the index never re-stems.

Scoring is Lucene's BM25 (``idf = ln(1 + (N - df + 0.5) / (df + 0.5))``, ``k1 = 1.5``, ``b = 0.75``, the
defaults of bm25s) where ``N``, ``df`` and the average chunk length are computed over the chunks the
principal may read. Statistics over the whole corpus would let a principal learn, through scores, how often a
word occurs in documents they cannot read; restricting them makes every score a function of permitted data
only (see ``docs/retrieval.md``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

STOPWORDS_EN = frozenset(
    {
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "if",
        "in",
        "into",
        "is",
        "it",
        "no",
        "not",
        "of",
        "on",
        "or",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "will",
        "with",
    }
)
_WORD = re.compile(r"(?u)\b\w\w+\b")
K1 = 1.5
B = 0.75


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def _fold(text: str) -> str:
    text = text.lower()
    if text.isascii():
        return text
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def analyse(text: str) -> list[str]:
    """The BM25 terms of ``text``, in order (stop words removed, stemmed)."""
    words = [w for w in _WORD.findall(_fold(text)) if w not in STOPWORDS_EN]
    return list(_stemmer().stemWords(words))


# A word of the raw query: a maximal run of non-space characters.
_RAW_WORD = re.compile(r"\S+")
# a letter followed by a digit, directly or through one separator: E4012, INV-2026, TKT#58213, 40P01, x86
_CODE = re.compile(r"[^\W\d_][-_/.:#]?\d")
_DIGIT = re.compile(r"\d")


def is_identifier(word: str) -> bool:
    """Whether a raw query word is a code: letters followed by digits, directly or through one separator.

    ``INV-2026-004817``, ``TKT-58213``, ``E4012``, ``40P01``, ``SHA-256``, ``x86``: strings a sub-word
    embedding model cannot read (their pieces are nearly the same vector for every number), so only exact
    lexical matching can tell one from another. Not codes: bare numbers (years, amounts, ``3.5``), quantities
    written number-first (``64-bit``, ``24h``, ``2nd``), dates, and names made of words (``work_mem``,
    ``getElementById``) — the embedding model reads those.
    """
    return bool(_CODE.search(word))


def identifier_terms(query: str) -> frozenset[str]:
    """The BM25 terms of ``query`` that carry a code (see :func:`is_identifier`): for each code-shaped word,
    its analysed terms that hold a digit — the part that tells one code from another (``297946`` and
    ``2026`` of ``INV-2026-297946``, not ``inv``). Every returned term is also a term of ``analyse(query)``
    (analysis is word by word)."""
    out: set[str] = set()
    for raw in _RAW_WORD.findall(query):
        if is_identifier(raw):
            out.update(t for t in analyse(raw) if _DIGIT.search(t))
    return frozenset(out)


@dataclass
class Postings:
    """An in-memory inverted index: for each term, the rows that contain it and how often (CSC layout)."""

    vocab: dict[str, int]
    indptr: npt.NDArray[np.int64]
    rows: npt.NDArray[np.int32]
    tfs: npt.NDArray[np.float32]
    lengths: npt.NDArray[np.float32]  # terms per row

    @classmethod
    def build(cls, term_lists: list[list[str]]) -> Postings:
        vocab: dict[str, int] = {}
        term_ids: list[int] = []
        row_ids: list[int] = []
        lengths = np.zeros(len(term_lists), dtype=np.float32)
        for row, terms in enumerate(term_lists):
            lengths[row] = len(terms)
            for t in terms:
                tid = vocab.get(t)
                if tid is None:
                    tid = vocab[t] = len(vocab)
                term_ids.append(tid)
                row_ids.append(row)
        if not term_ids:
            return cls(
                vocab,
                np.zeros(1, dtype=np.int64),
                np.zeros(0, dtype=np.int32),
                np.zeros(0, dtype=np.float32),
                lengths,
            )
        tid_arr = np.asarray(term_ids, dtype=np.int64)
        row_arr = np.asarray(row_ids, dtype=np.int64)
        # unique (term, row) pairs with counts, sorted by term then row
        key = tid_arr * len(term_lists) + row_arr
        uniq, counts = np.unique(key, return_counts=True)
        terms_sorted = uniq // len(term_lists)
        rows_sorted = (uniq % len(term_lists)).astype(np.int32)
        indptr = np.zeros(len(vocab) + 1, dtype=np.int64)
        np.add.at(indptr, terms_sorted + 1, 1)
        np.cumsum(indptr, out=indptr)
        return cls(vocab, indptr, rows_sorted, counts.astype(np.float32), lengths)

    def df(self, term: str, mask: npt.NDArray[np.bool_] | None) -> int:
        """How many rows (of those in ``mask``, if given) contain ``term``."""
        tid = self.vocab.get(term)
        if tid is None:
            return 0
        rows = self.rows[int(self.indptr[tid]) : int(self.indptr[tid + 1])]
        return len(rows) if mask is None else int(np.count_nonzero(mask[rows]))

    def scores(
        self, query_terms: list[str], mask: npt.NDArray[np.bool_] | None, n_permitted: int, avgdl: float
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
        """(rows, scores) of the permitted rows that match at least one query term.

        A query term that repeats counts once per occurrence, as in bm25s.
        """
        acc: dict[int, tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]] = {}
        parts_rows: list[npt.NDArray[np.int32]] = []
        parts_scores: list[npt.NDArray[np.float32]] = []
        for term in query_terms:
            tid = self.vocab.get(term)
            if tid is None:
                continue
            if tid not in acc:
                lo, hi = int(self.indptr[tid]), int(self.indptr[tid + 1])
                rows = self.rows[lo:hi]
                tfs = self.tfs[lo:hi]
                if mask is not None:
                    keep = mask[rows]
                    rows, tfs = rows[keep], tfs[keep]
                df = len(rows)
                if df == 0:
                    acc[tid] = (rows, tfs)
                    continue
                idf = np.log1p((n_permitted - df + 0.5) / (df + 0.5))
                norm = K1 * (1.0 - B + B * self.lengths[rows] / max(avgdl, 1e-9))
                acc[tid] = (rows, (idf * tfs * (K1 + 1.0) / (tfs + norm)).astype(np.float32))
            rows, sc = acc[tid]
            if len(rows):
                parts_rows.append(rows)
                parts_scores.append(sc)
        if not parts_rows:
            return np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float32)
        all_rows = np.concatenate(parts_rows)
        all_scores = np.concatenate(parts_scores)
        uniq, inverse = np.unique(all_rows, return_inverse=True)
        summed = np.zeros(len(uniq), dtype=np.float64)
        np.add.at(summed, inverse, all_scores)
        return uniq.astype(np.int32), summed.astype(np.float32)
