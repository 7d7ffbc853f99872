"""Tools: the registry (``@tool``), proposals, exactly-once execution, recovery and the kill switch.

The model proposes, the system disposes: :func:`propose` checks the charter (tool list, forbidden
actions), Cedar, the arguments, the kill switch, preconditions, the rate limit and the approval rule, and
either runs the call or stores an approval request (decided with :func:`charter.review.decide`).
"""

from charter.store.tables import agent_runs
from charter.tools._actions import approval_requirement, execute, propose
from charter.tools._killswitch import is_killed, kill_switch_status, set_kill_switch
from charter.tools._preconditions import precondition
from charter.tools._records import (
    OPEN_STATES,
    STATES,
    Action,
    Proposal,
    get_action,
    list_actions,
    resolve_principal,
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
    "Proposal",
    "RegisteredTool",
    "StrictArgs",
    "ToolContext",
    "ToolRegistry",
    "agent_runs",
    "approval_requirement",
    "args_hash",
    "canonical_args",
    "execute",
    "get_action",
    "is_killed",
    "kill_switch_status",
    "list_actions",
    "parse_args_json",
    "precondition",
    "propose",
    "resolve_principal",
    "resolve_stuck",
    "set_kill_switch",
    "stuck_actions",
    "tool",
    "tool_registry",
]
