"""``charter search``: permission-filtered hybrid search as a given user.

Everything printed comes from chunks the user may read (the index ranks only those, and re-checks each
hit's document ACL); error messages name only the user, the query's length and configuration, never
document content.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.markup import escape

from charter.cli._app import app
from charter.cli._common import AsOpt, CharterOpt, JsonOpt, acting_principal, console, emit, open_runtime


@app.command("search")
def search(
    query: Annotated[str, typer.Argument(help="What to look for.")],
    as_user: AsOpt,
    k: Annotated[
        int | None, typer.Option("--k", min=1, max=100, help="Results (default: retrieval.top_k).")
    ] = None,
    source: Annotated[
        list[str] | None, typer.Option("--source", help="Only these source ids (repeatable).")
    ] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Show BM25 and vector contributions.")] = False,
    as_json: JsonOpt = False,
    charter: CharterOpt = None,
) -> None:
    """Search the indexed sources as USER: only chunks USER may read are ranked and shown."""
    from charter.pipeline import search as governed_search

    rt = open_runtime(charter)
    principal = acting_principal(rt, as_user)
    spec = rt.spec
    fusion = spec.retrieval.fusion
    hits = governed_search(
        rt, principal, query, k=k, sources=set(source) if source else None, explain=explain
    )
    data: dict[str, Any] = {
        "user": principal.id,
        "k": k or spec.retrieval.top_k,
        "fusion": fusion.model_dump(),
        "results": [],
    }
    if spec.retrieval.mode != "bm25":  # the question was embedded: in which precision (docs/retrieval.md)
        from charter.retrieval import Index

        data["question_precision"] = Index.for_runtime(rt).question_precision_used()
    weights = _weights(hits, fusion)
    for h in hits:
        item = h.as_dict()
        if explain:
            item["explain"] = _explain(h, fusion, weights)
        data["results"].append(item)
    emit(data, as_json, lambda d: _render(d, explain))


def _weights(hits: list[Any], fusion: Any) -> tuple[float, float]:
    """The (BM25, dense) weights this query's fusion used. Fixed for ``weighted``; for ``adaptive`` they are
    per query with dense = 1 − BM25, recovered from any hit whose two normalised scores differ
    (score = w·bm25 + (1 − w)·dense); with none, every split gives the same scores."""
    if fusion.method != "adaptive":
        return float(fusion.bm25_weight), float(fusion.dense_weight)
    for h in hits:
        if abs(h.bm25_norm - h.dense_norm) > 1e-4:
            w = min(1.0, max(0.0, (h.score - h.dense_norm) / (h.bm25_norm - h.dense_norm)))
            return round(w, 4), round(1.0 - w, 4)
    return 0.0, 1.0


def _explain(hit: Any, fusion: Any, weights: tuple[float, float]) -> dict[str, Any]:
    if fusion.method == "rrf":
        return {
            "method": "rrf",
            "bm25_rrf": hit.bm25_norm,
            "dense_rrf": hit.dense_norm,
            "bm25_raw": hit.bm25,
            "dense_cosine": hit.dense,
        }
    wb, wd = weights
    return {
        "method": fusion.method,  # weighted: the charter's weights; adaptive: this query's (docs/retrieval.md)
        "normalization": fusion.normalization,
        "bm25": {
            "raw": hit.bm25,
            "normalised": hit.bm25_norm,
            "weight": wb,
            "contribution": wb * hit.bm25_norm,
        },
        "dense": {
            "cosine": hit.dense,
            "normalised": hit.dense_norm,
            "weight": wd,
            "contribution": wd * hit.dense_norm,
        },
    }


def _render(data: dict[str, Any], explain: bool) -> None:
    results = data["results"]
    if not results:
        console.print(f"No results that {escape(data['user'])} may read.", highlight=False)
        return
    for r in results:
        where = escape(r["heading"] or r["title"])
        if r["page"]:
            where += f", page {r['page']}"
        console.print(
            f"[bold]{r['rank']}.[/] {r['score']:.3f}  [cyan]{escape(r['source'])}[/]/{escape(r['doc_id'])}"
            f"#{r['position']}  {where}",
            highlight=False,
            soft_wrap=True,
        )
        console.print(
            f"   title: {escape(r['title'])}   visible via: {escape(', '.join(r['acl_reason']))}",
            highlight=False,
            soft_wrap=True,
        )
        if explain:
            e = r["explain"]
            if e["method"] == "rrf":
                console.print(
                    f"   rrf: bm25 {e['bm25_rrf']:.4f} (raw {e['bm25_raw']:.3f})"
                    f" + dense {e['dense_rrf']:.4f} (cosine {e['dense_cosine']:.3f})",
                    highlight=False,
                    soft_wrap=True,
                )
            else:
                b, d = e["bm25"], e["dense"]
                console.print(
                    f"   bm25 {b['raw']:.3f} → {b['normalised']:.3f} × {b['weight']}"
                    f" = {b['contribution']:.3f}"
                    f"   dense {d['cosine']:.3f} → {d['normalised']:.3f} × {d['weight']} = "
                    f"{d['contribution']:.3f}   ({e['normalization']})",
                    highlight=False,
                    soft_wrap=True,
                )
        snippet = " ".join(r["text"].split())
        if len(snippet) > 240:
            snippet = snippet[:237] + "..."
        console.print(f"   {escape(snippet)}", highlight=False, soft_wrap=True)
