"""A bogus-token flood against the real server: does a real user's latency stay within 2x of idle?

Starts ``uvicorn`` (one worker, in a subprocess) on a copy of the billing example, issues a real token for
ana, then measures ana's ``GET /api/me`` latency (p50/p95) twice: idle, and while ``--flooders`` threads send
bogus bearer tokens as fast as they can — malformed ones, well-formed unknown ids, and wrong secrets for a
real token id (the only kind that could cost an scrypt run). Prints one JSON document.

    nice -n 10 python bench/auth_flood_bench.py --requests 200 --flooders 4
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))  # this tree, not an installed copy
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, pct

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "billing-support"


def measure(url: str, headers: dict[str, str], n: int) -> tuple[list[float], dict[int, int]]:
    import httpx

    times: list[float] = []
    codes: dict[int, int] = {}
    with httpx.Client(base_url=url, timeout=60) as c:
        for _ in range(n):
            t0 = time.perf_counter()
            r = c.get("/api/me", headers=headers)
            times.append((time.perf_counter() - t0) * 1000)
            codes[r.status_code] = codes.get(r.status_code, 0) + 1
    return times, codes


def flood(
    url: str, known_id: str, stop: threading.Event, counts: dict[int, int], lock: threading.Lock
) -> None:
    import httpx

    i = 0
    with httpx.Client(base_url=url, timeout=60) as c:
        while not stop.is_set():
            kind = i % 3
            token = (
                f"garbage-{i}"
                if kind == 0
                else f"chr_{i % 10**12:012d}_{'A' * 43}"
                if kind == 1
                else f"chr_{known_id}_{'B' * 40}{i % 1000:03d}"
            )
            r = c.get("/api/me", headers={"Authorization": f"Bearer {token}"})
            with lock:
                counts[r.status_code] = counts.get(r.status_code, 0) + 1
            i += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=200, help="real-user requests per phase")
    ap.add_argument("--flooders", type=int, default=4, help="threads sending bogus tokens")
    args = ap.parse_args()

    from charter.identity import create_token, parse_token
    from charter.runtime import Runtime

    work = Path(tempfile.mkdtemp(prefix="auth-flood-"))
    project = work / "project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns(".charter", "__pycache__"))
    rt = Runtime.open(project / "charter.yaml")
    ana = create_token(rt, "ana", label="bench").token
    ben = create_token(rt, "ben", label="bench").token
    audit_before = rt.audit.head()
    rt.close()

    port = free_port()
    env = {
        **os.environ,
        "CHARTER_FILE": str(project / "charter.yaml"),
        "CHARTER_SERVER_WARM_UP": "0",
        "CHARTER_SERVER_BACKGROUND_TELEMETRY": "0",
        "CHARTER_SERVER_RATE_LIMIT_PER_MINUTE": "0",  # measure authentication, not the per-user limit
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "charter.server:app_from_env",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/api/me", headers={"Authorization": f"Bearer {ana}"}).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit("server did not start")
            time.sleep(0.2)
        headers = {"Authorization": f"Bearer {ana}"}
        idle, idle_codes = measure(url, headers, args.requests)
        stop, lock = threading.Event(), threading.Lock()
        counts: dict[int, int] = {}
        threads = [
            threading.Thread(target=flood, args=(url, parse_token(ben)[0], stop, counts, lock), daemon=True)
            for _ in range(args.flooders)
        ]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        time.sleep(1.0)
        busy, busy_codes = measure(url, headers, args.requests)
        stop.set()
        for t in threads:
            t.join(30)
        elapsed = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(30)
    rt = Runtime.open(project / "charter.yaml")
    refused_rows = [
        e for e in rt.audit.tail(100_000, action="auth.refused") if e.seq > (audit_before or (0, ""))[0]
    ]
    rt.close()
    bogus = sum(counts.values())
    p95_idle, p95_busy = pct(idle, 0.95), pct(busy, 0.95)
    print(
        json.dumps(
            {
                "requests_per_phase": args.requests,
                "flooders": args.flooders,
                "idle_ms": {"p50": round(pct(idle, 0.5), 2), "p95": round(p95_idle, 2), "codes": idle_codes},
                "flood_ms": {"p50": round(pct(busy, 0.5), 2), "p95": round(p95_busy, 2), "codes": busy_codes},
                "p95_ratio": round(p95_busy / p95_idle, 2),
                "bogus_requests": bogus,
                "bogus_per_s": round(bogus / elapsed, 1),
                "bogus_codes": counts,
                "auth_refused_audit_rows": len(refused_rows),
                "auth_refused_counted": sum(int(e.details.get("count", 1)) for e in refused_rows),
            },
            indent=2,
        )
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
