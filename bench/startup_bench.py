"""Start-up costs a user pays on every process: opening a runtime and warming it up.

    .venv/bin/python bench/startup_bench.py [--opens 40] [--processes 3]

* **open** — ``Runtime.open`` on a copy of the billing example (charter YAML, users, Cedar policies compiled,
  the database opened at its schema head) plus building its authorizer: what every CLI command, server worker
  and MCP server process does first. Median and p95 over ``--opens`` opens in one process (after three
  unmeasured ones).
* **warm-up** — in a fresh interpreter each time (``--processes`` of them): importing the server,
  ``Runtime.open`` and ``charter.pipeline.warm_up`` (policies, the index and the embedding model, masker,
  gateway), wall time and CPU seconds — what a ``charter serve`` worker spends before its first request.
* **exit** — in the same processes, from the script's last statement to the process's end (the interpreter's
  shutdown), alternately as a plain script and with ``gc.freeze()`` first, as the ``charter`` command does.

Prints a Markdown table with the date, machine and load average; results go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(REPO / "bench"))
from _common import pct  # type: ignore[import-not-found]  # noqa: E402

WARM = """
import json, resource, sys, time
t0 = time.perf_counter()
import charter.server  # noqa: F401
from charter.pipeline import warm_up
from charter.runtime import Runtime
rt = Runtime.open(sys.argv[1])
took = warm_up(rt)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"wall": time.perf_counter() - t0, "cpu": usage.ru_utime + usage.ru_stime, "parts": took}))
if sys.argv[2] == "freeze":  # what the `charter` console script does last (charter.cli.main)
    import gc
    gc.freeze()
print(time.time(), flush=True)  # the parent measures from here to the process's end
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--opens", type=int, default=40)
    ap.add_argument("--processes", type=int, default=3)
    args = ap.parse_args()
    from charter.runtime import Runtime

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp) / "project"
        shutil.copytree(
            REPO / "examples" / "billing-support", project, ignore=shutil.ignore_patterns(".charter")
        )
        charter = project / "charter.yaml"
        from charter.models import PromptRegistry

        rt = Runtime.open(charter)  # the prompt approved, so that the warm-up builds the gateway too
        PromptRegistry(rt.charter, rt.store, audit=lambda **e: rt.audit.append(**e)).approve(
            "draft_reply", rt.spec.prompt("draft_reply").active, principal=rt.charter.principal("lena")
        )
        rt.close()
        for _ in range(3):
            rt = Runtime.open(charter)
            _ = rt.authorizer
            rt.close()
        opens = []
        for _ in range(args.opens):
            t0 = time.perf_counter()
            rt = Runtime.open(charter)
            _ = rt.authorizer
            rt.close()
            opens.append((time.perf_counter() - t0) * 1000)
        warm = []
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        exits: dict[str, list[float]] = {"plain": [], "freeze": []}
        for i in range(2 * args.processes):
            how = "plain" if i % 2 == 0 else "freeze"
            out = subprocess.run(
                [sys.executable, "-c", WARM, str(charter), how],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            ended = time.time()
            *_, doc, last = out.stdout.strip().splitlines()
            exits[how].append(ended - float(last))
            if how == "plain":
                warm.append(json.loads(doc))
    load_after = os.getloadavg()
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            "unknown CPU",
        )
        if Path("/proc/cpuinfo").exists()
        else "unknown CPU"
    )
    print(f"\n### Start-up — {stamp}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}")
    print(f"load average {load_before[0]:.2f} → {load_after[0]:.2f}\n")
    print("| what | result |\n|---|---|")
    print(
        f"| `Runtime.open` + authorizer, {args.opens} opens | median {pct(opens, 0.5):.1f} ms, p95 {pct(opens, 0.95):.1f} ms |"
    )
    for i, w in enumerate(warm, 1):
        parts = ", ".join(f"{k} {v:.2f}" for k, v in w["parts"].items())
        print(
            f"| fresh process #{i}: import + open + warm-up | {w['wall']:.2f} s wall, {w['cpu']:.2f} s CPU ({parts} s) |"
        )
    for how, label in (("plain", "a plain script"), ("freeze", "`gc.freeze()` first, as `charter` does")):
        times = ", ".join(f"{t:.2f}" for t in exits[how])
        print(f"| exit after warm-up, {label} | {times} s (median {pct(exits[how], 0.5):.2f} s) |")


if __name__ == "__main__":
    main()
