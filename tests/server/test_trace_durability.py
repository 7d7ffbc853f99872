"""A trace is durable before the answer is returned: rating an answer the moment it arrives never 404s.

Issue #24: with the old background writer (50 ms linger) a feedback POST right after each answer answered
404 for 16 of 16 answers. Here the server runs with its production telemetry (group commit on) and each of
100 answers is rated immediately, with no retry.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.server.conftest import _build

QUESTIONS = [
    "How long does a refund take to show up on my card?",
    "Can I change my plan in the middle of a billing cycle?",
    "Why was I charged twice this month?",
    "How do I download an invoice?",
]


def approve_prompts(charter: Path, database_url: str | None = None) -> None:
    """What the prompt owner does before the workflow may run (no source sync needed to answer)."""
    from charter.models import PromptRegistry
    from charter.runtime import Runtime

    rt = Runtime.open(charter, database_url=database_url)
    try:
        registry = PromptRegistry(rt.charter, rt.store, audit=lambda **e: rt.audit.append(**e))
        for prompt in rt.spec.prompts:
            registry.approve(prompt.name, prompt.active, principal=rt.charter.principal("lena"))
    finally:
        rt.close()


@pytest.fixture
def production_client(project: Path) -> Iterator[tuple[Any, Any]]:
    from fastapi.testclient import TestClient

    approve_prompts(project)
    served = _build(project, background_telemetry=True)
    try:
        with TestClient(served.app, raise_server_exceptions=False) as c:  # type: ignore[arg-type]
            yield c, served
    finally:
        served.rt.close()  # type: ignore[attr-defined]


@pytest.mark.slow  # 100 answers through the server: integration, full suite only
def test_feedback_right_after_each_of_100_answers_never_404s(production_client: tuple[Any, Any]) -> None:
    client, served = production_client
    statuses: list[int] = []
    for i in range(100):
        r = client.post("/api/ask", json={"question": QUESTIONS[i % 4]}, headers=served.headers("ana"))
        assert r.status_code == 200, r.text
        rid = r.json()["request_id"]
        fb = client.post(
            f"/api/traces/{rid}/feedback",
            json={"rating": "up", "reasons": ["helpful"], "comment": "card 4111 1111 1111 1111, thanks"},
            headers=served.headers("ana"),
        )
        statuses.append(fb.status_code)
        assert client.get(f"/api/traces/{rid}", headers=served.headers("ana")).status_code == 200
    assert statuses.count(404) == 0 and set(statuses) == {200}, statuses
