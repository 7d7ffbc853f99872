"""Server throughput and latency, and the gateway overhead next to LiteLLM's proxy.

    .venv/bin/python bench/server_bench.py [--chunks 100000] [--requests 300] [--concurrency 4]
        [--seconds 90] [--workers 1 2] [--overhead-requests 300] [--litellm /path/to/venv/bin/litellm]

Everything runs on loopback; the load comes from this process, the servers are separate processes.

1. **/v1/chat/completions on the billing workflow** (extractive model, index padded to ``--chunks`` with
   public filler as in ``bench/ask_bench.py``), served by ``charter serve --workers N`` for each N: a
   bounded number of requests (``--requests``, at most ``--seconds``) from ``--concurrency`` client threads;
   requests per second and p50/p95/p99 latency.
2. **Gateway overhead alone**: a workflow without sources whose ``openai`` provider points at a minimal
   local upstream that answers at once (as LiteLLM's published benchmark does). The same client calls
   (a) the upstream directly, (b) Charter's ``/v1/chat/completions`` (token authentication, Cedar, budget
   reservation, masking and trace recording, audit all on), (c) LiteLLM's proxy (``litellm[proxy]``, in its
   own virtualenv; pass ``--litellm``) in front of the same upstream. Overhead = (b or c) − (a), at p50 and
   p95, sequential requests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from _common import free_port, pct  # type: ignore[import-not-found]  # noqa: E402

PY = sys.executable
QUESTIONS = [
    "How long does a refund take to show up on my card?",
    "Can I get a refund on my annual plan?",
    "What happens if my card payment fails?",
    "How do I change my billing currency?",
    "Where can I download my invoices?",
    "Can I pay by bank transfer?",
]
UPSTREAM_BODY = {
    "id": "chatcmpl-upstream",
    "object": "chat.completion",
    "created": 0,
    "model": "upstream",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Refunds take 5-10 business days [S1]."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
}


# ------------------------------------------------------------------------------------------------ upstream
def upstream_app() -> Any:
    """A minimal OpenAI-compatible upstream: every chat completion is answered at once."""
    body = json.dumps(UPSTREAM_BODY).encode()
    models = json.dumps(
        {"object": "list", "data": [{"id": "upstream", "object": "model", "created": 0, "owned_by": "bench"}]}
    ).encode()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while True:
            msg = await receive()
            if not msg.get("more_body"):
                break
        payload = models if scope["path"].endswith("/models") else body
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    return app


# ------------------------------------------------------------------------------------------------ helpers
def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"


def wait_ready(url: str, timeout: float = 240.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} did not become ready")


def start(
    cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(20)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def load(url: str, key: str, model: str, n: int, concurrency: int, seconds: float) -> dict[str, float]:
    """``n`` chat completions (at most ``seconds``) from ``concurrency`` threads; latency in ms."""
    import httpx

    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    counter = iter(range(n))
    deadline = time.monotonic() + seconds

    def worker() -> None:
        with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                body = {
                    "model": model,
                    "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                }
                t0 = time.perf_counter()
                r = client.post(url, json=body)
                dt = (time.perf_counter() - t0) * 1000
                with lock:
                    if r.status_code == 200:
                        lat.append(dt)
                    else:
                        errors[0] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if not lat:
        raise RuntimeError(f"no successful request to {url} ({errors[0]} errors)")
    return {
        "requests": len(lat),
        "errors": errors[0],
        "seconds": wall,
        "rps": len(lat) / wall,
        "p50": pct(lat, 0.5),
        "p95": pct(lat, 0.95),
        "p99": pct(lat, 0.99),
        "mean": statistics.fmean(lat),
    }


# ------------------------------------------------------------------------------------------------ projects
def billing_project(tmp: Path, chunks: int) -> tuple[Path, str]:
    from ask_bench import pad_index  # type: ignore[import-not-found]

    from charter.identity import create_token
    from charter.models import PromptRegistry
    from charter.runtime import Runtime
    from charter.sources import sync_sources

    project = tmp / "billing"
    shutil.copytree(REPO / "examples" / "billing-support", project, ignore=shutil.ignore_patterns(".charter"))
    rt = Runtime.open(project / "charter.yaml")
    print("syncing the billing example…", flush=True)
    sync_sources(rt)
    PromptRegistry(rt.charter, rt.store, audit=lambda **e: rt.audit.append(**e)).approve(
        "draft_reply", rt.spec.prompt("draft_reply").active, principal=rt.charter.principal("lena")
    )
    data = REPO.parent / "shared" / "data" / "retrieval" / "msmarco" / "corpus.jsonl"
    corpus = [json.loads(line) for line in data.read_text().split("\n") if line.strip()]
    size = pad_index(rt, chunks, corpus)
    print(f"index holds {size:,} chunks", flush=True)
    token = create_token(rt, "ana", label="bench").token
    rt.close()
    return project / "charter.yaml", token


def gateway_project(tmp: Path, upstream: str) -> tuple[Path, str]:
    import yaml

    from charter.identity import create_token
    from charter.models import PromptRegistry
    from charter.runtime import Runtime

    project = tmp / "gateway"
    shutil.copytree(REPO / "examples" / "billing-support", project, ignore=shutil.ignore_patterns(".charter"))
    path = project / "charter.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["sources"] = []
    doc["model"] = {
        "provider": "openai",
        "name": "upstream",
        "endpoint": upstream,
        "timeout": "10s",
        "retries": 0,
        "prices": {"input_per_1k": 0.0001, "output_per_1k": 0.0002},
        "max_output_tokens": 100,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    rt = Runtime.open(path)
    PromptRegistry(rt.charter, rt.store, audit=lambda **e: rt.audit.append(**e)).approve(
        "draft_reply", rt.spec.prompt("draft_reply").active, principal=rt.charter.principal("lena")
    )
    token = create_token(rt, "ana", label="bench").token
    rt.close()
    return path, token


SERVER_ENV = {"CHARTER_SERVER_RATE_LIMIT_PER_MINUTE": "0", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def serve(charter: Path, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = start(
        [
            str(Path(PY).parent / "charter"),
            "serve",
            "--charter",
            str(charter),
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        env=SERVER_ENV,
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + "/api/ready")
    return proc, base


# ------------------------------------------------------------------------------------------------ main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunks", type=int, default=100_000)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--overhead-requests", type=int, default=300)
    ap.add_argument(
        "--litellm",
        type=str,
        default=shutil.which("litellm"),
        help="the litellm executable (from a virtualenv with litellm[proxy])",
    )
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out: dict[str, Any] = {"date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine()}
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp_s:
            tmp = Path(tmp_s)
            if not args.skip_throughput:
                charter, key = billing_project(tmp, args.chunks)
                out["throughput"] = {}
                for n in args.workers:
                    proc, base = serve(charter, n)
                    procs.append(proc)
                    load(base + "/v1/chat/completions", key, "billing-support", 4 * n, n, 120)  # warm up
                    r = load(
                        base + "/v1/chat/completions",
                        key,
                        "billing-support",
                        args.requests,
                        args.concurrency,
                        args.seconds,
                    )
                    out["throughput"][n] = r
                    print(f"workers={n}: {r}", flush=True)
                    stop(proc)
                    procs.remove(proc)
            # gateway overhead
            up_port = free_port()
            up = start([PY, __file__, "--upstream", str(up_port)])
            procs.append(up)
            upstream = f"http://127.0.0.1:{up_port}/v1"
            wait_ready(upstream + "/models")
            n = args.overhead_requests
            rows: dict[str, Any] = {}
            load(upstream + "/chat/completions", "x", "upstream", 50, 1, 60)
            rows["direct"] = load(upstream + "/chat/completions", "x", "upstream", n, 1, 120)
            charter, key = gateway_project(tmp, upstream)
            proc, base = serve(charter, 1)
            procs.append(proc)
            load(base + "/v1/chat/completions", key, "billing-support", 50, 1, 120)
            rows["charter"] = load(base + "/v1/chat/completions", key, "billing-support", n, 1, 180)
            stop(proc)
            procs.remove(proc)
            if args.litellm:
                cfg = tmp / "litellm.yaml"
                cfg.write_text(
                    json.dumps(
                        {
                            "model_list": [
                                {
                                    "model_name": "upstream",
                                    "litellm_params": {
                                        "model": "openai/upstream",
                                        "api_base": upstream,
                                        "api_key": "x",
                                    },
                                }
                            ],
                            "litellm_settings": {"telemetry": False},
                        }
                    )
                )
                port = free_port()
                import secrets

                master = "sk-" + secrets.token_hex(32)
                lp = start(
                    [args.litellm, "--config", str(cfg), "--port", str(port), "--host", "127.0.0.1"],
                    env={
                        "LITELLM_LOG": "ERROR",
                        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                        "DISABLE_SCHEMA_UPDATE": "True",
                        "LITELLM_MASTER_KEY": master,  # LiteLLM refuses to start without a key
                    },
                )
                procs.append(lp)
                try:
                    wait_ready(f"http://127.0.0.1:{port}/health/liveliness", timeout=180)
                    load(f"http://127.0.0.1:{port}/v1/chat/completions", master, "upstream", 50, 1, 120)
                    rows["litellm"] = load(
                        f"http://127.0.0.1:{port}/v1/chat/completions", master, "upstream", n, 1, 180
                    )
                except RuntimeError as exc:
                    rows["litellm_error"] = str(exc)
                stop(lp)
                procs.remove(lp)
            out["overhead"] = rows
    finally:
        for p in procs:
            stop(p)
    report(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


def report(out: dict[str, Any]) -> None:
    print(f"\n### Server — {out['date']}, {out['machine']}\n")
    if "throughput" in out:
        print("| workers | requests | errors | req/s | p50 ms | p95 ms | p99 ms |")
        print("|---|---|---|---|---|---|---|")
        for n, r in out["throughput"].items():
            print(
                f"| {n} | {r['requests']} | {r['errors']} | {r['rps']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} "
                f"| {r['p99']:.1f} |"
            )
    rows = out.get("overhead", {})
    if rows:
        d = rows["direct"]
        print("\n| path | p50 ms | p95 ms | added p50 ms | added p95 ms |")
        print("|---|---|---|---|---|")
        for name in ("direct", "charter", "litellm"):
            if name in rows:
                r = rows[name]
                print(
                    f"| {name} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p50'] - d['p50']:.2f} "
                    f"| {r['p95'] - d['p95']:.2f} |"
                )
        if "litellm_error" in rows:
            print(f"\nLiteLLM: {rows['litellm_error']}")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--upstream":
        import uvicorn

        uvicorn.run(
            upstream_app(), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning", access_log=False
        )
    else:
        main()
