"""Benchmark: tool proposals → approvals → executions, and the policy check's latency per tool call.

Runs on a fresh copy of the billing-support example with the embedded SQLite store (WAL), the real Cedar
authorizer (one parsed policy set, reused) and the real hash-chained audit log.

    .venv/bin/python bench/approvals_bench.py [--cycles 200] [--checks 5000] [--json]

Measures
* ``policy_check``: ``Authorizer.authorize(principal, "tools.call", tool, {"args": …})`` alone, and the
  ``tools.approve`` check with a conditional rule (the Cedar decision every proposal/approval adds);
* ``auto``: ``propose`` of a tool that needs no approval (validate, Cedar, kill switch, rate limit, store,
  execute, audit) — calls per second;
* ``approval_cycle``: ``propose(issue_refund 50)`` → ``decide_approval(approve)`` → execution — cycles per second.
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
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from charter.review import ManualClock, decide_approval  # noqa: E402
from charter.runtime import Runtime  # noqa: E402
from charter.tools import propose  # noqa: E402


def _percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]

    return {
        "p50_ms": round(pct(50), 4),
        "p95_ms": round(pct(95), 4),
        "p99_ms": round(pct(99), 4),
        "mean_ms": round(statistics.fmean(ordered), 4),
        "n": len(ordered),
    }


def _first_paid_invoice() -> str:
    data = json.loads((REPO / "examples/billing-support/data/invoices.json").read_text())["invoices"]
    return str(
        next(
            i["id"]
            for i in data
            if i["status"] == "paid" and i["amount_paid"] >= 1000 and not i["amount_refunded"]
        )
    )


def _throughput(
    rt: Runtime, clock: ManualClock, cycles: int, invoice: str, call_args: dict[str, Any]
) -> dict[str, Any]:
    t0 = time.perf_counter()
    for _ in range(cycles):
        clock.advance(timedelta(seconds=2))  # lookup_invoice: 60 per minute
        assert propose(rt, "ana", "lookup_invoice", {"invoice_id": invoice}, clock=clock).executed
    auto_s = time.perf_counter() - t0
    cycle_ms: list[float] = []
    for _ in range(cycles):
        clock.advance(timedelta(minutes=7))  # issue_refund: 10 per hour
        t0 = time.perf_counter()
        p = propose(rt, "ana", "issue_refund", {**call_args, "amount": 0.5}, origin="model", clock=clock)
        done = decide_approval(rt, p.id, "lena", "approve", clock=clock)
        cycle_ms.append((time.perf_counter() - t0) * 1000)
        assert done.status == "executed", done.error
    return {
        "auto_per_second": round(cycles / auto_s, 1),
        "approval_cycle": {
            "cycles": cycles,
            "per_second": round(cycles / (sum(cycle_ms) / 1000), 1),
            **_percentiles(cycle_ms),
        },
    }


def run(cycles: int, checks: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="charter-bench-"))
    project = workdir / "project"
    shutil.copytree(
        REPO / "examples/billing-support", project, ignore=shutil.ignore_patterns(".charter", "__pycache__")
    )
    rt = Runtime.open(project / "charter.yaml")
    invoice = _first_paid_invoice()
    try:
        authz = rt.authorizer
        ana = rt.charter.principal("ana")
        lena = rt.charter.principal("lena")
        call_args = {"invoice_id": invoice, "amount": 50, "reason": "duplicate charge"}
        for _ in range(200):  # warm-up
            authz.authorize(ana, "tools.call", "tool:issue_refund", {"args": call_args})
        call_ms: list[float] = []
        approve_ms: list[float] = []
        for _ in range(checks):
            t0 = time.perf_counter()
            d1 = authz.authorize(ana, "tools.call", "tool:issue_refund", {"args": call_args})
            t1 = time.perf_counter()
            d2 = authz.authorize(lena, "tools.approve", "tool:issue_refund", {"args": call_args})
            t2 = time.perf_counter()
            assert d1.allowed and d2.allowed
            call_ms.append((t1 - t0) * 1000)
            approve_ms.append((t2 - t1) * 1000)

        clock = ManualClock()
        measured = _throughput(rt, clock, cycles, invoice, call_args)
        return {
            "date": datetime.now(UTC).strftime("%Y-%m-%d"),
            "machine": {
                "platform": platform.platform(),
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "processor": platform.processor() or platform.machine(),
            },
            "store": rt.store.dialect,
            "policy_check": {"tools.call": _percentiles(call_ms), "tools.approve": _percentiles(approve_ms)},
            **measured,
        }
    finally:
        rt.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--checks", type=int, default=5000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.cycles, args.checks)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    pc = result["policy_check"]
    print(
        f"{result['date']} · {result['machine']['processor']} · {result['machine']['cpus']} CPUs · "
        f"Python {result['machine']['python']} · {result['store']}"
    )
    for action, s in pc.items():
        print(
            f"policy check {action:14s} p50 {s['p50_ms']:.3f} ms  p95 {s['p95_ms']:.3f} ms  "
            f"p99 {s['p99_ms']:.3f} ms  (n={s['n']})"
        )
    ac = result["approval_cycle"]
    print(f"propose → execute (no approval needed): {result['auto_per_second']:.1f}/s")
    print(
        f"propose → approve → execute: {ac['per_second']:.1f}/s "
        f"(p50 {ac['p50_ms']:.1f} ms, p95 {ac['p95_ms']:.1f} ms)"
    )


if __name__ == "__main__":
    main()
