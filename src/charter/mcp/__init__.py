"""MCP in both directions: Charter as a governed MCP server, and the gatekeeper for upstream MCP tools.

* :func:`build_server` / :func:`serve_stdio` / :func:`mount_mcp` — the workflow served over MCP (stdio for
  ``charter mcp --as USER``; streamable HTTP at ``/mcp`` on ``charter serve``), per caller, through the same
  functions as the REST API.
* Upstream servers (``mcp.servers`` in the charter) whose chosen tools are charter tools
  (``tools[].upstream``): pinned (:func:`approve_upstream`), validated against the pinned schema, called with
  timeouts (:class:`UpstreamHub`), results masked and size-limited.
"""

from charter.mcp._http import mount_mcp, resource_metadata
from charter.mcp._pins import Pin, all_pins, approve_upstream, definition_hash, get_pin, record_live
from charter.mcp._server import build_server, serve_stdio, visible_tools
from charter.mcp._upstream import LiveTool, UpstreamError, UpstreamHub, hub_for

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
    "mount_mcp",
    "record_live",
    "resource_metadata",
    "serve_stdio",
    "visible_tools",
]
