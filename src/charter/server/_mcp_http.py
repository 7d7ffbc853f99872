"""Streamable HTTP at ``/mcp`` on ``charter serve``, authenticated per request like the REST API.

Every HTTP request to ``/mcp`` (each JSON-RPC POST, not just the first of a session) goes through the
server's :class:`~charter.server._auth.Authenticator` — Charter API tokens and OIDC JWTs, revocation, the
per-principal rate limit — before the MCP SDK sees it. A refused request gets ``401`` with
``WWW-Authenticate: Bearer resource_metadata="…"`` pointing at the OAuth 2.0 Protected Resource Metadata
(RFC 9728) that the MCP authorization spec asks for, served at
``/.well-known/oauth-protected-resource/mcp`` (and ``/.well-known/oauth-protected-resource``). The
authenticated principal rides in the ASGI scope's state to the handlers (``ctx.request``), so a token
revoked mid-session is refused at its very next request.

The SDK's session manager runs stateless (no server-side session to hijack: identity is per request) with
JSON responses; its task group is started by the FastAPI app's lifespan.
"""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from charter.errors import AuthenticationError, Denied

if TYPE_CHECKING:
    from fastapi import FastAPI
    from mcp.server import ServerRequestContext
    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

    from charter.server._app import ServerState
    from charter.spec import Principal

PATH = "/mcp"
METADATA_PATH = "/.well-known/oauth-protected-resource"
_STATE_KEY = "charter_principal"


def _base_url(scope: Scope) -> str:
    request = Request(scope)
    return str(request.base_url).rstrip("/")


def resource_metadata(state: ServerState, base_url: str) -> dict[str, Any]:
    """RFC 9728 metadata for the ``/mcp`` resource: who issues tokens it accepts, and how to send them."""
    oidc = state.rt.spec.identity.oidc
    return {
        "resource": base_url + PATH,
        "authorization_servers": [oidc.issuer] if oidc is not None else [],
        "bearer_methods_supported": ["header"],
        "resource_name": f"Charter: {state.rt.spec.workflow.name}",
        "resource_documentation": base_url + "/docs",
    }


def principal_from_request(ctx: ServerRequestContext[Any, Any]) -> Principal:
    """The principal the ``/mcp`` gate authenticated for this very HTTP request."""
    from mcp.shared.exceptions import MCPError
    from mcp_types import INVALID_REQUEST

    request = ctx.request
    state = getattr(request, "scope", {}).get("state", {}) if request is not None else {}
    principal = state.get(_STATE_KEY) if isinstance(state, dict) else None
    if principal is None:  # never served without the gate; refuse rather than guess
        raise MCPError(code=INVALID_REQUEST, message="authentication required")
    return principal  # type: ignore[no-any-return]


class McpEndpoint:
    """The ASGI app at ``/mcp``: authenticate, then hand the request to the SDK's session manager."""

    def __init__(self, state: ServerState) -> None:
        from charter.mcp import build_server

        self.state = state
        self.server = build_server(state.rt, principal_from_request)
        self.manager = self.new_manager()

    def new_manager(self) -> StreamableHTTPSessionManager:
        """A fresh session manager: the SDK's can run once, and an app may be started more than once."""
        from mcp.server.streamable_http_manager import StreamableHTTPSessionManager

        return StreamableHTTPSessionManager(
            app=self.server, stateless=True, json_response=True, security_settings=None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # pragma: no cover - websockets are not routed here
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        try:
            principal = await anyio.to_thread.run_sync(
                self.state.auth.authenticate, headers.get("authorization")
            )
        except AuthenticationError as exc:
            await self._refuse(scope, receive, send, 401, str(exc))
            return
        except Denied as exc:  # the server's rate limit (429)
            from charter.server._errors import RateLimited

            status = 429 if isinstance(exc, RateLimited) else 403
            await self._refuse(scope, receive, send, status, str(exc))
            return
        scope.setdefault("state", {})[_STATE_KEY] = principal
        await self.manager.handle_request(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, message: str) -> None:
        base = _base_url(scope)
        headers = {}
        if status == 401:
            headers["WWW-Authenticate"] = (
                f'Bearer error="invalid_token", resource_metadata="{base}{METADATA_PATH}{PATH}"'
            )
        body = {"jsonrpc": "2.0", "id": None, "error": {"code": -32001, "message": message}}
        await JSONResponse(body, status_code=status, headers=headers)(scope, receive, send)


def mount_mcp(app: FastAPI, state: ServerState) -> McpEndpoint:
    """Add ``/mcp`` and the protected-resource metadata to ``app``; run the SDK's task group in its lifespan."""
    endpoint = McpEndpoint(state)

    async def metadata(request: Request) -> JSONResponse:
        doc = resource_metadata(state, str(request.base_url).rstrip("/"))
        return JSONResponse(json.loads(json.dumps(doc)), headers={"cache-control": "public, max-age=3600"})

    app.router.routes.append(Route(PATH, endpoint=endpoint))
    app.router.routes.append(Route(METADATA_PATH + PATH, endpoint=metadata, methods=["GET"]))
    app.router.routes.append(Route(METADATA_PATH, endpoint=metadata, methods=["GET"]))
    outer = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> Any:
        endpoint.manager = endpoint.new_manager()
        async with outer(a) as value, endpoint.manager.run():
            yield value

    app.router.lifespan_context = lifespan
    return endpoint
