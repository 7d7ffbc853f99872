"""The *check* stage: citation validation, groundedness, canary and PII scans, topic rules.

Groundedness method (no large model needed): each sentence is scored against the text of the chunks it
cites, *without* their instruction sentences (:mod:`charter.screening`: text addressed to an assistant is
never support). First a lexical containment score — the share of the sentence's content words (lower-cased, lightly
stemmed, stop words removed) that occur in the cited text. Extractive or near-verbatim sentences score ~1.0
and need nothing more. When that score is inconclusive (between ``LEXICAL_LOW`` and ``LEXICAL_HIGH``), a
semantic proxy is added (below ``LEXICAL_HIGH``, however low the word overlap, so that a paraphrase
in other words can pass): the highest cosine similarity (all-MiniLM-L6-v2) between the sentence and any
sentence of the cited text, rescaled so that 0.35 → 0 and 0.85 → 1; the sentence gets the larger of the two.
This catches paraphrases while keeping the check cheap for the common case, and a sentence with no valid
citation scores 0. The draft's groundedness is the mean over its sentences.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from charter.canaries import DEFAULT as DEFAULT_CANARIES
from charter.canaries import Canaries
from charter.models import changes_non_ascii
from charter.models import split_sentences as _split_sentences
from charter.screening import screen_sentence, screen_text

if TYPE_CHECKING:
    from charter.runtime import Runtime

CITATION = re.compile(r"\[(S\d{1,3})\]")
_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
LEXICAL_LOW, LEXICAL_HIGH = 0.0, 0.8
# A sentence is *supported* when its score reaches this (calibrated on labelled paraphrase / unrelated pairs,
# tests/test_groundedness_calibration.py; docs/pipeline.md): a draft with an unsupported sentence escalates.
SENTENCE_SUPPORT_MIN = 0.5

STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "and",
        "or",
        "but",
        "if",
        "then",
        "else",
        "of",
        "to",
        "in",
        "on",
        "at",
        "by",
        "for",
        "with",
        "from",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "i",
        "you",
        "he",
        "she",
        "we",
        "they",
        "me",
        "my",
        "your",
        "our",
        "their",
        "his",
        "her",
        "them",
        "us",
        "do",
        "does",
        "did",
        "doing",
        "have",
        "has",
        "had",
        "having",
        "can",
        "could",
        "will",
        "would",
        "shall",
        "should",
        "may",
        "might",
        "must",
        "not",
        "no",
        "nor",
        "so",
        "than",
        "too",
        "very",
        "just",
        "also",
        "into",
        "over",
        "under",
        "about",
        "after",
        "before",
        "between",
        "through",
        "during",
        "up",
        "down",
        "out",
        "off",
        "again",
        "further",
        "once",
        "here",
        "there",
        "when",
        "where",
        "why",
        "how",
        "all",
        "any",
        "both",
        "each",
        "few",
        "more",
        "most",
        "other",
        "some",
        "such",
        "only",
        "own",
        "same",
        "what",
        "which",
        "who",
        "whom",
        "s",
        "t",
        "don",
        "now",
    ]
)


@lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    for suffix in ("ingly", "edly", "ing", "ed", "es", "s", "ly"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def content_words(text: str, *, normalised: bool = False) -> list[str]:
    """Stemmed, lower-cased words of ``text`` without stop words (``normalised``: skip :func:`normalise`,
    the caller already did)."""
    return [
        _stem(w)
        for w in _WORD.findall((text if normalised else normalise(text)).lower())
        if w not in STOP_WORDS
    ]


class _DropFormat(dict[int, "int | None"]):
    """``str.translate`` table dropping format characters (category Cf), classified once per code point."""

    def __missing__(self, cp: int) -> int | None:
        out = None if unicodedata.category(chr(cp)) == "Cf" else cp
        self[cp] = out
        return out


_DROP_FORMAT = _DropFormat()


def normalise(text: str) -> str:
    """NFKC, invisible characters removed (zero-width, bidi controls, soft hyphen)."""
    if text.isascii():  # NFKC is the identity on ASCII, which has no format characters
        return text
    text = unicodedata.normalize("NFKC", text)
    return text.translate(_DROP_FORMAT) if changes_non_ascii(_DROP_FORMAT, text) else text


@lru_cache(maxsize=4096)
def _content_set(text: str) -> frozenset[str]:
    """The content words of a cited passage (passages repeat across requests: cached)."""
    return frozenset(content_words(text))


def split_sentences(text: str) -> list[str]:
    """The same sentence splitter the drafters use (abbreviation-aware), so checks and drafts agree."""
    return _split_sentences(text)


@dataclass
class SentenceScore:
    sentence: str
    citations: list[str]
    lexical: float
    semantic: float | None
    score: float


@dataclass
class CitationCheck:
    text: str  # the text with invalid citations removed
    valid: list[str] = field(default_factory=list)  # citation ids kept, in order of first use
    removed: list[str] = field(default_factory=list)  # citation ids that referred to nothing retrieved


_SPACED_CITATION = re.compile(r"([ \t]*)" + CITATION.pattern)


def validate_citations(text: str, allowed: set[str]) -> CitationCheck:
    """Keep only citations to passages retrieved for this request; count the rest. A removed citation takes
    the spaces before it along ("… per year [S9]." → "… per year.")."""
    result = CitationCheck(text="")

    def repl(m: re.Match[str]) -> str:
        cid = m.group(2)
        if cid in allowed:
            if cid not in result.valid:
                result.valid.append(cid)
            return m.group(0)
        result.removed.append(cid)
        return ""

    result.text = re.sub(r"[ \t]+\n", "\n", _SPACED_CITATION.sub(repl, text)).strip()
    return result


Embed = Callable[[Sequence[str]], "list[list[float]]"]


def embedder_for(rt: Runtime) -> Embed | None:
    """The runtime's index embedder as an :data:`Embed` for :func:`score_sentences`, or ``None`` when no
    embedder is available (groundedness is then lexical only)."""
    try:
        from charter.retrieval import Index

        index = Index.for_runtime(rt)
        emb = index.embedder
    except Exception:  # pragma: no cover - no embedder available: lexical groundedness only
        return None
    return lambda texts: [list(map(float, v)) for v in emb.embed(list(texts))]


def new_pii(text: str, sources: dict[str, str]) -> list[str]:
    """Kinds of personal data or secrets in the output that do not come from a cited permitted passage."""
    from charter.telemetry.masking import find_sensitive

    corpus = "\n".join(sources.values())
    return sorted({kind for kind, value in find_sensitive(text) if value not in corpus})


def lexical_support(sentence: str, source: str, words: list[str] | None = None) -> float:
    """Share of the sentence's content words (``words`` when already computed) found in ``source``."""
    if words is None:
        words = content_words(CITATION.sub("", sentence))
    if not words:
        return 1.0
    have = _content_set(source)
    return sum(1 for w in words if w in have) / len(words)


