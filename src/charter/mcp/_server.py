"""Charter as an MCP server: per caller, the governed workflow's ``ask``, ``search``, tools and documents.

:func:`build_server` makes one low-level :class:`mcp.server.Server` for a runtime. Every handler first
resolves the caller (``principal_of``: the ``--as`` user on stdio, the bearer token's principal on HTTP —
authenticated per request by :mod:`charter.server._mcp_http`) and then calls the *same* functions as the REST API,
in a worker thread:

* ``ask`` → ``charter.access.require(..., "ask")`` and :func:`charter.pipeline.ask` (admission,
  retrieval, budget, checks, review, trace, audit);
* ``search`` → :func:`charter.pipeline.search` (Cedar ``search``, then the index with the caller's ACL
  tokens: only chunks the caller may read);
* a charter tool → :func:`charter.tools.propose` with ``origin="mcp"`` (tool list, Cedar, arguments, kill
  switch, preconditions, rate limit, approval rule); an approval-requiring call returns the pending
  approval, never a result;
* documents → resources ``charter://documents/<source>/<doc>``, listed and read only when the document's
  *current* ACL admits the caller (re-checked on every read) and Cedar permits ``search``.

``tools/list`` shows a tool only when Cedar lets the caller call it (the console's ``tool_callable``), so a
client never learns of tools its user may not use. Listings are ``cache_scope="private"`` with ``ttl_ms=0``:
a client must not reuse one caller's listing for another, or after a permission change.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import mcp_types as types
from mcp.server import Server

from charter.errors import AuthenticationError, CharterException, NotFound, UsageError
from charter.store.tables import acl, chunks, documents
from charter.tools import propose, tool_registry

if TYPE_CHECKING:
    from mcp.server import ServerRequestContext

    from charter.runtime import Runtime
    from charter.spec import Principal

PrincipalOf = Callable[["ServerRequestContext[Any, Any]"], "Principal"]
URI_PREFIX = "charter://documents/"
MAX_RESOURCES = 1000

ASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "question": {
            "type": "string",
            "minLength": 1,
            "description": "The question, as it was asked.",
        },
        "submit_for_review": {
            "type": "boolean",
            "default": False,
            "description": "Put the draft in the review queue.",
        },
    },
    "required": ["question"],
    "additionalProperties": False,
}
SEARCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "minLength": 1},
        "k": {"type": "integer", "minimum": 1, "maximum": 50, "default": 8},
    },
    "required": ["query"],
    "additionalProperties": False,
}
BUILTINS = ("ask", "search")


# ------------------------------------------------------------------------------------------ listings
def visible_tools(rt: Runtime, principal: Principal) -> list[types.Tool]:
    """The tools this principal sees: ``ask``/``search`` when Cedar permits them, and each charter tool
    Cedar lets them call. Descriptions are the charter's (upstream text only as approved data)."""
    from charter.access import allowed, tool_callable

    wf = rt.spec.workflow
    out: list[types.Tool] = []
    if allowed(rt, principal, "ask"):
        out.append(
            types.Tool(
                name="ask",
                description=f"Ask the governed '{wf.name}' workflow: a cited draft answer, checked, escalated "
                "to a human when needed, and recorded.",
                input_schema=ASK_SCHEMA,
                annotations=types.ToolAnnotations(read_only_hint=False, open_world_hint=False),
            )
        )
    if allowed(rt, principal, "search"):
        out.append(
            types.Tool(
                name="search",
                description=f"Search the '{wf.name}' sources: only passages you may read.",
                input_schema=SEARCH_SCHEMA,
                annotations=types.ToolAnnotations(read_only_hint=True, open_world_hint=False),
            )
        )
    registry = tool_registry(rt)
    for reg in registry:
        if reg.name in BUILTINS or not tool_callable(rt, principal, reg.name):
            continue
        spec = reg.spec
        approval = (
            "none" if spec.approval.rule == "none" else f"{spec.approval.rule} (pending until approved)"
        )
        origin = f"; upstream {reg.origin}" if reg.origin else ""
        out.append(
            types.Tool(
                name=reg.name,
                description=f"{reg.shown_description()}\n[charter: effect {spec.effect}; approval {approval}{origin}]",
                input_schema=reg.json_schema(),
                annotations=types.ToolAnnotations(
                    read_only_hint=spec.effect == "read",
                    destructive_hint=spec.effect != "read",
                    open_world_hint=spec.effect == "external",
                ),
                meta={"charter/effect": spec.effect, "charter/origin": reg.origin or "python"},
            )
        )
    return out


