"""The public surface of charter.tools and charter.review is exactly what their ``__all__`` says."""

from __future__ import annotations

import charter.review
import charter.tools


def test_tools_exports() -> None:
    assert sorted(charter.tools.__all__) == sorted(
        [
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
            # upstream MCP tools are charter tools (re-exported by charter.mcp)
            "LiveTool",
            "Pin",
            "UpstreamError",
            "UpstreamHub",
            "all_pins",
            "approve_upstream",
            "definition_hash",
            "get_pin",
            "hub_for",
            "record_live",
            # for charter.review (approvals move tool actions; reasons are recorded masked)
            "masked",
            "transition",
        ]
    )
    for name in charter.tools.__all__:
        assert getattr(charter.tools, name) is not None


def test_review_exports() -> None:
    assert sorted(charter.review.__all__) == sorted(
        [
            "ESCALATION_REASONS",
            "REJECT_REASONS",
            "REVIEW_STATES",
            "Clock",
            "ManualClock",
            "ReviewItem",
            "SystemClock",
            "TickReport",
            "approver_roles",
            "clock_or_default",
            "decide_approval",
            "decide_draft",
            "get_approval",
            "get_review",
            "list_approvals",
            "list_reviews",
            "review_stats",
            "reviewer_roles",
            "role_chain",
            "submit_draft",
            "tick",
            # who may see which item (charter.access's rules on the review queue's records)
            "assigned_to",
            "eligible_reviewers",
            "is_eligible_reviewer",
            "may_see_review",
            "redact_review",
            "visible_approval",
            "visible_review",
        ]
    )
    for name in charter.review.__all__:
        assert getattr(charter.review, name) is not None