def score_sentences(
    text: str | Sequence[str],
    passages: dict[str, str],
    embed: Embed | None = None,
    *,
    normalised: bool = False,
) -> list[SentenceScore]:
    """Groundedness of each sentence of ``text`` (a text, or its sentences already split) in the passages it
    cites (see module docstring). ``normalised``: the sentences already went through :func:`normalise`."""
    scores: list[SentenceScore] = []
    pending: list[tuple[int, str, list[str]]] = []
    for sentence in split_sentences(text) if isinstance(text, str) else text:
        cited = [c for c in CITATION.findall(sentence) if c in passages]
        bare = CITATION.sub("", sentence).strip()
        words = content_words(bare, normalised=normalised)
        if not words:
            continue  # greeting punctuation, sign-off fragments without content words
        if not cited:
            scores.append(SentenceScore(bare, [], 0.0, None, 0.0))
            continue
        source = "\n".join(passages[c] for c in cited)
        lex = lexical_support(bare, source, words)
        scores.append(SentenceScore(bare, cited, lex, None, lex))
        if embed is not None and LEXICAL_LOW <= lex < LEXICAL_HIGH:
            pending.append((len(scores) - 1, bare, split_sentences(source)))
    if pending and embed is not None:
        import numpy as np

        texts = [p[1] for p in pending] + [s for p in pending for s in p[2]]
        vectors = np.asarray(embed(texts), dtype=np.float32)
        offset = len(pending)
        for i, (idx, _bare, source_sentences) in enumerate(pending):
            src = vectors[offset : offset + len(source_sentences)]
            offset += len(source_sentences)
            if len(src) == 0:
                continue
            cos = float(np.max(src @ vectors[i]))
            sem = min(1.0, max(0.0, (cos - 0.35) / 0.5))
            s = scores[idx]
            s.semantic = sem
            s.score = max(s.lexical, sem)
    return scores