def readable_documents(rt: Runtime, principal: Principal, limit: int = MAX_RESOURCES) -> list[dict[str, Any]]:
    """Documents of the charter's sources whose current ACL shares a token with the principal's."""
    from sqlalchemy import select

    tokens = sorted(principal.acl_tokens)
    configured = [s.id for s in rt.spec.sources]
    if not tokens or not configured:
        return []
    d = documents.c
    query = (
        select(d.source_id, d.doc_id, d.title, d.format)
        .where(
            d.source_id.in_(configured),
            d.id.in_(select(acl.c.doc_pk).where(acl.c.token.in_(tokens))),
        )
        .order_by(d.source_id, d.doc_id)
        .limit(limit)
    )
    with rt.store.connect() as conn:
        rows = conn.execute(query).all()
    return [
        {"source_id": r.source_id, "doc_id": r.doc_id, "title": r.title, "format": r.format} for r in rows
    ]


def document_uri(source_id: str, doc_id: str) -> str:
    return URI_PREFIX + urllib.parse.quote(source_id, safe="") + "/" + urllib.parse.quote(doc_id, safe="")


def read_document(rt: Runtime, principal: Principal, uri: str) -> tuple[str, str]:
    """(title, text) of the document at ``uri`` if the caller may read it *now*; else :class:`NotFound`
    (the same answer as for a document that does not exist)."""
    from sqlalchemy import select

    from charter.access import require
    from charter.retrieval import Index

    require(rt, principal, "search")
    if not uri.startswith(URI_PREFIX) or uri.count("/") != URI_PREFIX.count("/") + 1:
        raise NotFound(f"no document {uri[:200]!r}")
    source_q, _, doc_q = uri[len(URI_PREFIX) :].partition("/")
    source_id, doc_id = urllib.parse.unquote(source_q), urllib.parse.unquote(doc_q)
    if source_id not in {s.id for s in rt.spec.sources}:
        raise NotFound(f"no document {uri[:200]!r}")
    current = Index.for_runtime(rt).current_acl(source_id, doc_id)
    if not current or not (current & principal.acl_tokens):
        raise NotFound(f"no document {uri[:200]!r}")
    d = documents.c
    with rt.store.connect() as conn:
        title = conn.execute(select(d.title).where(d.source_id == source_id, d.doc_id == doc_id)).scalar()
        parts = (
            conn.execute(
                select(chunks.c.text)
                .join(documents, documents.c.id == chunks.c.doc_pk)
                .where(d.source_id == source_id, d.doc_id == doc_id)
                .order_by(chunks.c.position)
            )
            .scalars()
            .all()
        )
    return str(title or doc_id), "\n\n".join(parts)


# ------------------------------------------------------------------------------------------ calls
def call(rt: Runtime, principal: Principal, name: str, args: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Run one MCP tool call for ``principal`` through the REST path's functions: (document, is_error)."""
    from charter.access import require

    if name == "ask":
        from charter.agents import respond as ask

        question = args.get("question")
        review = args.get("submit_for_review", False)
        if (
            not isinstance(question, str)
            or not isinstance(review, bool)
            or set(args) - {"question", "submit_for_review"}
        ):
            raise UsageError("ask takes {question: string, submit_for_review?: boolean}")
        require(rt, principal, "ask")
        return ask(rt, principal, question, submit_for_review=review).as_dict(), False
    if name == "search":
        from charter.pipeline import search as governed_search

        query, k = args.get("query"), args.get("k", 8)
        if (
            not isinstance(query, str)
            or not isinstance(k, int)
            or isinstance(k, bool)
            or not 1 <= k <= 50
            or set(args) - {"query", "k"}
        ):
            raise UsageError("search takes {query: string, k?: integer 1..50}")
        hits = governed_search(rt, principal, query, k=k)
        return {
            "items": [
                {
                    "chunk_id": h.chunk_id,
                    "source_id": h.source_id,
                    "doc_id": h.doc_id,
                    "title": h.title,
                    "heading": h.heading,
                    "page": h.page,
                    "text": h.text,
                    "score": h.score,
                    "uri": document_uri(h.source_id, h.doc_id),
                }
                for h in hits
            ]
        }, False
    proposal = propose(rt, principal, name, args, origin="mcp", reason="called over MCP")
    doc = proposal.to_dict()
    if proposal.approval_id:
        doc["message"] = (
            f"pending approval {proposal.approval_id}: a member of role {proposal.action.required_role} must "
            "approve it (console Approvals page or `charter approvals decide`); it runs once, then, with "
            "exactly these arguments"
        )
    return doc, proposal.status == "failed"


def _error_doc(exc: CharterException) -> dict[str, Any]:
    return {
        "error": type(exc).__name__,
        "message": str(exc),
        "reasons": list(getattr(exc, "reasons", []) or []),
    }


def _result(doc: dict[str, Any], is_error: bool) -> types.CallToolResult:
    text = json.dumps(doc, default=str, ensure_ascii=False)
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structured_content=json.loads(text),
        is_error=is_error,
    )


