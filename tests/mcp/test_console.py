"""The console's Approvals page shows upstream MCP calls like any other, marked with their origin."""

from __future__ import annotations

from charter.identity import create_token
from charter.runtime import Runtime
from charter.server import ServerSettings, create_app
from charter.tools import propose
from tests.mcp.conftest import Governed
from tests.server.conftest import console_client


def test_approvals_page_shows_upstream_calls(governed: Governed) -> None:
    rt = Runtime.open(governed.charter)
    try:
        pending = propose(
            rt, "ana", "git_commit", {"repo_path": str(governed.repo), "message": "m"}, origin="mcp"
        )
        assert pending.status == "pending"
        token = create_token(rt, "lena", label="test").token
        settings = ServerSettings(
            background_telemetry=False, review_tick_seconds=0, drift_seconds=0, warm_up=False
        )
        with console_client(create_app(rt, settings), token) as client:  # type: ignore[attr-defined]
            page = client.get("/approvals")
        assert page.status_code == 200
        assert pending.id in page.text
        assert 'data-upstream="git/git_commit"' in page.text and "upstream MCP: git/git_commit" in page.text
        assert "(asked over MCP)" in page.text
    finally:
        rt.close()
