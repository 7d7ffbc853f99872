"""The agent loop with the ``openai`` provider's native tool calling against a real OpenAI-compatible server:
llama-cpp-python's ``llama_cpp.server`` (``--chat_format chatml-function-calling``) running SmolLM2-135M.

The tool-call *format* is what is tested (tools sent as function definitions, ``tool_calls`` parsed, the
earlier steps replayed as assistant ``tool_calls`` and ``tool`` messages); a 135M model's judgement is not.
llama-cpp-python's JSON-schema-to-grammar conversion cannot read regex ``pattern``s such as ``\\d{5}`` (the
server fails the request), so this copy of the example declares the order number without one."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from charter.agents import run_task
from charter.models import PromptRegistry
from charter.pipeline import traces_for
from charter.runtime import Runtime
from charter.store.tables import tool_actions
from tests._llama import llama_server

pytestmark = pytest.mark.slow  # a real llama.cpp server


@pytest.fixture(scope="module")
def tool_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with llama_server(
        tmp_path_factory.mktemp("llama-tools"), "--chat_format", "chatml-function-calling"
    ) as base:
        yield base


def test_the_loop_runs_native_tool_calls_of_a_real_server(tool_server: str, order_desk: Path) -> None:
    tools = order_desk.parent / "tools.py"
    tools.write_text(
        tools.read_text().replace(
            'Field(pattern=r"^ORD-\\d{5}$", description="Order number, e.g. ORD-10422.")',
            'Field(min_length=3, max_length=20, description="Order number, e.g. ORD-10422.")',
        )
    )
    doc = yaml.safe_load(order_desk.read_text())
    doc["model"] = {
        "provider": "openai",
        "name": "smollm2",
        "endpoint": tool_server,
        "prices": {"input_per_1k": 0.0, "output_per_1k": 0.0},
        "timeout": "180s",
        "retries": 0,
        "max_output_tokens": 48,
        "temperature": 0.0,
    }
    doc["agent"].update(max_steps=2)
    doc["prompts"][0]["active"] = "v1"
    order_desk.write_text(yaml.safe_dump(doc, sort_keys=False))
    (order_desk.parent / "prompts" / "system" / "v1.md").write_text(
        "You are an order desk assistant. Always call functions.lookup_order first, with the order number."
    )
    rt = Runtime.open(order_desk)
    try:
        PromptRegistry(rt.charter, rt.store, audit=lambda **e: rt.audit.append(**e)).approve(
            "system", "v1", principal=rt.charter.principal("ines")
        )
        result = run_task(rt, rt.charter.principal("noor"), "Look up order ORD-10421 and tell me its status.")
        assert result.run_status in ("completed", "stopped"), result  # ended cleanly, within its limits
        trace = traces_for(rt).get(result.request_id)
        steps = [s for s in trace["spans"] if s["stage"] == "step"]  # type: ignore[index]
        assert 1 <= len(steps) <= 2 and all(s["status"] == "ok" for s in steps)
        first = steps[0]["attributes"]
        assert first["calls"] == ["lookup_order"], first  # a native tool call, parsed from `tool_calls`
        with rt.store.connect() as conn:
            rows = conn.execute(tool_actions.select().where(tool_actions.c.request_id == result.run_id)).all()
        assert rows and {r.tool for r in rows} == {"lookup_order"} and {r.origin for r in rows} == {"model"}
        assert json.dumps(result.tool_calls)  # every decision is reported
        assert result.model == "smollm2"
    finally:
        rt.close()