# ------------------------------------------------------------------------------------------ server
def build_server(rt: Runtime, principal_of: PrincipalOf) -> Server[Any]:
    """The MCP server for ``rt``; ``principal_of`` names the caller of each request (see module docstring)."""

    async def list_tools(ctx: ServerRequestContext[Any, Any], params: Any) -> types.ListToolsResult:
        principal = principal_of(ctx)
        tools = await anyio.to_thread.run_sync(visible_tools, rt, principal)
        return types.ListToolsResult(tools=tools, ttl_ms=0, cache_scope="private")

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        principal = principal_of(ctx)
        try:
            doc, is_error = await anyio.to_thread.run_sync(
                call, rt, principal, params.name, dict(params.arguments or {})
            )
        except CharterException as exc:
            return _result(_error_doc(exc), True)
        return _result(doc, is_error)

    async def list_resources(ctx: ServerRequestContext[Any, Any], params: Any) -> types.ListResourcesResult:
        principal = principal_of(ctx)

        def listing() -> list[dict[str, Any]]:
            from charter.access import allowed

            return readable_documents(rt, principal) if allowed(rt, principal, "search") else []

        docs = await anyio.to_thread.run_sync(listing)
        return types.ListResourcesResult(
            resources=[
                types.Resource(
                    uri=document_uri(d["source_id"], d["doc_id"]),
                    name=f"{d['source_id']}/{d['doc_id']}",
                    title=d["title"] or None,
                    mime_type="text/plain",
                )
                for d in docs
            ],
            ttl_ms=0,
            cache_scope="private",
        )

    async def read_resource(
        ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        from mcp.shared.exceptions import MCPError

        principal = principal_of(ctx)
        try:
            _title, text = await anyio.to_thread.run_sync(read_document, rt, principal, str(params.uri))
        except CharterException as exc:
            raise MCPError(code=types.INVALID_PARAMS, message=str(exc)) from None
        return types.ReadResourceResult(
            contents=[types.TextResourceContents(uri=str(params.uri), text=text, mime_type="text/plain")],
            ttl_ms=0,
            cache_scope="private",
        )

    return Server(
        "charter",
        version=_version(),
        title=f"Charter: {rt.spec.workflow.name}",
        instructions=(
            f"Governed workflow '{rt.spec.workflow.id}'. Every call is authorised, budgeted, masked, traced and "
            "audited; tools that need an approval return a pending approval id, never a result."
        ),
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("charter")
    except PackageNotFoundError:  # pragma: no cover
        return "0"


# ------------------------------------------------------------------------------------------ stdio
def stdio_principal(rt: Runtime, user: str) -> PrincipalOf:
    """``--as USER`` on stdio: the user is re-resolved on every request (deactivation takes effect at once)."""
    from mcp.shared.exceptions import MCPError

    def principal_of(_ctx: ServerRequestContext[Any, Any]) -> Principal:
        try:
            principal = rt.charter.principal(user)
        except UsageError as exc:
            raise MCPError(code=types.INVALID_REQUEST, message=str(exc)) from None
        if not principal.active:
            rt.audit.append(
                actor=user,
                action="auth.refused",
                resource="mcp",
                outcome="denied",
                details={"reason": "inactive"},
            )
            raise MCPError(
                code=types.INVALID_REQUEST, message=str(AuthenticationError(f"user {user!r} is not active"))
            )
        return principal

    return principal_of


async def serve_stdio(rt: Runtime, user: str) -> None:
    """Serve ``rt`` over stdin/stdout as ``user`` until the client closes the connection."""
    from mcp.server.stdio import stdio_server

    server = build_server(rt, stdio_principal(rt, user))
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())
