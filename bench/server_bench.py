"""Server throughput and latency, and the gateway overhead next to LiteLLM's proxy.

    .venv/bin/python bench/server_bench.py [--chunks 100000] [--requests 300] [--concurrency 4]
        [--seconds 90] [--workers 1 2] [--overhead-requests 300] [--litellm /path/to/venv/bin/litellm]
        [--skip-throughput] [--busy] [--json out.json]

    # the gateway comparison alone (issue #21), quiet and with one core kept busy:
    nice -n 10 .venv/bin/python bench/server_bench.py --skip-throughput \
        --litellm /tmp/litellm-venv/bin/litellm --overhead-requests 500 [--busy] --json run.json

Everything runs on loopback; the load comes from this process, the servers are separate processes.
The report starts and ends with ``os.getloadavg()``; ``--busy`` keeps one core busy with a separate
spinning process (``_common.spinners``) for the whole measurement.

1. **/v1/chat/completions on the billing workflow** (extractive model, index padded to ``--chunks`` with
   public filler as in ``bench/ask_bench.py``), served by ``charter serve --workers N`` for each N: a
   bounded number of requests (``--requests``, at most ``--seconds``) from ``--concurrency`` client threads;
   requests per second and p50/p95/p99 latency. ``--skip-throughput`` leaves this part out.
2. **Gateway overhead**: ``answer`` workflows (``workflow.kind: answer``, the internal-knowledge example:
   the output goes back to the asker) whose ``openai`` provider points at a minimal local upstream that
   answers at once (as LiteLLM's published benchmark does). The same client calls
   (a) the upstream directly,
   (b) Charter's ``/v1/chat/completions`` with **retrieval on**: one small synced source that the upstream's
   canned answer cites and is grounded in, so the governed answer is accepted (status ``answered``) and the
   client receives the upstream's answer (plus the ``Sources:`` list Charter appends),
   (c) Charter with **retrieval off**: the same workflow without sources and with ``review.grounding:
   optional`` (a governed model gateway: the model's own, uncited sentences may stand in an answer; every
   other check — Cedar, budget, rate limit, canaries, PII, scope, masking, the trace — still runs). The
   client receives the upstream's answer with its ``[S1]`` removed (a citation to nothing retrieved for the
   request is always removed and counted), which is what this row checks each response against,
   (b') the retrieval-on workflow with ``retrieval.mode: bm25``: the same governed, cited answer, ranked by
   BM25 alone, so the question is not embedded (the rest of the path is (b)'s),
   (d) LiteLLM's proxy (``litellm[proxy]``, in its own virtualenv; pass ``--litellm``; master key, no
   database) in front of the same upstream.
   Token authentication, Cedar, budget reservation, rate limiting (the production default,
   ``CHARTER_SERVER_RATE_LIMIT_PER_MINUTE`` = 600 per principal, which the run stays under), masking,
   trace recording and audit are all on. Every response is checked: ``mismatches`` counts responses whose
   assistant content is not the upstream's (Charter's ``Sources:`` list removed); a row with mismatches
   does not measure the path it names. Every question is distinct (a numbered variant of four leave
   questions), so the retrieval-on path embeds each one as production does (the index caches query vectors
   by text). Overhead = path − direct, at p50 and p95; sequential requests, the paths interleaved in blocks
   so that a change of background load hits every path alike. After the run, each Charter row reports
   its requests' pipeline stages from their traces (p50 / p95), the rest being HTTP, authentication, the
   rate limiter and the trace write.
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
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from _common import free_port, pct, spinners  # type: ignore[import-not-found]  # noqa: E402

PY = sys.executable
QUESTIONS = [  # the billing workflow's (throughput)
    "How long does a refund take to show up on my card?",
    "Can I get a refund on my annual plan?",
    "What happens if my card payment fails?",
    "How do I change my billing currency?",
    "Where can I download my invoices?",
    "Can I pay by bank transfer?",
]
# The gateway comparison's questions (an employee asking the internal-knowledge workflow) and the one source
# document the retrieval-on charter syncs: the upstream's canned answer repeats its first sentence and cites
# it as [S1] (the only chunk, so always S1), so the answer is grounded (lexical support 1.0) and accepted.
GATEWAY_QUESTIONS = [
    "How many days of annual leave do I get?",
    "How much paid leave does a full-time employee get per year?",
    "How many vacation days do full-time staff have?",
    "What is the annual leave allowance?",
]
UPSTREAM_ANSWER = "Every full-time employee gets 27 days of paid annual leave per calendar year [S1]."
# what the retrieval-off path returns: nothing was retrieved, so the citation goes (and is counted)
UNCITED_ANSWER = "Every full-time employee gets 27 days of paid annual leave per calendar year."
LEAVE_DOC = """---
title: Annual leave
updated_at: 2026-09-01T09:00:00Z
---
# Annual leave

