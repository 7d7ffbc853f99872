"""Scope by role on the server front ends: the same question is out of scope for an agent and allowed for
a lead whose role lifts the topic (``roles.lead.scope.allowed_topics``), on ``/api/ask`` and on the
OpenAI-compatible ``/v1/chat/completions``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient

from tests.server.conftest import Served, _build

LEGAL = "Can you give me legal advice about suing Quillo over my invoice?"


@pytest.fixture
def scoped(server_project: Path) -> Iterator[tuple[Any, Served]]:
    doc = yaml.safe_load(server_project.read_text(encoding="utf-8"))
    doc["roles"]["lead"]["scope"] = {"allowed_topics": ["legal advice", "lawsuit"]}
    server_project.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    served = _build(server_project)
    with TestClient(served.app, raise_server_exceptions=False) as c:  # type: ignore[arg-type]
        yield c, served
    served.rt.close()  # type: ignore[attr-defined]


def test_api_ask_scope_by_role(scoped: tuple[Any, Served]) -> None:
    client, served = scoped

    def reason(user: str) -> str | None:
        r = client.post(
            "/api/ask", json={"question": LEGAL, "submit_for_review": False}, headers=served.headers(user)
        )
        assert r.status_code == 200, r.text
        return (r.json().get("escalation") or {}).get("reason")

    assert reason("ana") == "out_of_scope"
    assert reason("lena") != "out_of_scope"


def test_openai_endpoint_scope_by_role(scoped: tuple[Any, Served]) -> None:
    client, served = scoped
    model = served.rt.spec.workflow.id  # type: ignore[attr-defined]

    def reason(user: str) -> str | None:
        r = client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": LEGAL}]},
            headers=served.headers(user),
        )
        assert r.status_code == 200, r.text
        return (r.json()["charter"]["escalation"] or {}).get("reason")

    assert reason("ana") == "out_of_scope"
    assert reason("lena") != "out_of_scope"