def support_text(passage_text: str) -> str:
    """A passage's text as support for groundedness: its instruction sentences removed."""
    return screen_text(passage_text).cleaned


def instruction_echoes(sentences: Sequence[str], passages: dict[str, str]) -> list[dict[str, object]]:
    """Output sentences that are (or repeat) an instruction: either the sentence itself screens as one, or
    most of the content words of an instruction sentence of a retrieved passage reappear in it. Any provider's
    output is checked the same way; the pipeline blocks a draft with any echo."""
    planted = [
        (cid, frozenset(content_words(f.text)))
        for cid, text in passages.items()
        for f in screen_text(text).flagged
    ]
    out: list[dict[str, object]] = []
    for sentence in sentences:
        bare = CITATION.sub("", sentence).strip()
        verdict = screen_sentence(bare)
        if verdict.instruction:
            out.append({"sentence": bare[:300], "reasons": list(verdict.reasons)})
            continue
        words = set(content_words(bare))
        for cid, needed in planted:
            if len(needed) >= 3 and len(needed & words) / len(needed) >= 0.6:
                out.append({"sentence": bare[:300], "reasons": ["repeats_instruction"], "passage": cid})
                break
    return out


def groundedness(scores: list[SentenceScore]) -> float:
    return sum(s.score for s in scores) / len(scores) if scores else 0.0


@dataclass(frozen=True)
class GroundingVerdict:
    """Groundedness of a text under the charter's ``review.grounding``: the mean support of the sentences that
    count (``None`` when none does) and those below :data:`SENTENCE_SUPPORT_MIN`."""

    score: float | None
    unsupported: list[SentenceScore]

    def low(self, threshold: float) -> bool:
        """``low_groundedness``: the mean below ``review.groundedness_threshold``, or any sentence unsupported."""
        return self.score is not None and (self.score < threshold or bool(self.unsupported))


def grounding_verdict(
    scores: list[SentenceScore], grounding: str, *, exempt: frozenset[str] = frozenset()
) -> GroundingVerdict:
    """The one groundedness rule (the check stage and a reviewer's edit both call it): the sentences that
    count (:func:`judged`), their mean, and the unsupported ones (``exempt`` sentences — the drafter's own
    fixed "cannot answer" text — never are)."""
    counted = judged(scores, grounding)
    return GroundingVerdict(
        score=groundedness(counted) if counted else None,
        unsupported=[s for s in counted if s.score < SENTENCE_SUPPORT_MIN and s.sentence not in exempt],
    )


def judged(scores: list[SentenceScore], grounding: str) -> list[SentenceScore]:
    """The sentences whose support counts under the charter's ``review.grounding``: every scored sentence when
    it is ``required`` (an uncited sentence scores 0), only those that cite a passage when it is ``optional``
    (the model's own words are then allowed; a citation must still be backed by what it cites). The one place
    this rule lives: the pipeline's check, a reviewer's edit and the eval scorer all call it."""
    return scores if grounding == "required" else [s for s in scores if s.citations]


def find_canaries(text: str, *, normalised: bool = False, canaries: Canaries = DEFAULT_CANARIES) -> list[str]:
    """Canary tokens in ``text`` (after :func:`normalise`, unless the caller already did); ``canaries`` is
    the charter's set (:func:`charter.canaries.canaries_for`), the built-in pattern by default."""
    return canaries.find(text if normalised else normalise(text))


# Words that change a topic's meaning and so are never dropped from it ("*other* people's data").
TOPIC_KEEP = frozenset({"other", "own", "not", "no", "all"})


@lru_cache(maxsize=4096)
def _topic_words(text: str) -> tuple[str, ...]:
    """Stemmed content words of a topic or question (the charter's topics repeat on every request)."""
    return tuple(
        _stem(w)
        for w in _WORD.findall(normalise(text).lower().replace("_", " "))
        if w not in STOP_WORDS or w in TOPIC_KEEP
    )


def topic_hits(question: str, topics: Sequence[str]) -> list[str]:
    """Topics whose words all occur in the question (stemmed), e.g. 'legal advice', 'lawsuit'."""
    words = set(_topic_words(question))
    hits = []
    for topic in topics:
        needed = _topic_words(topic)
        if needed and all(w in words for w in needed):
            hits.append(topic)
    return hits
