"""Added latency of a governed upstream MCP call vs. the same call made directly with the SDK client.

Every side calls ``git_status`` (default) of the reference ``mcp-server-git`` (PyPI) over stdio, on one
throwaway repository, one call at a time, in one run:

* **direct** — the official SDK ``Client`` connected to its own ``mcp-server-git`` process;
* **governed** — ``charter.tools.propose(rt, "ana", "git_status", args)`` on the billing example with the
  server declared under ``mcp.servers`` and ``git_status`` pinned: tool list, pinned-schema validation,
  Cedar, kill switch, rate limit, the stored action and its audit entries (two committed transactions:
  the decision before the call, the outcome after it), the pin check (a ``tools/list`` round trip when
  the last comparison is older than the server's ``pin_recheck``, default 5s, or a change was announced),
  the call, masking and the size limit;
* **hub only** — ``UpstreamHub.call_tool`` (Charter's connection, its thread hop and deadline; no policy),
  to separate transport from governance;
* **governed via executor** — the same ``propose`` handed to the event loop's default thread pool
  (``run_in_executor``), as an asyncio program calls a synchronous API: two more thread hand-offs that are
  the caller's, not Charter's (the measure of runs before 2026-12-05 06:00 UTC, kept for comparison).

``propose`` is a synchronous API (the CLI, the REST workers, the agent loop call it from their own thread),
so **governed** and **hub only** are called as such a caller calls them: directly, from the bench's thread
(the direct client's loop has nothing else to do meanwhile). Rounds interleave the sides so that machine
noise hits them alike. ``added`` is governed minus direct at the same percentile (``added_via_executor``
likewise). Target: ≤ 5 ms at p95. Usage::

    python bench/mcp_bench.py --calls 300 [--tool git_log] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))  # this tree, not an installed copy
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import pct

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "billing-support"


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, timeout=30)


def make_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "bench@example.com")
    git(path, "config", "user.name", "Bench")
    for i in range(5):
        (path / f"f{i}.txt").write_text(f"file {i}\n")
        git(path, "add", ".")
        git(path, "commit", "-q", "-m", f"commit {i}")
    return path


def make_project(tmp: Path, repo: Path, tool: str) -> Path:
    dest = tmp / "project"
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns(".charter", "__pycache__"))
    charter = dest / "charter.yaml"
    text = charter.read_text(encoding="utf-8")
    extra = f"""  - name: {tool}
    upstream: {{server: git, tool: {tool}}}
    effect: read
    roles: [agent]

mcp:
  servers:
    - id: git
      command: ["{sys.executable}", "-m", "mcp_server_git", "--repository", "{repo}"]
      owner: omar
      timeout: 10s
"""
    charter.write_text(text.replace("\nreview:\n", "\n" + extra + "\nreview:\n", 1), encoding="utf-8")
    return charter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=300, help="calls per side (after warm-up)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--tool", default="git_status", choices=["git_status", "git_log"])
    ap.add_argument("--json", type=Path, default=None)
    opts = ap.parse_args()

    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    from charter.mcp import approve_upstream, hub_for
    from charter.runtime import Runtime
    from charter.tools import propose

    tmp = Path(tempfile.mkdtemp(prefix="mcp-bench-"))
    repo = make_repo(tmp / "repo")
    charter = make_project(tmp, repo, opts.tool)
    rt = Runtime.open(charter)
    approve_upstream(rt, "git", None, "omar")
    args: dict[str, Any] = {"repo_path": str(repo)}
    if opts.tool == "git_log":
        args["max_count"] = 3
    hub = hub_for(rt)
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "mcp_server_git", "--repository", str(repo)], env={}
    )

    direct: list[float] = []
    governed: list[float] = []
    hub_only: list[float] = []
    via_executor: list[float] = []
    outputs: dict[str, str] = {}

    async def run() -> None:
        async with Client(params, cache=None) as client:
            loop = asyncio.get_running_loop()
            for i in range(opts.warmup + opts.calls):
                t0 = time.perf_counter()
                res = await client.call_tool(opts.tool, args)
                t1 = time.perf_counter()
                proposal = propose(rt, "ana", opts.tool, args)  # a synchronous caller's call
                t2 = time.perf_counter()
                hub.call_tool("git", opts.tool, args)
                t3 = time.perf_counter()
                other = await loop.run_in_executor(None, lambda: propose(rt, "ana", opts.tool, args))
                t4 = time.perf_counter()
                if not (proposal.executed and other.executed):
                    raise SystemExit(f"governed call did not execute: {proposal.to_dict()}")
                if i == 0:
                    outputs["direct"] = res.content[0].text[:200]  # type: ignore[union-attr]
                    outputs["governed"] = str(proposal.result.get("content", ""))[:200]
                if i >= opts.warmup:
                    direct.append((t1 - t0) * 1000)
                    governed.append((t2 - t1) * 1000)
                    hub_only.append((t3 - t2) * 1000)
                    via_executor.append((t4 - t3) * 1000)

    # the rate limit of the bench tool is unset; the audit log and actions grow by one call per round
    asyncio.run(run())
    rt.close()

    def stats(xs: list[float]) -> dict[str, float]:
        return {
            "p50": round(pct(xs, 0.5), 3),
            "p95": round(pct(xs, 0.95), 3),
            "mean": round(sum(xs) / len(xs), 3),
        }

    doc = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {
            "nproc": os.cpu_count(),
            "python": platform.python_version(),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "tool": opts.tool,
        "calls": opts.calls,
        "direct_ms": stats(direct),
        "hub_only_ms": stats(hub_only),
        "governed_ms": stats(governed),
        "governed_via_executor_ms": stats(via_executor),
        "added_ms": {
            "p50": round(pct(governed, 0.5) - pct(direct, 0.5), 3),
            "p95": round(pct(governed, 0.95) - pct(direct, 0.95), 3),
        },
        "added_via_executor_ms": {
            "p50": round(pct(via_executor, 0.5) - pct(direct, 0.5), 3),
            "p95": round(pct(via_executor, 0.95) - pct(direct, 0.95), 3),
        },
        "target_p95_added_ms": 5.0,
        "sample_output": outputs,
    }
    doc["meets_target"] = doc["added_ms"]["p95"] <= 5.0  # type: ignore[index]
    text = json.dumps(doc, indent=2)
    print(text)
    if opts.json:
        opts.json.write_text(text + "\n")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
