"""The public surface of charter.policy is exactly this; everything else is private."""

import charter.policy


def test_exported_names() -> None:
    assert sorted(charter.policy.__all__) == sorted(
        [
            "TOOL_ACTIONS",
            "WORKFLOW_ACTIONS",
            "AuditSink",
            "Authorizer",
            "Condition",
            "Decision",
            "PolicyInfo",
            "check_policy_files",
            "load_checked_charter",
            "parse_condition",
            "parse_resource",
        ]
    )
    for name in charter.policy.__all__:
        assert getattr(charter.policy, name) is not None
