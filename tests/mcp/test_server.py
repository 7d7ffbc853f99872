"""Charter as an MCP server, driven by the official SDK client over stdio and over streamable HTTP.

The permission matrix is generated over the demo users (every demo role, plus a user without a role) and
checked against an oracle written from the charter's declarations — role permissions, tool role lists, the
custom Cedar rule "contractors never use tools" — and the sync's own record of each document's ACL; it
never asks Cedar or the index, the code under test.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import yaml
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from sqlalchemy import select

from charter.runtime import Runtime
from tests.mcp.conftest import Governed, repo_state
from tests.server.conftest import DEMO_USERS, Served, _build, free_port

SRC = Path(__file__).resolve().parents[2] / "src"


# ------------------------------------------------------------------------------------------ oracle
def expected_view(charter: Path, user: str) -> tuple[set[str], set[str]]:
    """(tool names, document uris) ``user`` may use, from the charter's declarations alone."""
    from charter.mcp._server import document_uri
    from charter.store.tables import source_documents

    spec = yaml.safe_load(charter.read_text())
    people = yaml.safe_load((charter.parent / "users.yaml").read_text())
    person = next(p for p in people["users"] + people["service_accounts"] if p["id"] == user)
    roles, groups = set(person.get("roles") or []), set(person.get("groups") or [])
    perms = {p for r in roles for p in spec["roles"][r]["permissions"]}
    tools = {b for b in ("ask", "search") if b in perms}
    if "contractors" not in groups:  # policies/billing.cedar: contractors never use tools
        tools |= {t["name"] for t in spec["tools"] if roles & set(t["roles"])}
    docs: set[str] = set()
    if "search" in perms:
        tokens = {"public", f"user:{user}"} | {f"group:{g}" for g in groups}
        rt = Runtime.open(charter)
        try:
            with rt.store.connect() as conn:
                rows = conn.execute(
                    select(
                        source_documents.c.source_id, source_documents.c.doc_id, source_documents.c.acl_tokens
                    )
                ).all()
        finally:
            rt.close()
        docs = {document_uri(r.source_id, r.doc_id) for r in rows if tokens & set(r.acl_tokens)}
    return tools, docs


# ------------------------------------------------------------------------------------------ clients
@asynccontextmanager
async def http_client(url: str, token: str) -> AsyncIterator[Client]:
    async with (
        create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as hc,
        Client(streamable_http_client(url + "/mcp", http_client=hc), cache=None) as client,
    ):
        yield client