Every full-time employee gets 27 days of paid annual leave per calendar year, plus public holidays.
"""
UPSTREAM_BODY = {
    "id": "chatcmpl-upstream",
    "object": "chat.completion",
    "created": 0,
    "model": "upstream",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": UPSTREAM_ANSWER},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60},
}
#: The server's default per-principal limit (``ServerSettings.rate_limit_per_minute``, docs/server.md).
DEFAULT_RATE_LIMIT = 600


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


def gateway_project(
    tmp: Path, upstream: str, *, retrieval: bool, mode: str = "hybrid", question_precision: str = "float32"
) -> tuple[Path, str]:
    """The internal-knowledge example (``workflow.kind: answer``) with its ``openai`` provider at the
    upstream. ``retrieval``: one synced source holding :data:`LEAVE_DOC` (the handbook's settings, one
    document, one chunk); otherwise no sources and ``review.grounding: optional``. Returns the charter and a
    token for an employee."""
    import yaml

    from charter.identity import create_token
    from charter.models import PromptRegistry
    from charter.runtime import Runtime
    from charter.sources import sync_sources

    project = tmp / (f"gateway-retrieval-on-{mode}" if retrieval else "gateway-retrieval-off")
    shutil.copytree(
        REPO / "examples" / "internal-knowledge", project, ignore=shutil.ignore_patterns(".charter")
    )
    path = project / "charter.yaml"
    doc = yaml.safe_load(path.read_text())
    if doc["workflow"]["kind"] != "answer":
        raise RuntimeError("the gateway comparison needs an answer workflow (the output goes to the asker)")
    if retrieval:
        (project / "docs" / "bench").mkdir()
        (project / "docs" / "bench" / "annual-leave.md").write_text(LEAVE_DOC)
        handbook = next(s for s in doc["sources"] if s["id"] == "handbook")
        doc["sources"] = [{**handbook, "location": "docs/bench"}]
        doc.setdefault("retrieval", {})["mode"] = mode
        doc["retrieval"]["question_precision"] = question_precision
    else:  # a governed model gateway: no sources, the model's own words allowed (review.grounding)
        doc["sources"] = []
        doc["review"]["grounding"] = "optional"
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
    if retrieval:
        sync_sources(rt)
    prompt = rt.spec.workflow.prompts.system or "answer"
    PromptRegistry(rt.charter, rt.store, audit=lambda **e: rt.audit.append(**e)).approve(
        prompt, rt.spec.prompt(prompt).active, principal=rt.charter.principal("priya")
    )
    token = create_token(rt, "eli", label="bench").token  # an employee (group staff)
    rt.close()
    return path, token


SERVER_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def rate_limit_for(requests: int) -> int:
    """The production default (:data:`DEFAULT_RATE_LIMIT` per principal per minute) when the run sends
    fewer requests than that to one server, else just enough for the run (the limiter still runs on every
    request; the report says which)."""
    return max(DEFAULT_RATE_LIMIT, requests)


def serve(charter: Path, workers: int, rate_limit: int) -> tuple[subprocess.Popen[bytes], str]:
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
        env={**SERVER_ENV, "CHARTER_SERVER_RATE_LIMIT_PER_MINUTE": str(rate_limit)},
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(base + "/api/ready")
    return proc, base


# ------------------------------------------------------------------------------------------------ gateway
@dataclass
class Target:
    """One path of the gateway comparison and what its responses were."""

    name: str
    url: str
    key: str
    model: str
    charter: bool  # Charter appends a "Sources:" list to the answer and a ``charter`` object
    expected: str = UPSTREAM_ANSWER  # the assistant content every response must carry
    lat: list[float] = field(default_factory=list)
    errors: int = 0
    mismatches: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    sample: str = ""  # the first response content that was not the upstream's
    sent: int = 0  # requests sent so far (numbers the questions)

    def summary(self) -> dict[str, Any]:
        if not self.lat:
            raise RuntimeError(f"no successful request to {self.name} ({self.errors} errors)")
        return {
            "requests": len(self.lat),
            "errors": self.errors,
            "mismatches": self.mismatches,
            "valid": self.mismatches == 0 and self.errors == 0,
            "statuses": dict(self.statuses),
            "mismatch_sample": self.sample[:200],
            "p50": pct(self.lat, 0.5),
            "p95": pct(self.lat, 0.95),
            "p99": pct(self.lat, 0.99),
            "mean": statistics.fmean(self.lat),
        }


def gateway_question(i: int) -> str:
    """The ``i``-th question: every one distinct (the index caches query vectors by text, and production
    questions rarely repeat, so a repeated question would leave the query embedding out of the path)."""
    return f"{GATEWAY_QUESTIONS[i % len(GATEWAY_QUESTIONS)]} (request {i})"


def answer_content(doc: dict[str, Any], charter: bool) -> str:
    """The assistant content a client reads, without the ``Sources:`` list Charter appends to it."""
    content = str(doc["choices"][0]["message"]["content"])
    return content.split("\n\nSources:\n", 1)[0] if charter else content


def run_block(client: Any, t: Target, n: int, *, record: bool = True) -> None:
    """``n`` sequential chat completions to ``t`` (latency in ms); each response checked against the
    upstream's answer. ``record``: keep the latencies (False for the warm-up)."""
    for _ in range(n):
        body = {"model": t.model, "messages": [{"role": "user", "content": gateway_question(t.sent)}]}
        t.sent += 1
        t0 = time.perf_counter()
        r = client.post(t.url, json=body, headers={"Authorization": f"Bearer {t.key}"})
        dt = (time.perf_counter() - t0) * 1000
        if not record:
            continue
        if r.status_code != 200:
            t.errors += 1
            t.sample = t.sample or f"HTTP {r.status_code}: {r.text[:150]}"
            continue
        t.lat.append(dt)
        doc = r.json()
        content = answer_content(doc, t.charter)
        if content != t.expected:
            t.mismatches += 1
            t.sample = t.sample or content
        if t.charter:
            t.statuses[str(doc.get("charter", {}).get("status"))] += 1


