"""Benchmark: what the model gateway adds around a model call.

Runs on a fresh copy of the billing-support example with the embedded SQLite store (WAL). Compares
``Gateway.generate`` (limits, retries, budget reservation, timeout thread, metering) with the bare
``model.generate`` of the same model, for

* ``extractive`` (free: no budget round trip),
* ``scripted`` with prices (a reservation and a settlement per call: two write transactions),
* the same with one idle keep-alive connection held open (what a connection pool in the store would give).

    .venv/bin/python bench/gateway_bench.py [--calls 300] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from charter.models import (  # noqa: E402
    ExtractiveModel,
    Model,
    Passage,
    PromptRegistry,
    ScriptedModel,
    build_gateway,
)
from charter.runtime import Runtime  # noqa: E402

PASSAGES = [
    Passage(
        "S1",
        "Card refunds reach the card within 5 to 10 business days after we issue them.",
        title="When will I see my refund?",
        audience="outbound",
    ),
    Passage("S2", "Refunds above 100 USD need approval by finance.", title="Refunds", audience="internal"),
]


def _pct(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return round(s[min(len(s) - 1, int(q * len(s)))], 3)


def _project(tmp: Path, priced: bool) -> Runtime:
    dest = tmp / ("priced" if priced else "free")
    shutil.copytree(REPO / "examples" / "billing-support", dest, ignore=shutil.ignore_patterns(".charter"))
    path = dest / "charter.yaml"
    data = yaml.safe_load(path.read_text())
    if priced:
        data["model"].update(
            provider="scripted", name="priced", prices={"input_per_1k": 0.001, "output_per_1k": 0.002}
        )
        data["budgets"].update(per_task_usd=1.0, monthly_usd=1_000_000.0)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    rt = Runtime.open(path)
    PromptRegistry(rt.charter, rt.store).approve("draft_reply", "v2", principal=rt.charter.principal("lena"))
    return rt


def _measure(rt: Runtime, model: Model, calls: int) -> dict[str, float]:
    gw = build_gateway(rt, primary=model)
    request = gw.build_request("How long does a card refund take?", PASSAGES)
    for i in range(5):
        gw.generate(request, request_id=f"warm-{time.time_ns()}-{i}", principal="ana")
    through: list[float] = []
    for i in range(calls):
        t = time.perf_counter()
        gw.generate(request, request_id=f"b-{time.time_ns()}-{i}", principal="ana")
        through.append((time.perf_counter() - t) * 1000)
    bare: list[float] = []
    for _ in range(calls):
        t = time.perf_counter()
        model.generate(request)
        bare.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    for _ in range(calls):
        gw.build_request("How long does a card refund take?", PASSAGES)
    build_ms = (time.perf_counter() - t) * 1000 / calls
    return {
        "gateway_p50_ms": _pct(through, 0.5),
        "gateway_p95_ms": _pct(through, 0.95),
        "bare_p50_ms": _pct(bare, 0.5),
        "bare_p95_ms": _pct(bare, 0.95),
        "overhead_p50_ms": round(_pct(through, 0.5) - _pct(bare, 0.5), 3),
        "build_request_ms": round(build_ms, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        free = _project(Path(tmp), priced=False)
        results["extractive (free)"] = _measure(free, ExtractiveModel(), args.calls)
        priced = _project(Path(tmp), priced=True)
        results["scripted, priced"] = _measure(
            priced, ScriptedModel("priced", default="ok [S1]."), args.calls
        )
        keep = priced.store.engine.connect()
        keep.exec_driver_sql("SELECT 1")
        results["scripted, priced, keep-alive connection"] = _measure(
            priced, ScriptedModel("priced", default="ok [S1]."), args.calls
        )
        keep.close()
        free.close()
        priced.close()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"{results['date']} · {results['machine']} · Python {results['python']}")
    for name, r in results.items():
        if isinstance(r, dict):
            print(
                f"{name:42s} gateway p50 {r['gateway_p50_ms']:8.3f} p95 {r['gateway_p95_ms']:8.3f}"
                f" · bare p50 {r['bare_p50_ms']:7.3f} · overhead p50 {r['overhead_p50_ms']:8.3f}"
                f" · build_request {r['build_request_ms']:.4f} ms"
            )


if __name__ == "__main__":
    main()