def stdio_params(charter: Path, user: str) -> StdioServerParameters:
    env = {"PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "HF_HUB_OFFLINE": "1"}
    return StdioServerParameters(
        command=sys.executable,
        args=["-c", "from charter.cli import main; main()", "mcp", "--as", user, "--charter", str(charter)],
        env=env,
    )


async def view(client: Client) -> tuple[set[str], set[str]]:
    tools = await client.list_tools(cache_mode="bypass")
    resources = await client.list_resources(cache_mode="bypass")
    return {t.name for t in tools.tools}, {str(r.uri) for r in resources.resources}


def payload(result: Any) -> dict[str, Any]:
    return json.loads(result.content[0].text)  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture
def live(governed_synced: Governed) -> Iterator[tuple[Served, Governed]]:
    import uvicorn

    served = _build(governed_synced.charter)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(served.app, host="127.0.0.1", port=port, log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    served.url = f"http://127.0.0.1:{port}"
    yield served, governed_synced
    server.should_exit = True
    thread.join(15)
    served.rt.close()  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------------ HTTP
def test_http_each_user_sees_exactly_what_the_matrix_allows(live: tuple[Served, Governed]) -> None:
    served, gov = live

    async def main() -> dict[str, tuple[set[str], set[str]]]:
        seen = {}
        for user in DEMO_USERS:
            async with http_client(served.url, served.tokens[user]) as client:
                seen[user] = await view(client)
        return seen

    seen = anyio.run(main)
    for user in DEMO_USERS:
        tools, docs = expected_view(gov.charter, user)
        assert seen[user][0] == tools, user
        assert seen[user][1] == docs, user
    # the matrix is not trivial: someone sees the git write tools, someone sees no tool at all
    assert "git_reset" in seen["lena"][0] and not seen["guest"][0] and not seen["guest"][1]
    assert seen["casey"][0] == {"ask"} and seen["ana"][1] and seen["ana"][1] != seen["lena"][1] | {"x"}


def test_http_calls_go_through_the_governed_paths(live: tuple[Served, Governed]) -> None:
    served, gov = live
    before = repo_state(gov.repo)

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with http_client(served.url, served.tokens["ana"]) as client:
            out["ask"] = payload(await client.call_tool("ask", {"question": "How long does a refund take?"}))
            out["search"] = payload(await client.call_tool("search", {"query": "refund", "k": 5}))
            out["log"] = payload(await client.call_tool("git_log", {"repo_path": str(gov.repo)}))
            pending = await client.call_tool("git_commit", {"repo_path": str(gov.repo), "message": "x"})
            out["commit"], out["commit_error"] = payload(pending), pending.is_error
            hidden = await client.call_tool("kill_everything", {})
            out["hidden"], out["hidden_error"] = payload(hidden), hidden.is_error
            docs = await client.list_resources(cache_mode="bypass")
            first = docs.resources[0]
            read = await client.read_resource(str(first.uri))
            out["read"] = read.contents[0].text  # type: ignore[union-attr]
        async with http_client(served.url, served.tokens["casey"]) as client:
            out["casey_search"] = await client.call_tool("search", {"query": "refund"})
            out["casey_tool"] = await client.call_tool("git_log", {"repo_path": str(gov.repo)})
            try:
                await client.read_resource(str(first.uri))
                out["casey_read"] = "read"
            except Exception as exc:
                out["casey_read"] = str(exc)
        return out

    out = anyio.run(main)
    rt = served.rt
    # ask: the governed pipeline ran, with a trace of its own
    assert out["ask"]["status"] in ("answered", "needs_human") and out["ask"]["request_id"]
    from charter.pipeline import traces_for

    assert traces_for(rt).get(out["ask"]["request_id"])["principal_id"]  # type: ignore[arg-type]
    # search: only chunks ana may read, each with its document uri
    assert out["search"]["items"] and all(
        i["uri"].startswith("charter://documents/") for i in out["search"]["items"]
    )
    # an upstream read tool ran; a write tool returned the pending approval, never a result
    assert out["log"]["status"] == "executed" and "second commit" in out["log"]["result"]["content"]
    assert (
        out["commit"]["status"] == "pending"
        and out["commit"]["approval_id"]
        and out["commit"]["result"] is None
    )
    assert out["commit_error"] is False and "pending approval" in out["commit"]["message"]
    assert out["commit"]["origin"] == "mcp"
    assert repo_state(gov.repo) == before
    # a refused or unknown call is an error result, audited like any refusal
    assert out["hidden_error"]
    assert "not in the workflow's tool list" in out["hidden"]["message"]
    refused = [e.details for e in rt.audit.tail(200, action="tools.refused")]  # type: ignore[attr-defined]
    assert any(d.get("tool") == "kill_everything" and d.get("origin") == "mcp" for d in refused)
    assert out["read"]
    # casey (contractor: no search) cannot search nor read a document
    assert out["casey_search"].is_error
    assert out["casey_tool"].is_error and payload(out["casey_tool"])["error"] == "Denied"
    assert out["casey_read"] != "read"


def test_http_requires_a_token_and_points_at_the_resource_metadata(live: tuple[Served, Governed]) -> None:
    served, _ = live
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    r = httpx.post(served.url + "/mcp", json=body, headers={"Accept": "application/json, text/event-stream"})
    assert r.status_code == 401
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and "resource_metadata=" in challenge
    meta_url = challenge.split('resource_metadata="', 1)[1].rstrip('"')
    meta = httpx.get(meta_url).json()
    assert meta["resource"] == served.url + "/mcp"
    assert meta["bearer_methods_supported"] == ["header"]
    assert "authorization_servers" in meta
    bad = httpx.post(
        served.url + "/mcp",
        json=body,
        headers={"Authorization": "Bearer chr_nope_nope", "Accept": "application/json, text/event-stream"},
    )
    assert bad.status_code == 401


def test_http_a_revoked_token_is_refused_mid_session(live: tuple[Served, Governed]) -> None:
    from charter.identity import revoke_token

    served, _ = live
    token = served.tokens["lena"]

    async def main() -> tuple[int, str]:
        async with http_client(served.url, token) as client:
            first = await client.list_tools(cache_mode="bypass")
            revoke_token(served.rt, token, revoked_by="omar")  # type: ignore[arg-type]
            try:
                await client.list_tools(cache_mode="bypass")
                return len(first.tools), "served"
            except BaseException as exc:  # the SDK surfaces the 401 as an error
                return len(first.tools), f"{type(exc).__name__}: {exc}"

    count, second = anyio.run(main)
    assert count > 0
    assert second != "served"
    served.app.state.charter.auth.refusals.flush()  # type: ignore[attr-defined]  # refusals are counted per window
    refusals = [e.details for e in served.rt.audit.tail(50, action="auth.refused")]  # type: ignore[attr-defined]
    assert any(d.get("reason") == "revoked token" for d in refusals)


# ------------------------------------------------------------------------------------------ stdio
@pytest.mark.parametrize("user", ["ana", "lena", "farid", "casey", "omar", "guest"])
def test_stdio_each_user_sees_exactly_what_the_matrix_allows(governed_synced: Governed, user: str) -> None:
    if user == "guest":
        from tests.server.conftest import GUEST

        users = governed_synced.charter.parent / "users.yaml"
        text = users.read_text()
        users.write_text(text.replace("\nservice_accounts:", GUEST + "\nservice_accounts:"))

    async def main() -> tuple[set[str], set[str], dict[str, Any] | None]:
        async with Client(stdio_params(governed_synced.charter, user), cache=None) as client:
            tools, docs = await view(client)
            pending = None
            if "git_reset" in tools:
                pending = payload(
                    await client.call_tool("git_reset", {"repo_path": str(governed_synced.repo)})
                )
            return tools, docs, pending

    before = repo_state(governed_synced.repo)
    tools, docs, pending = anyio.run(main)
    want_tools, want_docs = expected_view(governed_synced.charter, user)
    assert tools == want_tools
    assert docs == want_docs
    if pending is not None:  # an approval-requiring tool: the pending approval, never a result
        assert pending["status"] == "pending" and pending["approval_id"]
    assert repo_state(governed_synced.repo) == before