def interleaved(targets: list[Target], n: int, block: int = 50, warm_up: int = 50) -> None:
    """Warm every path up, then ``n`` requests each in blocks of ``block``, the paths taking turns (the
    order rotating every round) so that a change of background load falls on all of them alike."""
    import httpx

    clients = {t.name: httpx.Client(timeout=60) for t in targets}
    try:
        for t in targets:
            run_block(clients[t.name], t, warm_up, record=False)
        done, turn = 0, 0
        while done < n:
            size = min(block, n - done)
            for t in targets[turn % len(targets) :] + targets[: turn % len(targets)]:
                run_block(clients[t.name], t, size)
            done += size
            turn += 1
    finally:
        for c in clients.values():
            c.close()


def litellm_version(exe: str) -> str:
    python = Path(exe).parent / "python"
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "unknown"


def start_litellm(exe: str, tmp: Path, upstream: str) -> tuple[subprocess.Popen[bytes], str, str]:
    """LiteLLM's proxy in front of the upstream: master key, no database (so no virtual keys and no
    per-key limits), offline cost map. Returns the process, its base URL and the master key."""
    import secrets

    cfg = tmp / "litellm.yaml"
    cfg.write_text(
        json.dumps(
            {
                "model_list": [
                    {
                        "model_name": "upstream",
                        "litellm_params": {"model": "openai/upstream", "api_base": upstream, "api_key": "x"},
                    }
                ],
                "litellm_settings": {"telemetry": False},
            }
        )
    )
    port = free_port()
    master = "sk-" + secrets.token_hex(32)
    proc = start(
        [exe, "--config", str(cfg), "--port", str(port), "--host", "127.0.0.1"],
        env={
            "LITELLM_LOG": "ERROR",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "DISABLE_SCHEMA_UPDATE": "True",
            "LITELLM_MASTER_KEY": master,  # LiteLLM refuses to start without a key
        },
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base + "/health/liveliness", timeout=180)
    except RuntimeError:
        stop(proc)
        raise
    return proc, base, master


