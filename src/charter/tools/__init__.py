"""Tools: the registry (``@tool``), proposals, exactly-once execution, recovery and the kill switch.

The model proposes, the system disposes: :func:`propose` checks the charter (tool list, forbidden
actions), Cedar, the arguments, the kill switch, preconditions, the rate limit and the approval rule, and
either runs the call or stores an approval request (decided with :func:`charter.review.decide`).

Upstream MCP tools (``tools[].upstream``) are charter tools too, so the registry builds them here: pinned
(:func:`approve_upstream`, :class:`Pin`), called through the :class:`UpstreamHub` (:func:`hub_for`), results
masked and size-limited. :mod:`charter.mcp` re-exports these next to the MCP server.
"""

from charter.store.tables import agent_runs
from charter.tools._actions import approval_requirement, execute, propose
from charter.tools._killswitch import is_killed, kill_switch_status, set_kill_switch
from charter.tools._mcp_pins import Pin, all_pins, approve_upstream, definition_hash, get_pin, record_live
from charter.tools._mcp_upstream import LiveTool, UpstreamError, UpstreamHub, hub_for
from charter.tools._preconditions import precondition
from charter.tools._records import (
    OPEN_STATES,
    STATES,
    Action,
    Proposal,
    get_action,
    list_actions,
    masked,
    resolve_principal,
    transition,
)
from charter.tools._recovery import resolve_stuck, stuck_actions
from charter.tools._registry import (
    RegisteredTool,
    StrictArgs,
    ToolContext,
    ToolRegistry,
    args_hash,
    canonical_args,
    parse_args_json,
    tool,
    tool_registry,
)

__all__ = [
    "OPEN_STATES",
    "STATES",
    "Action",
    "LiveTool",
    "Pin",
    "Proposal",
    "RegisteredTool",
    "StrictArgs",
    "ToolContext",
    "ToolRegistry",
    "UpstreamError",
    "UpstreamHub",
    "agent_runs",
    "all_pins",
    "approval_requirement",
    "approve_upstream",
    "args_hash",
    "canonical_args",
    "definition_hash",
    "execute",
    "get_action",
    "get_pin",
    "hub_for",
    "is_killed",
    "kill_switch_status",
    "list_actions",
    "masked",
    "parse_args_json",
    "precondition",
    "propose",
    "record_live",
    "resolve_principal",
    "resolve_stuck",
    "set_kill_switch",
    "stuck_actions",
    "tool",
    "tool_registry",
    "transition",
]
