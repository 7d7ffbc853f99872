"""``retrieval.mode`` in the charter: every question and search of the workflow ranks with it, permission
filtering included, and ``bm25`` never embeds the question."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from charter.models import ScriptedModel, build_gateway
from charter.pipeline import ask, search
from charter.retrieval import Index
from charter.runtime import Runtime

QUESTIONS = ["How long do card refunds take?", "Can I pay by bank transfer?", "INV-2026-004817"]


def _with_mode(charter: Path, mode: str) -> None:
    doc = yaml.safe_load(charter.read_text())
    doc.setdefault("retrieval", {})["mode"] = mode
    charter.write_text(yaml.safe_dump(doc, sort_keys=False))


@pytest.mark.parametrize("mode", ["bm25", "dense", "hybrid"])
def test_search_and_ask_rank_with_the_charters_mode(synced_project: Path, mode: str) -> None:
    _with_mode(synced_project, mode)
    rt = Runtime.open(synced_project)
    try:
        assert rt.spec.retrieval.mode == mode
        index = Index.for_runtime(rt)
        for user in ("ana", "farid"):  # different readers: support and finance
            who = rt.charter.principal(user)
            for q in QUESTIONS:
                got = [h.chunk_id for h in search(rt, who, q)]
                want = [
                    h.chunk_id
                    for h in index.search(
                        who.acl_tokens,
                        q,
                        k=rt.spec.retrieval.top_k,
                        fusion=rt.spec.retrieval.fusion,
                        sources={s.id for s in rt.spec.sources},
                        min_score=rt.spec.retrieval.min_score,
                        mode=mode,
                    )
                ]
                assert got == want, (mode, user, q)
        # what ask retrieved (its trace) is the same ranking
        who = rt.charter.principal("ana")
        result = ask(rt, who, QUESTIONS[0], submit_for_review=False)
        from charter.pipeline import traces_for

        trace = traces_for(rt).get(result.request_id)
        assert trace is not None
        retrieved = [r["chunk_id"] for r in trace["retrieved"]]
        assert retrieved == [h.chunk_id for h in search(rt, who, QUESTIONS[0])][: len(retrieved)]
    finally:
        rt.close()


def test_bm25_mode_never_embeds_the_question(synced_project: Path) -> None:
    _with_mode(synced_project, "bm25")
    rt = Runtime.open(synced_project)
    try:
        index = Index.for_runtime(rt)
        index._query_vectors.clear()
        # a scripted model: the extractive one embeds the question itself to choose sentences
        rt.services.gateway = build_gateway(rt, primary=ScriptedModel("scripted", default="Five days [S1]."))
        ask(rt, rt.charter.principal("ana"), "How long do card refunds take?", submit_for_review=False)
        search(rt, rt.charter.principal("ana"), "a question never asked before")
        assert len(index._query_vectors) == 0
    finally:
        rt.close()
    _with_mode(synced_project, "hybrid")
    rt = Runtime.open(synced_project)
    try:
        index = Index.for_runtime(rt)
        search(rt, rt.charter.principal("ana"), "a question never asked before")
        assert len(index._query_vectors) == 1  # the oracle can see an embedding when there is one
    finally:
        rt.close()
