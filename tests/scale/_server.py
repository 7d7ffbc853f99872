"""``charter serve --workers N`` as a real subprocess on a free port, for the multi-worker and fault tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil

from tests.conftest import REPO

# httpx builds a TLS context and loads the CA bundle for every client it makes (``httpx.get`` makes one per
# call): ~20 ms of CPU each, and the readiness polls, wait loops and racing threads of these tests make
# hundreds. The test servers speak plain http; every client here shares one context built once with the same
# settings (``httpx.create_ssl_context()`` is what httpx builds by default), so behaviour is unchanged.
TLS = httpx.create_ssl_context()


def http_client(**kwargs: Any) -> httpx.Client:
    """``httpx.Client(**kwargs)`` with the shared TLS context."""
    return httpx.Client(verify=TLS, **kwargs)


def http_get(url: str, **kwargs: Any) -> httpx.Response:
    """``httpx.get`` (a new connection per call) with the shared TLS context."""
    return httpx.get(url, verify=TLS, **kwargs)


def http_post(url: str, **kwargs: Any) -> httpx.Response:
    """``httpx.post`` (a new connection per call) with the shared TLS context."""
    return httpx.post(url, verify=TLS, **kwargs)


# A server whose requests never embed a text (tool calls, approvals, ``/api/me``: no question is asked) gains
# nothing from the start-up warm-up, which loads MiniLM (torch and transformers: ~4 s of CPU in every worker,
# most of a worker's start). A request that did need the embedder would load it on first use, so what such a
# test proves does not depend on it. Tests that ask questions keep the warm-up, as production runs.
NO_WARM_UP = {"CHARTER_SERVER_WARM_UP": "0"}

SLOW_TOOLS = '''
import os, time
from charter.tools import ToolContext, tool

@tool
def slow_write(label: str, ctx: ToolContext) -> dict:
    """Logs its start (with the worker's pid), sleeps SLOW_TOOL_SECONDS, logs its end."""
    with (ctx.base_dir / "started.log").open("a") as fh:
        fh.write(f"{ctx.idempotency_key} {os.getpid()}\\n")
    time.sleep(float(os.environ.get("SLOW_TOOL_SECONDS", "0")))
    with (ctx.base_dir / "finished.log").open("a") as fh:
        fh.write(f"{ctx.idempotency_key} {os.getpid()}\\n")
    return {"label": label}
'''


def add_slow_tool(project: Path) -> None:
    """Add ``slow_write`` (write effect, lead approval) to the project's charter."""
    import yaml

    (project.parent / "slow_tools.py").write_text(SLOW_TOOLS)
    data = yaml.safe_load(project.read_text())
    data["tools"].append(
        {
            "name": "slow_write",
            "callable": "slow_tools:slow_write",
            "effect": "write",
            "roles": ["agent"],
            "approval": {"rule": "always", "approver_role": "lead"},
        }
    )
    project.write_text(yaml.safe_dump(data, sort_keys=False))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def issue_tokens(project: Path, database_url: str, users: tuple[str, ...]) -> dict[str, str]:
    from charter.identity import create_token
    from charter.runtime import Runtime

    rt = Runtime.open(project, database_url=database_url)
    try:
        return {
            u: create_token(
                rt, u, expires_in=timedelta(hours=2), label="scale-test", created_by="tests"
            ).token
            for u in users
        }
    finally:
        rt.close()


def conversations(project: Path, database_url: str, users: tuple[str, ...], n: int) -> dict[str, list[str]]:
    """``n`` conversations per user about the example invoice's customer: their request ids, per user.

    ``lookup_invoice`` sees only the conversation's customer; over the API a call names its conversation by
    ``request_id`` (the draft its caller submitted records the customer). The same request proposing the same
    call again gets the same action back, so every call of a load test needs a conversation of its own."""
    from charter.review import submit_draft
    from charter.runtime import Runtime
    from tests.tools._helpers import CUSTOMER_ID

    rt = Runtime.open(project, database_url=database_url)
    try:
        out: dict[str, list[str]] = {}
        for user in users:
            out[user] = []
            for i in range(n):
                request_id = f"conv-{user}-{i}"
                submit_draft(
                    rt,
                    request_id=request_id,
                    principal=user,
                    question="About my invoice",
                    draft="Looking into it.",
                    citations=[],
                    subject_id=CUSTOMER_ID,
                )
                out[user].append(request_id)
        return out
    finally:
        rt.close()


class Server:
    """A running ``charter serve``: its base URL, supervisor pid and worker pids."""

    def __init__(self, proc: subprocess.Popen[bytes], port: int, workers: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.n_workers = workers
        self.log = log
        self.base = f"http://127.0.0.1:{port}"

    def workers(self) -> list[psutil.Process]:
        """The worker processes (children of uvicorn's supervisor that run the app). With one worker uvicorn
        starts no child: the app runs in the ``charter serve`` process itself."""
        root = psutil.Process(self.proc.pid)
        if self.n_workers == 1:
            return [root]
        workers = []
        for p in root.children(recursive=True):
            try:
                if "spawn_main" in " ".join(p.cmdline()):
                    workers.append(p)
            except psutil.NoSuchProcess:
                continue
        return workers

    def wait_ready(self, timeout: float = 180.0) -> None:
        """Until every worker is up: the supervisor sees N workers and /api/ready answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"charter serve exited {self.proc.returncode}:\n{self.output()}")
            try:
                ok = http_get(f"{self.base}/api/ready", timeout=5).status_code == 200
            except httpx.HTTPError:
                ok = False
            started = self.output().count("Application startup complete")
            if ok and len(self.workers()) >= self.n_workers and started >= self.n_workers:
                return
            time.sleep(0.3)
        raise AssertionError(f"charter serve not ready after {timeout}s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                for p in psutil.Process(self.proc.pid).children(recursive=True):
                    p.kill()
                self.proc.kill()
                self.proc.wait(timeout=30)


@contextmanager
def serve(
    project: Path,
    database_url: str,
    *,
    workers: int = 2,
    env: dict[str, str] | None = None,
    ready_timeout: float = 180.0,
) -> Iterator[Server]:
    """Start ``charter serve --workers N`` on ``database_url`` and wait until every worker is ready."""
    port = free_port()
    log = project.parent / f"serve-{port}.log"
    full_env: dict[str, Any] = {
        **os.environ,
        "CHARTER_DATABASE_URL": database_url,
        "PYTHONPATH": str(REPO / "src"),
        "HF_HUB_OFFLINE": "1",
        "CHARTER_SERVER_DRIFT_SECONDS": "0",
        "CHARTER_SERVER_REVIEW_TICK_SECONDS": "0",
        **(env or {}),
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "charter"),
                "serve",
                "-c",
                str(project),
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--log-level",
                "info",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=project.parent,
        )
    server = Server(proc, port, workers, log)
    try:
        server.wait_ready(ready_timeout)
        yield server
    finally:
        server.stop()


def cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    """CPU time of each process's main thread — a server worker's event loop, which reads every request it
    serves — in seconds, from the scheduler's nanosecond counter (``/proc/PID/schedstat``) where Linux has it:
    ``cpu_times()`` counts clock ticks (10 ms), and a worker that answered a few cheap requests (a 429 costs
    ~1 ms) can show no tick at all. Elsewhere ``cpu_times()`` of the whole process. -1 for a process that is
    gone."""
    out: dict[int, float] = {}
    for p in procs:
        stat = Path(f"/proc/{p.pid}/schedstat")
        try:
            if stat.exists():
                out[p.pid] = int(stat.read_text().split()[0]) / 1e9
            else:
                t = p.cpu_times()
                out[p.pid] = t.user + t.system
        except (psutil.NoSuchProcess, FileNotFoundError, ProcessLookupError):
            out[p.pid] = -1.0
    return out
