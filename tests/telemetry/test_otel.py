"""OpenTelemetry export: GenAI spans sent over OTLP/HTTP to a real consumer (Arize Phoenix, started here on a
temporary SQLite database) and queried back from its REST API; nothing planted survives the trip."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _monitoring_helpers import pii_trace, scan_text
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from tests.conftest import require

from charter.runtime import Runtime
from charter.telemetry import SEMCONV_VERSION, TraceExporter, trace_store_for


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Phoenix server (its own SQLite file, loopback only, no telemetry); yields its base URL."""
    require("phoenix", "arize-phoenix is part of the dev extra")
    port, grpc = _free_port(), _free_port()
    workdir = tmp_path_factory.mktemp("phoenix")
    env = {
        **os.environ,
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_WORKING_DIR": str(workdir),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    log = (workdir / "phoenix.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", "from phoenix.server.main import main; main()", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"phoenix exited: {(workdir / 'phoenix.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail("phoenix did not start within 180 s")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _spans(url: str, project: str, want: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 30
    data: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        r = httpx.get(f"{url}/v1/projects/{project}/spans/otlpv1", params={"limit": 1000}, timeout=10)
        if r.status_code == 200:
            data = r.json()["data"]
            if len(data) >= want:
                return data
        time.sleep(0.5)
    return data


def _attrs(span: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for a in span.get("attributes") or []:
        v = a["value"]
        out[a["key"]] = next((x for x in v.values() if x is not None), None)
    return out


@pytest.mark.slow
def test_spans_reach_phoenix_masked_with_genai_attributes(project: Path, phoenix: str) -> None:
    text = project.read_text()
    assert "exporters: {prometheus: true}" in text
    project.write_text(
        text.replace(
            "exporters: {prometheus: true}",
            f'exporters: {{prometheus: true, otlp_endpoint: "{phoenix}", include_content: true}}',
        )
    )
    rt = Runtime.open(project)
    store = trace_store_for(rt)
    exporters = [s for s in store.sinks if isinstance(s, TraceExporter)]
    assert len(exporters) == 1  # wired from the charter
    ids = []
    for _ in range(3):
        t = pii_trace(rt.spec.workflow.id, "ana")
        with t.span("generate") as s:
            s.update(
                model="extractive", provider="extractive", input_tokens=120, output_tokens=40, cost_usd=0.0012
            )
        store.write(t)
        ids.append(t.request_id)
    assert exporters[0].flush()
    rt.close()

    spans = _spans(phoenix, rt.spec.workflow.id, want=3 * 5)
    assert len(spans) >= 15
    by_name: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        by_name.setdefault(s["name"], []).append(_attrs(s))
    roots = by_name["invoke_workflow billing-support"]
    assert {r["charter.request_id"] for r in roots} == set(ids)
    root = roots[0]
    assert (
        root["gen_ai.operation.name"] == "invoke_workflow"
        and root["gen_ai.workflow.name"] == "billing-support"
    )
    assert root["gen_ai.usage.cost"] == pytest.approx(0.0012) and root["llm.cost.total"] == pytest.approx(
        0.0012
    )
    assert "<EMAIL_" in root["input.value"]  # content opted in, and masked
    chat = by_name["chat extractive"][0]
    assert chat["gen_ai.operation.name"] == "chat" and chat["gen_ai.provider.name"] == "extractive"
    assert chat["gen_ai.request.model"] == "extractive"
    assert int(chat["gen_ai.usage.input_tokens"]) == 120 and int(chat["gen_ai.usage.output_tokens"]) == 40
    retrieval = by_name["retrieval"][0]
    assert json.loads(retrieval["gen_ai.retrieval.documents"])[0]["id"] == "help-center:refunds.md#0"
    tool = by_name["execute_tool lookup_invoice"][0]
    assert tool["gen_ai.tool.name"] == "lookup_invoice" and "<EMAIL_" in tool["gen_ai.tool.call.arguments"]
    assert scan_text("phoenix spans", json.dumps(spans)) == []


def test_no_content_unless_opted_in(tmp_path: Path) -> None:
    mem = InMemorySpanExporter()
    exporter = TraceExporter(mem, include_content=False, batch=False)
    from charter.store import open_store
    from charter.telemetry import PresidioMasker, TraceStore

    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    ts = TraceStore(store, masker=PresidioMasker(b"s"), sinks=[exporter])
    t = pii_trace("wf", "ana")
    t.status = "error"
    ts.write(t)
    spans = mem.get_finished_spans()
    keys = {k for s in spans for k in (s.attributes or {})}
    assert not keys & {"input.value", "output.value", "gen_ai.input.messages", "gen_ai.tool.call.arguments"}
    root = next(s for s in spans if s.name == "invoke_workflow wf")
    assert (
        root.status.status_code.name == "ERROR" and (root.attributes or {})["error.type"] == "ProviderError"
    )
    assert root.instrumentation_scope is not None and root.instrumentation_scope.schema_url.endswith(
        SEMCONV_VERSION
    )
    assert scan_text("spans", repr([dict(s.attributes or {}) for s in spans])) == []


def test_broken_exporter_never_fails_the_request(tmp_path: Path) -> None:
    from charter.store import open_store
    from charter.telemetry import PresidioMasker, TraceStore

    def broken(_doc: dict[str, Any]) -> None:
        raise ConnectionError("collector down")

    ts = TraceStore(open_store(f"sqlite:///{tmp_path / 'b.db'}"), masker=PresidioMasker(b"s"), sinks=[broken])
    t = pii_trace("wf", "ana")
    ts.write(t)
    assert ts.get(t.request_id)["request_id"] == t.request_id
