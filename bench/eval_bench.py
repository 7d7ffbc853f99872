"""Eval-runner throughput: cases per second through the real pipeline with the extractive model, at
concurrency 1 and 8, on the billing example's eval set.

    .venv/bin/python bench/eval_bench.py [--project DIR] [--cases N] [--concurrency 1 8] [--json out.json]

``--project`` is a folder holding a synced copy of the billing example (``charter.yaml`` + ``.charter/``);
without it the example is copied to a temporary folder and synced first (a few minutes: MiniLM embeds
every chunk), and its prompt is approved. Embedder warm-up happens before timing (as in ``charter eval``).
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
EXAMPLE = REPO / "examples" / "billing-support"

from charter.evals import load_eval_sets, run_cases  # noqa: E402
from charter.runtime import Runtime  # noqa: E402


def synced_copy(dest: Path) -> Path:
    from charter.models import PromptRegistry
    from charter.sources import sync_sources

    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".charter", "__pycache__"))
    rt = Runtime.open(dest / "charter.yaml")
    try:
        sync_sources(rt)
        registry = PromptRegistry(rt.charter, rt.store, audit=lambda **e: rt.audit.append(**e))
        lena = rt.charter.principal("lena")
        for prompt in rt.spec.prompts:
            registry.approve(prompt.name, prompt.active, principal=lena)
    finally:
        rt.close()
    return dest


def measure(project: Path, concurrency: int, limit: int | None) -> dict[str, object]:
    rt = Runtime.open(project / "charter.yaml")
    try:
        cases = load_eval_sets([rt.charter.resolve(s) for s in rt.spec.evals.sets])
        if limit:
            cases = cases[:limit]
        run_cases(rt, cases[:2], concurrency=1)  # warm-up: embedder, gateway, SQLite pool
        t0 = time.perf_counter()
        outputs = run_cases(rt, cases, concurrency=concurrency)
        elapsed = time.perf_counter() - t0
    finally:
        rt.close()
    lat = sorted(o.latency_ms for o in outputs)
    return {
        "concurrency": concurrency,
        "cases": len(outputs),
        "seconds": round(elapsed, 2),
        "cases_per_second": round(len(outputs) / elapsed, 2),
        "latency_p50_ms": round(statistics.median(lat), 1),
        "latency_p95_ms": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 1),
        "errors": sum(1 for o in outputs if o.status in ("error", "timeout")),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--project", type=Path, help="folder with a synced copy of the billing example")
    ap.add_argument("--cases", type=int, default=None, help="only the first N cases")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    tmp = None
    project = args.project
    if project is None:
        tmp = Path(tempfile.mkdtemp(prefix="eval-bench-"))
        print("syncing a copy of the billing example ...", file=sys.stderr)
        project = synced_copy(tmp / "project")
    try:
        rows = [measure(project, c, args.cases) for c in args.concurrency]
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "model": "extractive",
        "results": rows,
    }
    print(
        f"{'concurrency':>11} {'cases':>6} {'seconds':>8} {'cases/s':>8} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'errors':>6}"
    )
    for r in rows:
        print(
            f"{r['concurrency']:>11} {r['cases']:>6} {r['seconds']:>8} {r['cases_per_second']:>8} "
            f"{r['latency_p50_ms']:>8} {r['latency_p95_ms']:>8} {r['errors']:>6}"
        )
    print(json.dumps(result["machine"]), result["date"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
