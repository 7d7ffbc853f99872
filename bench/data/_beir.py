"""Write a corpus and its judged questions in the BEIR layout ``bench/fusion_bench.py`` reads:
``corpus.jsonl``, ``queries.jsonl`` and ``qrels/test.tsv`` (shared by the corpus builders here); and
``keywords``, a question as a search-box query (``--keyword-queries`` of the builders and of the bench)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def write_beir(out: Path, docs: Iterable[dict[str, Any]], questions: list[dict[str, Any]]) -> int:
    """Write ``docs`` (each with ``_id``) and ``questions`` (``id``, ``text``, ``relevant``: doc id → grade);
    a judged document missing from the corpus is an error. Returns the number of documents written."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "qrels").mkdir(exist_ok=True)
    ids = set()
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as f:
        for d in docs:
            ids.add(d["_id"])
            f.write(json.dumps(d) + "\n")
    with (
        (out / "queries.jsonl").open("w", encoding="utf-8") as f,
        (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as g,
    ):
        g.write("query-id\tcorpus-id\tscore\n")
        for q in questions:
            f.write(json.dumps({"_id": q["id"], "text": q["text"]}) + "\n")
            for doc_id, grade in q["relevant"].items():
                if doc_id not in ids:
                    raise SystemExit(f"{q['id']}: judged document {doc_id} is not in the corpus")
                g.write(f"{q['id']}\t{doc_id}\t{grade}\n")
    return len(ids)


# function words dropped by ``--keyword-queries`` (the questions as a search-box query: "put lines text random order")
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "to",
        "in",
        "on",
        "for",
        "and",
        "or",
        "with",
        "from",
        "by",
        "as",
        "is",
        "are",
        "be",
        "it",
        "its",
        "this",
        "that",
        "which",
        "what",
        "how",
        "do",
        "does",
        "can",
        "i",
        "my",
        "me",
        "where",
        "when",
        "who",
        "much",
        "many",
        "so",
        "one",
        "each",
        "every",
        "at",
        "into",
        "out",
        "up",
        "than",
        "then",
        "there",
        "their",
        "them",
        "they",
        "all",
        "any",
        "only",
        "just",
        "still",
        "while",
        "whose",
        "whether",
    ]
)


def keywords(question: str) -> str:
    words = (w.strip("?,.").lower() for w in question.split())
    return " ".join(w for w in words if w and w not in STOPWORDS)
