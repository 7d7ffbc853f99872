"""The retrieval scorer's ranx metrics, reproduced by an independent implementation, on our own hybrid
retrieval over the billing example (data the project owns): every document of its sources, and every eval case
with judged ``expected_sources`` as a query with graded relevance, embedded with the real MiniLM model.
(Benchmark corpora such as MS MARCO are read by ``bench/`` scripts from a path argument, never by tests.)"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from charter.evals import CaseOutput, EvalCase, get_scorers, load_eval_set, ranx_scores

pytestmark = pytest.mark.slow  # indexes the billing example with the real embedding model

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "billing-support"
K = 10


# ----------------------------------------------------------------------------------- independent metrics
def recall_at(rels: dict[str, int], ranked: list[str], k: int) -> float:
    relevant = {d for d, r in rels.items() if r > 0}
    return len(relevant & set(ranked[:k])) / len(relevant)


def precision_at(rels: dict[str, int], ranked: list[str], k: int) -> float:
    return sum(1 for d in ranked[:k] if rels.get(d, 0) > 0) / k


def mrr(rels: dict[str, int], ranked: list[str]) -> float:
    for i, d in enumerate(ranked, 1):
        if rels.get(d, 0) > 0:
            return 1.0 / i
    return 0.0


def ndcg_at(rels: dict[str, int], ranked: list[str], k: int) -> float:
    dcg = sum(rels.get(d, 0) / math.log2(i + 1) for i, d in enumerate(ranked[:k], 1))
    ideal = sorted(rels.values(), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 1) for i, r in enumerate(ideal, 1))
    return dcg / idcg if idcg else 0.0


def independent(rels: dict[str, int], ranked: list[str]) -> dict[str, float]:
    return {
        "recall@5": recall_at(rels, ranked, 5),
        "precision@5": precision_at(rels, ranked, 5),
        "mrr": mrr(rels, ranked),
        "ndcg@5": ndcg_at(rels, ranked, 5),
        "recall@10": recall_at(rels, ranked, 10),
        "ndcg@10": ndcg_at(rels, ranked, 10),
    }


# ----------------------------------------------------------------------------------- data and retrieval
def _subset() -> tuple[list[dict[str, Any]], dict[str, str], dict[str, dict[str, int]]]:
    """Documents ``{_id, text}`` (``_id`` = "source/relative path"), queries and graded qrels."""
    sources = EXAMPLE / "sources"
    docs = [
        {"_id": f.relative_to(sources).as_posix(), "text": f.read_text(encoding="utf-8")}
        for f in sorted(sources.rglob("*.md"))
        if f.name != "README.md"
    ]
    ids = {d["_id"] for d in docs}
    cases = load_eval_set(EXAMPLE / "evals" / "billing.yaml")
    qrels = {
        c.id: {d: r for d, r in c.expected_sources.items() if d in ids} for c in cases if c.expected_sources
    }
    qrels = {q: rels for q, rels in qrels.items() if any(r > 0 for r in rels.values())}
    return docs, {c.id: c.question for c in cases if c.id in qrels}, qrels


@pytest.fixture(scope="module")
def retrieval_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, dict[str, int]], dict[str, list[str]]]:
    from charter.retrieval import Index, get_embedder
    from charter.sources import Document
    from charter.spec._schema import Chunking, Fusion
    from charter.store import open_store

    docs, queries, qrels = _subset()
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('billing') / 'idx.db'}")
    index = Index(store, get_embedder("minilm"))
    chunking = Chunking(max_tokens=512, overlap=0)
    documents = [
        Document(source_id="billing", doc_id=d["_id"], title="", text=d["text"], format="markdown")
        for d in docs
    ]
    index.prefetch_embeddings(documents, chunking)
    for doc in documents:
        index.upsert_document(doc, frozenset({"public"}), chunking)
    fusion = Fusion()  # the charter's default hybrid fusion
    ranked = {}
    for q, text in queries.items():
        hits = index.search(frozenset({"public"}), text, k=K, fusion=fusion)
        ranked[q] = list(dict.fromkeys(h.doc_id for h in hits))  # a document once, at its best chunk
    store.dispose()
    return qrels, ranked


def test_ranx_scores_match_an_independent_implementation(retrieval_run: Any) -> None:
    qrels, ranked = retrieval_run
    assert len(qrels) >= 40, "the billing eval set has fewer judged cases than expected"
    run = {q: {d: float(K - i) for i, d in enumerate(docs)} for q, docs in ranked.items()}
    ours = ranx_scores(qrels, run)
    for q in qrels:
        ref = independent(qrels[q], ranked[q])
        for metric, value in ref.items():
            assert ours[metric][q] == pytest.approx(value, abs=1e-9), (q, metric)
    means = {m: sum(v.values()) / len(v) for m, v in ours.items()}
    assert 0.3 < means["ndcg@10"] <= 1.0  # a sane retrieval, not a degenerate run


def test_retrieval_scorer_reproduces_the_same_values_through_case_outputs(retrieval_run: Any) -> None:
    qrels, ranked = retrieval_run
    outputs = []
    for q, rels in qrels.items():
        case = EvalCase(
            id=q,
            category="normal",
            user="u",
            question="q",
            expected_sources={d: r for d, r in rels.items() if r > 0},
        )
        retrieved = [
            {"chunk_id": f"{d}#0", "source": d.split("/", 1)[0], "doc_id": d.split("/", 1)[1], "rank": i}
            for i, d in enumerate(ranked[q], 1)
        ]
        outputs.append(CaseOutput(case=case, repeat=0, status="answered", retrieved=retrieved))
    scores = get_scorers(["retrieval"])["retrieval"].score(outputs, None)  # type: ignore[arg-type]
    for o, s in zip(outputs, scores, strict=True):
        ref = independent(qrels[o.case.id], ranked[o.case.id])
        for metric, value in ref.items():
            assert s.metrics[f"retrieval.{metric}"] == pytest.approx(value, abs=1e-9)
        missed = not (set(ranked[o.case.id]) & {d for d, r in qrels[o.case.id].items() if r > 0})
        assert missed == any(c == "retrieval_miss" for c, _ in s.failures)


def test_a_query_with_nothing_retrieved_scores_zero() -> None:
    scores = ranx_scores({"q": {"a": 1}, "r": {"b": 2}}, {"r": {"b": 1.0, "x": 0.5}})
    assert scores["recall@5"] == {"q": 0.0, "r": 1.0}
    assert scores["mrr"]["q"] == 0.0 and scores["ndcg@5"]["r"] == 1.0
