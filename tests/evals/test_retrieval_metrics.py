"""The retrieval scorer's ranx metrics, reproduced by an independent implementation, on our own hybrid
retrieval over a subset of MS MARCO (../shared/data/retrieval/msmarco): every judged query, its judged
passages and deterministic distractors, 300 passages in all, embedded with the real MiniLM model."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from charter.evals import CaseOutput, EvalCase, get_scorers, ranx_scores

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "retrieval" / "msmarco"
N_PASSAGES = 300
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
    if not DATA.exists():
        pytest.fail(f"MS MARCO data not found at {DATA}")  # never skip silently
    corpus = [json.loads(line) for line in (DATA / "corpus.jsonl").open(encoding="utf-8")]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (DATA / "queries.jsonl").open(encoding="utf-8"))}
    qrels: dict[str, dict[str, int]] = {}
    for line in (DATA / "qrels" / "test.tsv").open(encoding="utf-8"):
        parts = line.strip().split("\t")
        if len(parts) == 3 and parts[2].isdigit() and parts[0] in queries:
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    judged = {d for rels in qrels.values() for d, r in rels.items() if r > 0}
    chosen = [d for d in corpus if d["_id"] in judged]
    # cap the judged passages per query so the subset stays small but every query keeps its relevant ones
    if len(chosen) > N_PASSAGES - 50:
        keep: set[str] = set()
        for rels in qrels.values():
            keep.update(sorted(d for d, r in rels.items() if r > 0)[:3])
        chosen = [d for d in corpus if d["_id"] in keep]
    distractors = [d for d in corpus if d["_id"] not in judged][: max(0, N_PASSAGES - len(chosen))]
    docs = chosen + distractors
    ids = {d["_id"] for d in docs}
    qrels = {q: {d: r for d, r in rels.items() if d in ids} for q, rels in qrels.items()}
    qrels = {q: rels for q, rels in qrels.items() if any(r > 0 for r in rels.values())}
    return docs, {q: queries[q] for q in qrels}, qrels


@pytest.fixture(scope="module")
def retrieval_run(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[dict[str, dict[str, int]], dict[str, list[str]]]:
    from charter.retrieval import Index, get_embedder
    from charter.sources import Document
    from charter.spec._schema import Chunking, Fusion
    from charter.store import open_store

    docs, queries, qrels = _subset()
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('msmarco') / 'idx.db'}")
    index = Index(store, get_embedder("minilm"))
    chunking = Chunking(max_tokens=512, overlap=0)
    documents = [
        Document(
            source_id="msmarco", doc_id=d["_id"], title=d.get("title") or "", text=d["text"], format="text"
        )
        for d in docs
    ]
    index.prefetch_embeddings(documents, chunking)
    for doc in documents:
        index.upsert_document(doc, frozenset({"public"}), chunking)
    fusion = Fusion()  # the charter's default hybrid fusion
    ranked = {}
    for q, text in queries.items():
        hits = index.search(frozenset({"public"}), text, k=K, fusion=fusion)
        ranked[q] = [h.doc_id for h in hits]
    store.dispose()
    return qrels, ranked


def test_ranx_scores_match_an_independent_implementation(retrieval_run: Any) -> None:
    qrels, ranked = retrieval_run
    assert len(qrels) >= 40
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
            expected_sources={f"msmarco/{d}": r for d, r in rels.items() if r > 0},
        )
        retrieved = [
            {"chunk_id": f"msmarco/{d}#0", "source": "msmarco", "doc_id": d, "rank": i}
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
