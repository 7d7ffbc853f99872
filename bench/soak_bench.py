"""Soak: the server at a steady request rate for a long time; zero errors and flat memory.

    .venv/bin/python bench/soak_bench.py [--minutes 10] [--rate 4] [--workers 2] [--backend postgres|sqlite]
        [--sample-seconds 10] [--json out.json]

Starts ``charter serve --workers N`` on a fresh copy of the billing example (synced, prompt approved) on
PostgreSQL (a ``pgserver`` started for the run) or SQLite, then sends requests open-loop at ``--rate`` per
second (a request is due every 1/rate s whatever the previous ones do, so a slow server builds a queue
instead of being given a break) from a pool of client threads. The mix, in turn: ``POST /api/ask``
(the whole governed pipeline), ``POST /api/search``, ``POST /api/tools/lookup_invoice/calls`` (a tool
execution with its audit entry) and ``GET /api/me``, as four users.

Every ``--sample-seconds`` the resident set size (RSS) of the server's processes (uvicorn supervisor and
workers) is read with psutil. Reported: requests, errors (any non-2xx or transport error; the server's rate
limit is disabled), latency percentiles per endpoint, RSS samples, and the least-squares slope of the
workers' total RSS in MB per minute over the samples after the first minute (warm-up: lazy imports,
caches filling). Memory is called flat when that slope would add less than 5% to the mean over an hour.
"""

from __future__ import annotations

import argparse
import itertools
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
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "bench"))

from _common import QUESTIONS, free_port, pct  # type: ignore[import-not-found]  # noqa: E402

