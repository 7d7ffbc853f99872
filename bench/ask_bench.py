"""Ask pipeline overhead: what governance adds on top of retrieval and the model.

    .venv/bin/python bench/ask_bench.py [--chunks 10000 100000] [--requests 200] [--runs 5] [--busy]
        [--questions distinct|repeated] [--json out.json]

For each index size, the billing example is synced for real (its ~400 chunks, MiniLM embeddings) and then
padded with public filler chunks (MS MARCO passages from ../shared, random unit vectors — search cost does
not depend on vector values) up to the target size. Then, for every request, in the same process and on the
same question, two paths are timed back to back:

* **bare** — the same retrieval (``Index.search``) and the same model call (extractive) with nothing else:
  no policy, no budget, no checks, no recording;
* **governed** — ``charter.pipeline.ask``: identify/admit (Cedar, kill switch, limits), retrieve with the
  per-chunk ACL re-check, freshness and prompt rules, the gateway (metering, budget reservation and
  settlement, retries), check (citations, groundedness, canaries, PII, topics) and record (masked trace
  write, metrics).

**Questions.** With ``--questions distinct`` (the default) every request is a question the index has not
seen: the index's small cache of query vectors (keyed by the question's text) is emptied before each path,
so both paths embed the question with MiniLM, as a production request with a new question does. With
``--questions repeated`` the bench's ten questions repeat and, after the warm-up, every question's vector is a
cache hit on both paths: bare is then only the search and the model call (the earlier runs in
docs/benchmarks.md measured this).

``--runs N`` measures N series of ``--requests`` pairs per size (one sync, one padded index per size);
``--busy`` keeps one core busy with a separate spinning process for the whole measurement
(``_common.spinners``). The load average is printed with each series.

The two paths alternate which goes first. The governed path includes the durable trace write (the server's
group commit: the request returns only once its trace is committed, issue #24); after every governed
request the writer is flushed outside both timed regions. The record work (masking + insert per trace) is
also reported on its own ("record work"; issue 6: p95 ≤ 2 ms).

Governance overhead is reported two ways:

* **added latency** — governed p50/p95 minus bare p50/p95 (how much governance moves each percentile of
  the latency distribution; the definition LiteLLM's benchmark and bench/server_bench.py use) — the
  acceptance measure, as a share of bare p95;
* **paired** — governed − bare per request, at p50/p95: stricter, since the p95 of a difference also
  collects every timing hiccup (GC pause, scheduler) that hit either side of a pair.
After the per-run table, the runs of each size are pooled: the added latency over all their requests, with a
95 % bootstrap interval for added p95 ÷ bare p95 (one run's p95 is its 10th-slowest of 200 requests, so that
share scatters from run to run by more than the governed work changes it).
Results go to docs/benchmarks.md by hand (the script prints Markdown tables).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from sqlalchemy import func, insert, select  # noqa: E402

from charter.pipeline import _passage, _passages, ask, gateway_for, traces_for  # noqa: E402
from charter.retrieval import Index, analyse  # noqa: E402
from charter.runtime import Runtime  # noqa: E402
from charter.sources import sync_sources  # noqa: E402
from charter.store import utcnow  # noqa: E402
from charter.store.tables import acl, chunks, documents, embeddings, versions  # noqa: E402
from charter.telemetry import Trace  # noqa: E402

sys.path.insert(0, str(REPO / "bench"))
from _common import QUESTIONS, spinners  # type: ignore[import-not-found]  # noqa: E402


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"


def pad_index(rt: Runtime, target: int, corpus: list[dict]) -> int:
    """Insert public filler chunks into the help-center source until the index holds ``target`` chunks."""
    with rt.store.connect() as conn:
        have = conn.execute(select(func.count()).select_from(chunks)).scalar() or 0
        dim_row = conn.execute(select(embeddings.c.model, embeddings.c.dim).limit(1)).first()
        next_doc = (conn.execute(select(func.max(documents.c.id))).scalar() or 0) + 1
        next_chunk = (conn.execute(select(func.max(chunks.c.id))).scalar() or 0) + 1
    assert dim_row is not None, "sync first"
    model, dim = dim_row
    need = target - have
    if need <= 0:
        return int(have)
    rng = np.random.default_rng(7)
    now = utcnow()
    doc_rows, acl_rows, chunk_rows, emb_rows = [], [], [], []
    for i in range(need):
        d = corpus[i % len(corpus)]
        text = d["text"]
        h = f"filler-{target}-{i}"
        vec = rng.normal(size=dim).astype(np.float32)
        vec /= np.linalg.norm(vec)
        doc_pk, chunk_pk = next_doc + i, next_chunk + i
        doc_rows.append(
            {
                "id": doc_pk,
                "source_id": "help-center",
                "doc_id": f"filler/{target}/{i}.md",
                "title": d.get("title") or "",
                "url": None,
                "format": "text",
                "chunking": "200/30",
                "content_hash": h,
                "acl_hash": "",
                "private_by_default": False,
                "chunk_count": 1,
                "content_seen_at": now,
                "acl_seen_at": now,
                "synced_at": now,
            }
        )
        acl_rows.append({"doc_pk": doc_pk, "token": "public"})
        chunk_rows.append(
            {
                "id": chunk_pk,
                "doc_pk": doc_pk,
                "position": 0,
                "heading": "",
                "page": None,
                "text": text,
                "tokens": len(text.split()),
                "text_hash": h,
                "terms": " ".join(analyse(text)),
            }
        )
        emb_rows.append({"model": model, "text_hash": h, "dim": dim, "vector": vec.astype("<f4").tobytes()})
    with rt.store.begin() as conn:
        for table, rows in (
            (documents, doc_rows),
            (acl, acl_rows),
            (chunks, chunk_rows),
            (embeddings, emb_rows),
        ):
            for j in range(0, len(rows), 10000):
                conn.execute(insert(table), rows[j : j + 10000])
        conn.execute(versions.update().values(counter=versions.c.counter + 1))
    return target


def measure(rt: Runtime, n_requests: int, distinct: bool = True) -> dict[str, object]:
    ana = rt.charter.principal("ana")
    index = Index.for_runtime(rt)
    gateway = gateway_for(rt)
    model = gateway.model  # the wrapped chain; bare calls go to the innermost provider below
    inner = model
    while hasattr(inner, "inner"):
        inner = inner.inner
    spec = rt.spec
    # warm up: index matrices, embedder, prompt cache, policy set
    for q in QUESTIONS:
        ask(rt, ana, q, submit_for_review=False)
    store = traces_for(rt)
    bare_ms, governed_ms, overhead_ms, write_ms = [], [], [], []
    for i in range(n_requests):
        q = QUESTIONS[i % len(QUESTIONS)]

        def run_bare(q: str = q) -> float:
            if distinct:
                index._query_vectors.clear()  # a question not seen before: it is embedded
            t0 = time.perf_counter()
            hits = index.search(ana.acl_tokens, q, k=spec.retrieval.top_k, fusion=spec.retrieval.fusion)
            passages, audience = _passages(rt, hits)
            request = gateway.build_request(q, [_passage(c, h, audience[c]) for c, h in passages.items()])
            inner.generate(request)
            return (time.perf_counter() - t0) * 1000

        def run_governed(q: str = q) -> float:
            if distinct:
                index._query_vectors.clear()
            t0 = time.perf_counter()
            ask(rt, ana, q, submit_for_review=False)
            elapsed = (time.perf_counter() - t0) * 1000
            # Let the background writer finish this trace before anything else is timed: its masking and
            # insert would otherwise run during the next request (on the GIL) and be billed to whichever
            # path that is. Its work is measured on its own below.
            store.flush()
            return elapsed

        # alternate which path goes first, so neither always runs on caches the other just warmed
        if i % 2 == 0:
            bare = run_bare()
            governed = run_governed()
        else:
            governed = run_governed()
            bare = run_bare()
        bare_ms.append(bare)
        governed_ms.append(governed)
        overhead_ms.append(governed - bare)
    # the record work itself (masking + insert: what the writer thread does per trace, or the request
    # thread with --sync-writes), on realistic traces
    for i in range(n_requests):
        trace = Trace(
            workflow="billing-support",
            principal_id="ana",
            question=QUESTIONS[i % len(QUESTIONS)] + " my email is jane.doe@example.com",
            status="answered",
            answer="Refunds take 5–10 days [S1].",
        )
        t0 = time.perf_counter()
        rows, _doc = store._prepare(trace)
        store._insert([rows])
        write_ms.append((time.perf_counter() - t0) * 1000)
    return {
        "loadavg": os.getloadavg(),
        "bare_p50": pct(bare_ms, 50),
        "bare_p95": pct(bare_ms, 95),
        "governed_p50": pct(governed_ms, 50),
        "governed_p95": pct(governed_ms, 95),
        "overhead_p50": pct(overhead_ms, 50),
        "overhead_p95": pct(overhead_ms, 95),
        "overhead_share_p50": statistics.median(o / b for o, b in zip(overhead_ms, bare_ms, strict=True)),
        "overhead_p95_share_of_bare_p95": pct(overhead_ms, 95) / pct(bare_ms, 95),
        # the other common definition ("added latency", as LiteLLM's benchmark and bench/server_bench.py
        # report it): the difference of the two distributions' percentiles
        "added_p50": pct(governed_ms, 50) - pct(bare_ms, 50),
        "added_p95": pct(governed_ms, 95) - pct(bare_ms, 95),
        "trace_write_p50": pct(write_ms, 50),
        "trace_write_p95": pct(write_ms, 95),
        "bare_ms": bare_ms,  # per request, for the pooled estimate over the runs (see pooled)
        "governed_ms": governed_ms,
    }


def pooled(runs: list[dict[str, object]], draws: int = 2000, seed: int = 21) -> dict[str, float]:
    """The added latency over all runs of one size together (each run's requests are pairs: the bare and
    the governed path of one question, back to back), with a 95 % bootstrap interval for the share of bare
    p95 (pairs resampled with replacement). One run of 200 requests puts its p95 on its 10th-slowest
    request, so the share scatters from run to run; the pooled estimate says where it lies."""
    bare = np.concatenate([np.asarray(r["bare_ms"]) for r in runs])
    gov = np.concatenate([np.asarray(r["governed_ms"]) for r in runs])

    def share(b: np.ndarray, g: np.ndarray) -> float:
        b95 = float(np.percentile(b, 95))
        return (float(np.percentile(g, 95)) - b95) / b95

    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(draws):
        idx = rng.integers(0, len(bare), len(bare))
        boot.append(share(bare[idx], gov[idx]))
    lo, hi = np.percentile(boot, [2.5, 97.5])
    return {
        "requests": float(len(bare)),
        "added_p50": pct(list(gov), 50) - pct(list(bare), 50),
        "added_p95": pct(list(gov), 95) - pct(list(bare), 95),
        "share": share(bare, gov),
        "share_lo": float(lo),
        "share_hi": float(hi),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "retrieval" / "msmarco")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--runs", type=int, default=1, help="measurement series per size")
    ap.add_argument("--busy", action="store_true", help="keep one core busy during the measurements")
    ap.add_argument(
        "--questions",
        choices=["distinct", "repeated"],
        default="distinct",
        help="distinct: every question is embedded (the query-vector cache is emptied before each path)",
    )
    ap.add_argument(
        "--sync-writes",
        action="store_true",
        help="write traces synchronously (the CLI's way) instead of the server's background writer",
    )
    args = ap.parse_args()
    corpus = [
        json.loads(line) for line in (args.data / "corpus.jsonl").read_text().split("\n") if line.strip()
    ]
    results: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(
            REPO / "examples" / "billing-support", project, ignore=shutil.ignore_patterns(".charter")
        )
        rt = Runtime.open(project / "charter.yaml")
        print("syncing the billing example…", flush=True)
        sync_sources(rt)
        from charter.models import PromptRegistry

        PromptRegistry(rt.charter, rt.store, audit=lambda **e: rt.audit.append(**e)).approve(
            "draft_reply", rt.spec.prompt("draft_reply").active, principal=rt.charter.principal("lena")
        )
        if not args.sync_writes:
            # what `charter serve` does (start_server_telemetry); no batching linger, so that waiting for
            # each trace between measurements (see measure) leaves no idle gap before the next request
            traces_for(rt).enable_background_writes(linger=0.0)
        import gc

        for n in sorted(args.chunks):
            size = pad_index(rt, n, corpus)
            for run in range(1, args.runs + 1):
                print(f"measuring at {size} chunks, run {run}/{args.runs}…", flush=True)
                gc.collect()
                gc.freeze()  # as the server does after warm-up: keeps GC pauses of torch/spaCy objects out of p95
                with spinners(1 if args.busy else 0):
                    results[f"{size}#{run}"] = measure(rt, args.requests, args.questions == "distinct")
                traces_for(rt).flush()
        rt.close()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "synchronous trace writes" if args.sync_writes else "background trace writes (server mode)"
    mode += f", {args.questions} questions" + (", one core busy" if args.busy else "")
    print(f"\n### Ask pipeline overhead — {stamp}, {machine()}, {args.requests} requests per run, {mode}\n")
    print(
        "| chunks # run | load avg (1/5/15) | bare p50 / p95 ms | governed p50 / p95 ms | paired overhead p50 / p95 ms "
        "| paired p95 / bare p95 | added p50 / p95 ms | added p95 / bare p95 | record work p50 / p95 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for n, r in results.items():
        load = " / ".join(f"{x:.2f}" for x in r["loadavg"])  # type: ignore[attr-defined]
        size, run = n.split("#")
        print(
            f"| {int(size):,} #{run} | {load} | {r['bare_p50']:.1f} / {r['bare_p95']:.1f} | {r['governed_p50']:.1f} / {r['governed_p95']:.1f} "
            f"| {r['overhead_p50']:.2f} / {r['overhead_p95']:.2f} | {100 * r['overhead_p95_share_of_bare_p95']:.1f}% "
            f"| {r['added_p50']:.2f} / {r['added_p95']:.2f} | {100 * r['added_p95'] / r['bare_p95']:.1f}% "
            f"| {r['trace_write_p50']:.2f} / {r['trace_write_p95']:.2f} |"
        )
    sizes = sorted({n.split("#")[0] for n in results}, key=int)
    print(
        "\nPooled over the runs (added = governed − bare percentile; 95 % bootstrap interval over request pairs):\n"
    )
    print("| chunks | runs × requests | added p50 / p95 ms | added p95 ÷ bare p95 (95 % CI) |")
    print("|---|---|---|---|")
    for size in sizes:
        pool = pooled([r for n, r in results.items() if n.split("#")[0] == size])
        print(
            f"| {int(size):,} | {len([n for n in results if n.split('#')[0] == size])} × {args.requests} "
            f"| {pool['added_p50']:.2f} / {pool['added_p95']:.2f} "
            f"| {100 * pool['share']:.1f} % ({100 * pool['share_lo']:.1f} – {100 * pool['share_hi']:.1f} %) |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"date": stamp, "machine": machine(), "mode": mode, "results": results}, indent=2)
        )


if __name__ == "__main__":
    main()