def gateway_overhead(
    tmp: Path,
    n: int,
    litellm: str | None,
    procs: list[subprocess.Popen[bytes]],
    question_precision: str = "float32",
) -> dict[str, Any]:
    """The gateway comparison (part 2 of the module docstring); every server started is added to
    ``procs`` (the caller stops them)."""
    up_port = free_port()
    procs.append(start([PY, __file__, "--upstream", str(up_port)]))
    upstream = f"http://127.0.0.1:{up_port}/v1"
    wait_ready(upstream + "/models")
    warm_up = 50
    limit = rate_limit_for(n + warm_up)
    rows: dict[str, Any] = {"rate_limit_per_minute": limit, "default_rate_limit": DEFAULT_RATE_LIMIT}
    targets = [Target("direct", upstream + "/chat/completions", "x", "upstream", charter=False)]
    servers: dict[str, tuple[Path, subprocess.Popen[bytes]]] = {}
    for name, retrieval, mode in (
        ("charter_retrieval_off", False, "hybrid"),
        ("charter_retrieval_on", True, "hybrid"),
        ("charter_retrieval_on_bm25", True, "bm25"),
    ):
        charter, key = gateway_project(
            tmp, upstream, retrieval=retrieval, mode=mode, question_precision=question_precision
        )
        proc, base = serve(charter, 1, limit)
        procs.append(proc)
        servers[name] = (charter, proc)
        expected = UPSTREAM_ANSWER if retrieval else UNCITED_ANSWER
        targets.append(
            Target(name, base + "/v1/chat/completions", key, "internal-knowledge", True, expected=expected)
        )
    if litellm:
        rows["litellm_version"] = litellm_version(litellm)
        try:
            proc, base, master = start_litellm(litellm, tmp, upstream)
        except RuntimeError as exc:
            rows["litellm_error"] = str(exc)
        else:
            procs.append(proc)
            targets.append(
                Target("litellm", base + "/v1/chat/completions", master, "upstream", charter=False)
            )
    rows["query_precision"] = question_precision  # retrieval.question_precision of the charters
    rows["loadavg_before"] = os.getloadavg()
    interleaved(targets, n, warm_up=warm_up)
    rows["loadavg_after"] = os.getloadavg()
    for t in targets:
        rows[t.name] = t.summary()
    for name, (charter, proc) in servers.items():  # stopped first: their traces are then all committed
        stop(proc)
        procs.remove(proc)
        rows[name]["stages"] = stage_breakdown(charter, n)
    return rows


def stage_breakdown(charter: Path, n: int) -> dict[str, dict[str, float]]:
    """p50 and p95 (ms) of each pipeline stage over the ``n`` newest traces (the measured requests), of the
    whole ``ask`` (``pipeline``, the trace's latency) and of what ``ask`` does between its stages
    (``between stages``: the request-state read, the passages' audiences). The rest of a request's time in
    the server — HTTP, token authentication, the rate limiter, the trace write (after the trace's latency
    is taken) and the response — is not in the trace."""
    from charter.pipeline import traces_for
    from charter.runtime import Runtime

    rt = Runtime.open(charter)
    per: dict[str, list[float]] = {}
    try:
        store = traces_for(rt)
        for row in store.list(limit=n):
            doc = store.get(row["request_id"])
            spans = {s["stage"]: float(s["duration_ms"]) for s in doc.get("spans", [])}
            per.setdefault("pipeline", []).append(float(doc["latency_ms"]))
            per.setdefault("between stages", []).append(float(doc["latency_ms"]) - sum(spans.values()))
            for stage, ms in spans.items():
                per.setdefault(stage, []).append(ms)
    finally:
        rt.close()
    return {k: {"p50": pct(v, 0.5), "p95": pct(v, 0.95), "count": len(v)} for k, v in per.items()}