USERS = ("ana", "ben", "lena", "farid")
SOAK_QUESTIONS = QUESTIONS[:5]  # the soak's mix: the first five billing questions


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) points, in MB per minute."""
    if len(points) < 2:
        return float("nan")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx * 60.0


def first_paid_invoice() -> str:
    data = json.loads((REPO / "examples/billing-support/data/invoices.json").read_text())["invoices"]
    return str(next(i["id"] for i in data if i["status"] == "paid"))


def prepare(tmp: Path, database_url: str | None) -> tuple[Path, dict[str, str]]:
    """A synced copy of the billing example with the prompt approved; a token per user."""
    from charter.identity import create_token
    from charter.models import PromptRegistry
    from charter.runtime import Runtime
    from charter.sources import sync_sources

    project = tmp / "billing"
    shutil.copytree(REPO / "examples" / "billing-support", project, ignore=shutil.ignore_patterns(".charter"))
    rt = Runtime.open(project / "charter.yaml", database_url=database_url)
    try:
        print("syncing the billing example…", flush=True)
        sync_sources(rt)
        PromptRegistry(rt.charter, rt.store, audit=lambda **e: rt.audit.append(**e)).approve(
            "draft_reply", rt.spec.prompt("draft_reply").active, principal=rt.charter.principal("lena")
        )
        tokens = {
            u: create_token(rt, u, expires_in=timedelta(days=1), label="soak", created_by="bench").token
            for u in USERS
        }
    finally:
        rt.close()
    return project / "charter.yaml", tokens


def start_server(
    charter: Path, workers: int, database_url: str | None
) -> tuple[subprocess.Popen[bytes], str]:
    import httpx

    port = free_port()
    env = {
        **os.environ,
        "CHARTER_SERVER_RATE_LIMIT_PER_MINUTE": "0",
        "CHARTER_SERVER_DRIFT_SECONDS": "0",
    }
    if database_url:
        env["CHARTER_DATABASE_URL"] = database_url
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "charter"),
            *("serve", "-c", str(charter), "--port", str(port)),
            *("--workers", str(workers), "--log-level", "warning"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if (
                httpx.get(base + "/api/ready", timeout=2).status_code == 200
                and len(worker_pids(proc)) >= workers
            ):
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not become ready")


def worker_pids(proc: subprocess.Popen[bytes]) -> list[int]:
    import psutil

    out = []
    for p in psutil.Process(proc.pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(p.cmdline()):
                out.append(p.pid)
        except psutil.NoSuchProcess:
            continue
    return out


def rss_mb(proc: subprocess.Popen[bytes]) -> dict[str, float]:
    import psutil

    root = psutil.Process(proc.pid)
    workers = 0.0
    for pid in worker_pids(proc):
        try:
            workers += psutil.Process(pid).memory_info().rss / 2**20
        except psutil.NoSuchProcess:
            continue
    return {"supervisor_mb": root.memory_info().rss / 2**20, "workers_mb": workers}


def stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def soak(
    base: str, tokens: dict[str, str], proc: subprocess.Popen[bytes], args: argparse.Namespace
) -> dict[str, Any]:
    import httpx

    invoice = first_paid_invoice()
    clients = threading.local()
    results: list[tuple[str, int, float]] = []
    errors: list[str] = []
    lock = threading.Lock()

    def request(i: int) -> None:
        if not hasattr(clients, "c"):
            clients.c = httpx.Client(base_url=base, timeout=120)
        user = USERS[i % len(USERS)]
        headers = {"Authorization": f"Bearer {tokens[user]}"}
        kind = ("ask", "search", "tool", "me")[i % 4]
        t0 = time.perf_counter()
        try:
            if kind == "ask":
                r = clients.c.post(
                    "/api/ask", json={"question": SOAK_QUESTIONS[i % len(SOAK_QUESTIONS)]}, headers=headers
                )
            elif kind == "search":
                r = clients.c.post(
                    "/api/search", json={"query": SOAK_QUESTIONS[i % len(SOAK_QUESTIONS)]}, headers=headers
                )
            elif kind == "tool":
                user = ("ana", "ben")[(i // 4) % 2]  # each at 30 calls/min: below the tool's own limit
                r = clients.c.post(
                    "/api/tools/lookup_invoice/calls",
                    json={"args": {"invoice_id": invoice}},
                    headers={"Authorization": f"Bearer {tokens[user]}"},
                )
            else:
                r = clients.c.get("/api/me", headers=headers)
            status, detail = r.status_code, r.text[:200]
        except httpx.HTTPError as exc:
            status, detail = -1, repr(exc)
        ms = (time.perf_counter() - t0) * 1000
        with lock:
            results.append((kind, status, ms))
            if not 200 <= status < 300:
                errors.append(f"{kind} {status} {detail}")

    samples: list[dict[str, float]] = []
    duration = args.minutes * 60.0
    t_start = time.monotonic()
    stop_sampling = threading.Event()

    def sampler() -> None:
        while True:
            samples.append({"t": round(time.monotonic() - t_start, 1), **rss_mb(proc)})
            if stop_sampling.wait(args.sample_seconds):
                return

    sampling = threading.Thread(target=sampler, daemon=True)
    sampling.start()
    late = 0
    with ThreadPoolExecutor(max_workers=args.clients) as pool:
        for i in itertools.count():
            due = t_start + i / args.rate
            if due - t_start >= duration:
                break
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            elif wait < -1.0:
                late += 1
            pool.submit(request, i)
    stop_sampling.set()
    sampling.join()
    samples.append({"t": round(time.monotonic() - t_start, 1), **rss_mb(proc)})
    elapsed = time.monotonic() - t_start

    per_kind: dict[str, Any] = {}
    for kind in ("ask", "search", "tool", "me"):
        ms = [m for k, _, m in results if k == kind]
        per_kind[kind] = {"n": len(ms), "p50_ms": round(pct(ms, 0.5), 1), "p95_ms": round(pct(ms, 0.95), 1)}
    steady = [(s["t"], s["workers_mb"]) for s in samples if s["t"] >= 60.0] or [
        (s["t"], s["workers_mb"]) for s in samples
    ]
    slope = slope_per_minute(steady)
    mean = statistics.fmean(mb for _, mb in steady)
    return {
        "requests": len(results),
        "errors": len(errors),
        "error_examples": errors[:5],
        "achieved_rate": round(len(results) / elapsed, 2),
        "late_submissions": late,
        "latency": per_kind,
        "rss_samples": [{k: round(v, 1) for k, v in s.items()} for s in samples],
        "workers_rss_mean_mb": round(mean, 1),
        "workers_rss_slope_mb_per_min": round(slope, 3),
        "flat": bool(abs(slope) * 60 < 0.05 * mean),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=4.0, help="requests per second (open loop)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--clients", type=int, default=16, help="client threads (bounds requests in flight)")
    ap.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    ap.add_argument("--sample-seconds", type=float, default=10.0)
    ap.add_argument("--json", type=Path, help="also write the result here")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="charter-soak-"))
    pg: Any = None
    proc = None
    try:
        url = None
        if args.backend == "postgres":
            import pgserver

            pg = pgserver.get_server(tmp / "pg", cleanup_mode="delete")  # type: ignore[attr-defined]
            url = pg.get_uri().replace("postgresql://", "postgresql+psycopg://", 1)
        charter, tokens = prepare(tmp, url)
        proc, base = start_server(charter, args.workers, url)
        print(f"soaking {base} for {args.minutes} min at {args.rate} req/s…", flush=True)
        out = soak(base, tokens, proc, args)
    finally:
        if proc is not None:
            stop(proc)
        if pg is not None:
            pg.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    out.update(
        {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
            "load_average": [round(x, 1) for x in os.getloadavg()],
            "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        }
    )
    text = json.dumps(out, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
