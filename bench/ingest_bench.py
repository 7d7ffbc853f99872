"""Ingestion throughput: cold sync with the local model, cache-warm sync, and the embeddings endpoint at
concurrency 1 vs 4; peak RSS and RSS samples during the cold sync (memory should stay flat).

The corpus is Debian's PostgreSQL 15 manual (``postgresql-doc-15``, 1,171 HTML pages; scripts/setup
installs it) read by the ``folder`` connector; ``--chunk-tokens`` sets the chunk size and so the number of
chunks (64 tokens → about 25,000 chunks for the whole manual).

    nice -n 10 python bench/ingest_bench.py --pages 1171 --chunk-tokens 64          # the full size
    nice -n 10 python bench/ingest_bench.py --pages 120 --endpoint-pages 15           # a smaller run

``--phases cold`` / ``--phases warm,endpoint`` with the same ``--workdir`` run the phases in separate
processes (the warm sync then starts without any in-process cache, like a re-sync by a new ``charter
sync``); ``--json`` results of the two runs are merged into the file.

Phases (each on a fresh SQLite store in a temporary folder, except ``warm``):

* ``cold``     — local all-MiniLM-L6-v2, empty embedding cache;
* ``warm``     — the same pages as a second source in the same store: every vector comes from the
  content-hash cache (nothing is embedded), so this measures everything else in the pipeline; then a
  third copy in the same process (``warm_same_process``: in-process memos of screening verdicts and
  token counts warm too);
* ``endpoint`` — llama.cpp's OpenAI-compatible server (SmolLM2-135M, ``--embedding``) started here,
  ``--endpoint-pages`` pages, with ``concurrency`` 1 and 4.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))  # this tree, not an installed copy
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "billing-support"
DOCS = Path("/usr/share/doc/postgresql-doc-15/html")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class RssSampler:
    def __init__(self, every: float = 1.0) -> None:
        self.samples: list[float] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self.stop.wait(every):
            self.samples.append(rss_mb())

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


# ``--drafter model``: the workflow drafts with a model endpoint (never called by a sync), so the sync embeds
# chunks only; the example's extractive drafter also has every passage sentence embedded at sync time.
MODEL_DRAFTER = {
    "provider": "openai",
    "name": "any-chat-model",
    "endpoint": "http://127.0.0.1:9/v1",
    "prices": {"input_per_1k": 0.0, "output_per_1k": 0.0},
}


def make_project(
    root: Path,
    pages: list[Path],
    sources: list[str],
    retrieval: dict[str, Any],
    tokens: int,
    drafter: str = "example",
) -> Path:
    import yaml

    proj = root / "project"
    shutil.copytree(EXAMPLE, proj, ignore=shutil.ignore_patterns(".charter", "__pycache__"))
    corpus = proj / "pgdocs"
    corpus.mkdir()
    for p in pages:
        shutil.copy(p, corpus / p.name)
    charter = proj / "charter.yaml"
    data = yaml.safe_load(charter.read_text())
    data["sources"] = [
        {
            "id": sid,
            "connector": "folder",
            "location": "pgdocs",
            "owner": "omar",
            "sensitivity": "public",
            "permissions": {"model": "public"},
            "freshness": {"max_age": "7d"},
            "chunking": {"max_tokens": tokens, "overlap": min(8, tokens // 4)},
        }
        for sid in sources
    ]
    data["retrieval"] = {**data.get("retrieval", {}), **retrieval}
    if drafter == "model":
        data["model"] = {**data["model"], **MODEL_DRAFTER}
    charter.write_text(yaml.safe_dump(data, sort_keys=False))
    return charter


def add_source(charter: Path, new_id: str, like: str) -> None:
    """Add a copy of source ``like`` under ``new_id`` to the charter (unless it is there)."""
    import yaml

    data = yaml.safe_load(charter.read_text())
    if any(s["id"] == new_id for s in data["sources"]):
        return
    model = next(s for s in data["sources"] if s["id"] == like)
    data["sources"].append({**model, "id": new_id})
    charter.write_text(yaml.safe_dump(data, sort_keys=False))


def timed_sync(charter: Path, source: str | None = None) -> dict[str, Any]:
    from charter.retrieval import Index, count_tokens
    from charter.runtime import Runtime
    from charter.sources import sync_sources

    rt = Runtime.open(charter)
    try:
        index = Index.for_runtime(rt)
        index.embedder.embed(["load the model before the clock starts"])
        count_tokens(["and the tokenizer the chunker counts with"])
        with RssSampler() as sampler:
            t0 = time.perf_counter()
            summaries = sync_sources(rt, source, prune=False)
            seconds = time.perf_counter() - t0
        counts = index.counts()
        chunks = sum(counts.get(s.source_id, {}).get("chunks", 0) for s in summaries)
        assert all(s.ok for s in summaries), [s.as_dict() for s in summaries]
        emb = index.embedder
        return {
            "documents": sum(s.added + s.updated for s in summaries),
            "chunks": chunks,
            "seconds": round(seconds, 2),
            "chunks_per_s": round(chunks / seconds, 1),
            "rss_mb_samples": [round(x) for x in sampler.samples[:: max(1, len(sampler.samples) // 12)]],
            "requests": getattr(emb, "requests", None),
        }
    finally:
        rt.close()


def start_llama(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    from charter.models import smollm2_path

    port = free_port()
    out = log.open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(smollm2_path()),
            "--model_alias",
            "smollm2-emb",
            "--embedding",
            "true",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "2048",
        ],
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("llama_cpp.server did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=1171, help="manual pages for cold/warm (default: all)")
    ap.add_argument("--endpoint-pages", type=int, default=40, help="pages for the endpoint phases")
    ap.add_argument("--chunk-tokens", type=int, default=64)
    ap.add_argument("--skip-endpoint", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the results here (merged into an existing file)")
    ap.add_argument("--phases", default="cold,warm,endpoint", help="comma-separated: cold, warm, endpoint")
    ap.add_argument("--workdir", type=Path, help="keep the project here (default: a temporary folder)")
    ap.add_argument(
        "--drafter",
        choices=["example", "model"],
        default="example",
        help="example: the billing example's extractive drafter (sentence vectors embedded at sync time too); "
        "model: a model endpoint drafts (the sync embeds chunks only)",
    )
    args = ap.parse_args()
    phases = set(args.phases.split(","))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if not (DOCS / "index.html").is_file():
        raise SystemExit("apt-get install postgresql-doc-15 (scripts/setup) first")
    pages = sorted(p for p in DOCS.glob("*.html"))[: args.pages]
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "nproc": os.cpu_count(),
        f"loadavg_start_{'_'.join(sorted(phases))}": os.getloadavg(),
        "pages": len(pages),
        "chunk_tokens": args.chunk_tokens,
        "drafter": args.drafter,
    }
    if args.json and args.json.is_file():
        results = {**json.loads(args.json.read_text()), **{k: v for k, v in results.items() if k != "date"}}
        results[f"date_{'_'.join(sorted(phases))}"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        work = args.workdir or Path(tmp)
        charter = work / "project" / "charter.yaml"
        if "cold" in phases:
            if args.workdir and (work / "project").exists():
                shutil.rmtree(work / "project")
            work.mkdir(parents=True, exist_ok=True)
            charter = make_project(
                work, pages, ["pg", "pg-copy"], {"embedder": "minilm"}, args.chunk_tokens, args.drafter
            )
            results["cold"] = timed_sync(charter, "pg")
            print(json.dumps({"cold": results["cold"]}), flush=True)
        if "warm" in phases:
            add_source(charter, "pg-copy2", "pg")
            results["warm"] = timed_sync(charter, "pg-copy")
            print(json.dumps({"warm": results["warm"]}), flush=True)
            # a third copy in the same process: what a long-lived process (or one sync of several
            # sources holding the same texts) sees, with the screening and token-count memos warm too
            results["warm_same_process"] = timed_sync(charter, "pg-copy2")
            print(json.dumps({"warm_same_process": results["warm_same_process"]}), flush=True)
        if "cold" in results and "warm" in results:
            for key in ("warm", "warm_same_process"):
                if key in results:
                    results[f"{key}_over_cold"] = round(
                        results[key]["chunks_per_s"] / results["cold"]["chunks_per_s"], 1
                    )
    if not args.skip_endpoint and "endpoint" in phases:
        ep_pages = pages[: args.endpoint_pages]
        with tempfile.TemporaryDirectory(prefix="ingest-bench-ep-") as tmp:
            proc, base = start_llama(Path(tmp) / "llama.log")
            try:
                for conc in (1, 4):
                    sub = Path(tmp) / f"c{conc}"
                    sub.mkdir()
                    retrieval = {
                        "embedder": "openai",
                        "embeddings": {
                            "endpoint": base,
                            "model": "smollm2-emb",
                            "batch_size": 16,
                            "concurrency": conc,
                        },
                    }
                    charter = make_project(sub, ep_pages, ["pg"], retrieval, args.chunk_tokens, args.drafter)
                    results[f"endpoint_c{conc}"] = timed_sync(charter, "pg")
                    print(json.dumps({f"endpoint_c{conc}": results[f"endpoint_c{conc}"]}), flush=True)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    results[f"peak_rss_mb_{'_'.join(sorted(phases))}"] = round(peak_rss_mb())
    results[f"loadavg_end_{'_'.join(sorted(phases))}"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
