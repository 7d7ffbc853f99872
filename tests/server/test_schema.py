"""schemathesis against the OpenAPI schema with a valid token: no 5xx, responses match the schema.

Bounded: ``CHARTER_SCHEMATHESIS_EXAMPLES`` examples per operation (default 150, half again Hypothesis' and
schemathesis' default of 100; 38 operations, ~4,000 cases) and a timeout per operation. Each run draws from a
new seed, so successive runs (every CI run, every developer's) try different inputs instead of the same fixed
set again; a failure names its seed, and ``CHARTER_SCHEMATHESIS_SEED=<seed>`` replays exactly that run. The token is Lena's (a lead: the widest set of allowed
operations among the demo users except the operator's), and Omar's (the operator) for the launch-gate
operations, which a lead may not use; the server's rate limit is off for this run.

Starting runs stays cheap: before fuzzing, the server's eval and gate slots are each held by a running
job (a real :class:`~charter.server._jobs.JobRunner` job that waits for the end of the module), so every
valid ``POST /api/evals`` and ``POST /api/gate/runs`` gets its 409 instead of launching a real run.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.server.conftest import _build

pytestmark = pytest.mark.slow  # fuzzes every API operation (schemathesis) on the synced example

EXAMPLES = int(os.environ.get("CHARTER_SCHEMATHESIS_EXAMPLES", "150"))
SEED = int(os.environ.get("CHARTER_SCHEMATHESIS_SEED") or secrets.randbelow(2**32))


@pytest.fixture(scope="module")
def fuzzed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    cached = os.environ.get("CHARTER_TEST_SYNCED_DIR")
    source = Path(cached) if cached else Path(request.getfixturevalue("_synced_template"))
    dest = tmp_path_factory.mktemp("fuzz") / "project"
    shutil.copytree(source, dest)
    for key in (dest / ".charter" / "keys").glob("*"):
        key.chmod(0o600)
    served = _build(dest / "charter.yaml", rate_limit_per_minute=0)
    from fastapi.testclient import TestClient

    with TestClient(served.app) as client:  # type: ignore[arg-type]  # warm up: load the embedder once
        warm = client.post("/api/ask", json={"question": "refund timing"}, headers=served.headers("lena"))
        assert warm.status_code == 200, warm.text
    from tests.server.test_launch import blocking_job

    release = [blocking_job(served, "eval"), blocking_job(served, "gate")]
    yield served
    for event in release:
        event.set()
    served.rt.close()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def api_schema(fuzzed: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", fuzzed.app)


@pytest.fixture(scope="module")
def tokens(fuzzed: Any) -> dict[str, str]:
    return {"lead": str(fuzzed.tokens["lena"]), "operator": str(fuzzed.tokens["omar"])}


@pytest.mark.timeout(1800)
def test_api_conforms(api_schema: Any, tokens: dict[str, str]) -> None:
    from hypothesis import given, seed

    checks = [
        not_a_server_error,
        response_schema_conformance,
        status_code_conformance,
        content_type_conformance,
    ]
    failures: list[str] = []
    operations = 0
    calls = [0]
    for result in api_schema.get_all_operations():
        op = result.ok()
        operations += 1
        token = tokens["operator" if op.path.startswith("/api/gate") else "lead"]

        @seed(SEED)
        @given(case=op.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
            calls[0] += 1
            case.call_and_validate(checks=checks)

        try:
            run()
        except Exception as exc:  # one operation's failure must not hide the others'
            subs = getattr(exc, "exceptions", None) or [exc]
            detail = "; ".join(f"{type(e).__name__}: {str(e)[:1200]}" for e in subs)
            failures.append(f"{op.method.upper()} {op.path}: {detail}")
    assert operations >= 32
    print(f"schemathesis: {calls[0]} cases over {operations} operations, seed {SEED}")
    assert calls[0] >= operations * min(EXAMPLES, 5)
    assert not failures, f"replay with CHARTER_SCHEMATHESIS_SEED={SEED}\n\n" + "\n\n".join(failures)
