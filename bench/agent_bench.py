"""Benchmark: what the governed agent loop adds to each step of a task, against the same steps ungoverned.

Runs on a fresh, synced copy of the order-desk example (SQLite WAL, real MiniLM retrieval, real Cedar, real
hash-chained audit log, the example's real tools). The model is a zero-latency function that asks for the same
calls every time (``lookup_order``, then ``add_order_note``, then an answer citing the lookup), so what is
measured is the loop: admission, retrieval, one gateway call per step, each call's proposal (validation,
Cedar, kill switch, rate limit, audited decision, execution, stored result), the durable save of the run after
every step, the final answer's checks and the trace.

    .venv/bin/python bench/agent_bench.py [--tasks 100] [--json]

Rows
* ``bare``: the same three model calls and the two tool functions called directly (no governance at all);
* ``governed``: ``charter.agents.run_task`` end to end;
* ``per step added``: (governed − bare) / 3 steps;
* ``resume``: a run paused on a refund above the approval threshold, approved, then ``resume_run`` to the
  end (two more steps).
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import pct  # noqa: E402

from charter.agents import resume_run, run_task  # noqa: E402
from charter.models import Generation, GenerationRequest, PromptRegistry, ToolCall, build_gateway  # noqa: E402
from charter.review import decide_approval  # noqa: E402
from charter.runtime import Runtime  # noqa: E402
from charter.sources import sync_sources  # noqa: E402
from charter.tools import ToolContext, tool_registry  # noqa: E402

TASK = "ORD-10421: the customer asks for the status; look it up and note that we checked."


class Planner:
    """Zero-latency model: lookup, note, answer (citing the lookup's result)."""

    provider_name = "scripted"
    name = "bench"

    def generate(self, request: GenerationRequest) -> Generation:
        step = len(request.turns)
        calls: tuple[ToolCall, ...] = ()
        text = ""
        if step == 0:
            calls = (ToolCall("c1", "lookup_order", json.dumps({"order_id": "ORD-10421"})),)
        elif step == 1:
            calls = (
                ToolCall("c2", "add_order_note", json.dumps({"order_id": "ORD-10421", "note": "Checked."})),
            )
        else:
            cite = request.turns[0].results[0].citation
            text = f"Order ORD-10421 is delivered and its total is 39.9 [{cite}]."
        return Generation(text=text, model=self.name, provider=self.provider_name, tool_calls=calls)


class Refunder(Planner):
    def generate(self, request: GenerationRequest) -> Generation:
        if not request.turns:
            args = {"order_id": "ORD-10422", "amount_eur": 80.0, "reason": "dented"}
            return Generation(
                text="",
                model=self.name,
                provider=self.provider_name,
                tool_calls=(ToolCall("r1", "refund_order", json.dumps(args)),),
            )
        if len(request.turns) == 1:
            args = {"order_id": "ORD-10422", "note": "Refunded 80 EUR."}
            return Generation(
                text="",
                model=self.name,
                provider=self.provider_name,
                tool_calls=(ToolCall("r2", "add_order_note", json.dumps(args)),),
            )
        cite = request.turns[0].results[0].citation
        return Generation(
            text=f"The refund of 80 EUR for ORD-10422 was issued [{cite}].",
            model=self.name,
            provider=self.provider_name,
        )


def _project(tmp: Path) -> Path:
    dest = tmp / "order-desk"
    shutil.copytree(
        REPO / "examples" / "order-desk", dest, ignore=shutil.ignore_patterns(".charter", "__pycache__")
    )
    rt = Runtime.open(dest / "charter.yaml")
    try:
        sync_sources(rt)
        PromptRegistry(rt.charter, rt.store, audit=lambda **e: rt.audit.append(**e)).approve(
            "system", "v1", principal=rt.charter.principal("ines")
        )
    finally:
        rt.close()
    return dest / "charter.yaml"


def _stats(ms: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(ms, 0.5), 3), "p95_ms": round(pct(ms, 0.95), 3), "n": len(ms)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        charter = _project(Path(tmp))
        rt = Runtime.open(charter)
        try:
            rt.services.gateway = build_gateway(rt, primary=Planner())
            noor, ines = rt.charter.principal("noor"), rt.charter.principal("ines")
            run_task(
                rt, noor, TASK, submit_for_review=False
            )  # warm: embedder, policies, masker, tools module
            registry = tool_registry(rt)  # the example's functions, called directly for the bare row
            lookup, note = (
                registry.get("lookup_order").definition.fn,
                registry.get("add_order_note").definition.fn,
            )
            model = Planner()
            bare: list[float] = []
            governed: list[float] = []
            for i in range(args.tasks):
                t0 = time.perf_counter()
                req = GenerationRequest(question=TASK)
                model.generate(req)
                ctx = ToolContext(
                    idempotency_key=f"b{i}",
                    principal_id="noor",
                    tool="lookup_order",
                    base_dir=charter.parent,
                    runtime=rt,
                )
                lookup(order_id="ORD-10421", ctx=ctx)
                model.generate(req)
                note(order_id="ORD-10421", note="Checked.", ctx=ctx)
                model.generate(req)
                bare.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                result = run_task(rt, noor, TASK, submit_for_review=False)
                governed.append((time.perf_counter() - t0) * 1000)
                assert result.run_status == "completed", result
            resumes: list[float] = []
            for _ in range(max(5, args.tasks // 5)):
                rt.services.gateway = build_gateway(rt, primary=Refunder())
                paused = run_task(rt, noor, "Refund 80 EUR of ORD-10422, dented.", submit_for_review=False)
                assert paused.run_status == "waiting", paused
                (approval,) = paused.escalation["approvals"]  # type: ignore[index]
                decide_approval(rt, approval, ines, "approve")
                t0 = time.perf_counter()
                done = resume_run(rt, paused.run_id, submit_for_review=False)  # type: ignore[arg-type]
                resumes.append((time.perf_counter() - t0) * 1000)
                assert done is not None and done.run_status == "completed", done
        finally:
            rt.close()
    b, g = _stats(bare), _stats(governed)
    out = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_version()}",
        "load_before": [round(x, 2) for x in load_before],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "bare": b,
        "governed": g,
        "per_step_added_ms": {
            "p50": round((g["p50_ms"] - b["p50_ms"]) / 3, 3),
            "p95": round((g["p95_ms"] - b["p95_ms"]) / 3, 3),
        },
        "resume": _stats(resumes),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{out['date']} · {out['machine']} · load {out['load_before']} → {out['load_after']}")
    print("| path | p50 (ms) | p95 (ms) | n |\n|---|---|---|---|")
    for name in ("bare", "governed", "resume"):
        s = out[name]
        print(f"| {name} | {s['p50_ms']} | {s['p95_ms']} | {s['n']} |")  # type: ignore[index]
    print(
        f"per step added: p50 {out['per_step_added_ms']['p50']} ms, p95 {out['per_step_added_ms']['p95']} ms"
    )  # type: ignore[index]


if __name__ == "__main__":
    main()
