"""MCP in both directions: Charter as a governed MCP server, and the gatekeeper for upstream MCP tools.

* :func:`build_server` / :func:`serve_stdio` — the workflow served over MCP (stdio for
  ``charter mcp --as USER``; streamable HTTP at ``/mcp`` on ``charter serve``, mounted by
  ``charter.server``), per caller, through the same functions as the REST API.
* Upstream servers (``mcp.servers`` in the charter) whose chosen tools are charter tools
  (``tools[].upstream``): pinned (:func:`approve_upstream`), validated against the pinned schema, called with
  timeouts (:class:`UpstreamHub`), results masked and size-limited. The tool registry builds them, so this
  code lives in :mod:`charter.tools` (``_mcp_pins``, ``_mcp_upstream``, ``_mcp_tool``); re-exported here.
"""

from charter.mcp._server import build_server, serve_stdio, visible_tools
from charter.tools import (
    LiveTool,
    Pin,
    UpstreamError,
    UpstreamHub,
    all_pins,
    approve_upstream,
    definition_hash,
    get_pin,
    hub_for,
    record_live,
)

__all__ = [
    "LiveTool",
    "Pin",
    "UpstreamError",
    "UpstreamHub",
    "all_pins",
    "approve_upstream",
    "build_server",
    "definition_hash",
    "get_pin",
    "hub_for",
    "record_live",
    "serve_stdio",
    "visible_tools",
]