# ------------------------------------------------------------------------------------------------ main
def throughput(tmp: Path, args: argparse.Namespace, procs: list[subprocess.Popen[bytes]]) -> dict[int, Any]:
    charter, key = billing_project(tmp, args.chunks)
    out: dict[int, Any] = {}
    for n in args.workers:
        proc, base = serve(charter, n, rate_limit_for(args.requests + 4 * n))
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
        out[n] = r
        print(f"workers={n}: {r}", flush=True)
        stop(proc)
        procs.remove(proc)
    return out


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
    ap.add_argument("--skip-throughput", action="store_true", help="only the gateway comparison")
    ap.add_argument(
        "--question-precision",
        choices=["float32", "bfloat16", "int8"],
        default="float32",
        help="retrieval.question_precision of the gateway comparison's charters (docs/retrieval.md)",
    )
    ap.add_argument("--busy", action="store_true", help="keep one core busy (a spinning process) throughout")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "busy_cores": 1 if args.busy else 0,
        "loadavg_start": os.getloadavg(),
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp_s, spinners(out["busy_cores"]):
            tmp = Path(tmp_s)
            if not args.skip_throughput:
                out["throughput"] = throughput(tmp, args, procs)
            out["overhead"] = gateway_overhead(
                tmp, args.overhead_requests, args.litellm, procs, args.question_precision
            )
            out["loadavg_end"] = os.getloadavg()
    finally:
        for p in procs:
            stop(p)
    out["end"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    report(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


def _load(avg: Any) -> str:
    return " / ".join(f"{x:.2f}" for x in avg) if avg else "?"


PATHS = (
    ("direct", "direct to the upstream"),
    ("charter_retrieval_on", "Charter, retrieval on (hybrid, the default: the question is embedded)"),
    ("charter_retrieval_on_bm25", "Charter, retrieval on (`retrieval.mode: bm25`: no question embedding)"),
    ("charter_retrieval_off", "Charter, retrieval off (no sources, `review.grounding: optional`: answered)"),
    ("litellm", "LiteLLM proxy"),
)


def report(out: dict[str, Any]) -> None:
    busy = f", {out['busy_cores']} core busy" if out.get("busy_cores") else ", no added load"
    print(f"\n### Server — {out['date']} to {out.get('end', '?')}, {out['machine']}{busy}\n")
    print(
        f"load average (1/5/15 min) at start {_load(out['loadavg_start'])}, end {_load(out.get('loadavg_end'))}"
    )
    if "throughput" in out:
        print("\n| workers | requests | errors | req/s | p50 ms | p95 ms | p99 ms |")
        print("|---|---|---|---|---|---|---|")
        for n, r in out["throughput"].items():
            print(
                f"| {n} | {r['requests']} | {r['errors']} | {r['rps']:.1f} | {r['p50']:.1f} | {r['p95']:.1f} "
                f"| {r['p99']:.1f} |"
            )
    rows = out.get("overhead", {})
    if not rows:
        return
    print(
        f"\ngateway comparison: load average before {_load(rows['loadavg_before'])}, after "
        f"{_load(rows['loadavg_after'])}; Charter rate limit {rows['rate_limit_per_minute']}/min per principal "
        f"(default {rows['default_rate_limit']}); question precision {rows.get('query_precision', '?')}; "
        f"LiteLLM {rows.get('litellm_version', 'not run')}"
    )
    d = rows["direct"]
    print(
        "\n| path | requests | errors | not the upstream's answer | p50 ms | p95 ms | added p50 ms | added p95 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, label in PATHS:
        if name in rows:
            r = rows[name]
            flag = "" if r["valid"] else " (**invalid**: not the path it names)"
            print(
                f"| {label}{flag} | {r['requests']} | {r['errors']} | {r['mismatches']} | {r['p50']:.2f} "
                f"| {r['p95']:.2f} | {r['p50'] - d['p50']:.2f} | {r['p95'] - d['p95']:.2f} |"
            )
    for name, _ in PATHS:
        r = rows.get(name)
        if r and r["statuses"]:
            print(
                f"\n{name}: statuses {r['statuses']}"
                + (f"; e.g. {r['mismatch_sample']!r}" if r["mismatch_sample"] else "")
            )
    for name, _ in PATHS:
        stages = rows.get(name, {}).get("stages")
        if stages:
            parts = ", ".join(f"{k} {v['p50']:.2f} / {v['p95']:.2f}" for k, v in stages.items())
            print(f"\n{name}, inside the server (trace, ms p50 / p95): {parts}")
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
