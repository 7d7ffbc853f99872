"""Decision tables for the billing-support charter: role × action × resource (× context) → allow/deny."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import pytest

from charter.errors import Denied
from charter.policy import Authorizer, Decision
from charter.spec import load_charter
from charter.store import open_store
from charter.telemetry.audit import AuditLog

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "billing-support" / "charter.yaml"


@pytest.fixture(scope="module")
def authz() -> Authorizer:
    return Authorizer.from_charter(load_charter(EXAMPLE))


WORKFLOW_TABLE = [
    # user, action, allowed
    ("ana", "ask", True),
    ("ben", "search", True),
    ("casey", "ask", True),
    ("casey", "search", False),
    ("casey", "feedback", True),
    ("ana", "review.decide", False),
    ("lena", "review.decide", True),
    ("farid", "review.decide", True),
    ("ana", "audit.read", False),
    ("lena", "audit.read", False),
    ("omar", "audit.read", True),
    ("omar", "kill_switch", True),
    ("lena", "kill_switch", False),
    ("omar", "gate.run", True),
    ("farid", "gate.run", False),
    ("omar", "users.manage", True),
    ("ana", "users.manage", False),
    ("svc-helpdesk", "ask", True),
    ("svc-helpdesk", "review.decide", False),
    ("farid", "reports.read", True),
    ("ana", "reports.read", False),
    ("lena", "traces.read_all", True),
    ("ana", "traces.read_all", False),
]


@pytest.mark.parametrize(("user", "action", "allowed"), WORKFLOW_TABLE)
def test_workflow_actions(authz: Authorizer, user: str, action: str, allowed: bool) -> None:
    decision = authz.authorize(user, action, "workflow:billing-support")
    assert decision.allowed is allowed, decision
    if allowed:
        assert decision.policy_ids
        assert all(pid.startswith("role.") for pid in decision.policy_ids)
    else:
        assert decision.policy_ids == ()
        assert "deny by default" in decision.reasons[0]


TOOL_CALL_TABLE = [
    ("ana", "lookup_invoice", True),
    ("ana", "issue_refund", True),
    ("ana", "send_reply", True),
    ("lena", "send_reply", True),
    ("farid", "send_reply", False),
    ("farid", "issue_refund", True),
    ("omar", "lookup_invoice", False),
    ("svc-helpdesk", "lookup_invoice", True),
    # the contractor custom policy forbids every tool, whatever the role lists say
    ("casey", "lookup_invoice", False),
    ("casey", "send_reply", False),
    ("casey", "issue_refund", False),
]


@pytest.mark.parametrize(("user", "tool", "allowed"), TOOL_CALL_TABLE)
def test_tool_calls(authz: Authorizer, user: str, tool: str, allowed: bool) -> None:
    decision = authz.authorize(user, "tools.call", f"tool:{tool}")
    assert decision.allowed is allowed, decision
    if allowed:
        assert decision.policy_ids == (f"tool.{tool}.call.{authz._principals[user].roles[0]}",)


def test_contractor_forbid_names_the_custom_policy(authz: Authorizer) -> None:
    # casey's role is not in any tool's roles, so make the forbid observable: it decides even if permitted.
    decision = authz.authorize("casey", "tools.call", "tool:lookup_invoice")
    assert decision.policy_ids and decision.policy_ids[0].endswith("billing.cedar:3")
    assert decision.reasons[0].startswith("forbidden by")


APPROVE_TABLE = [
    # user, amount, allowed — first matching condition decides: <= 100 lead, > 100 finance
    ("lena", 50, True),
    ("lena", 100, True),
    ("lena", 100.01, False),
    ("lena", 500, False),
    ("farid", 500, True),
    ("farid", 100.01, True),
    ("farid", 50, False),
    ("farid", 100, False),
    ("ana", 50, False),
    ("ana", 500, False),
    ("omar", 500, False),
    ("casey", 5, False),
    ("lena", Decimal("99.99"), True),
    ("lena", 0, True),
    ("lena", -5, True),
]


@pytest.mark.parametrize(("user", "amount", "allowed"), APPROVE_TABLE)
def test_refund_approval_conditions(authz: Authorizer, user: str, amount: object, allowed: bool) -> None:
    decision = authz.authorize(user, "tools.approve", "tool:issue_refund", {"args": {"amount": amount}})
    assert decision.allowed is allowed, decision
    if allowed:
        role = "lead" if user == "lena" else "finance"
        assert decision.policy_ids[0].startswith("tool.issue_refund.approve.") and decision.policy_ids[
            0
        ].endswith(role)


def test_tools_without_approval_rule_cannot_be_approved(authz: Authorizer) -> None:
    for user in ("lena", "farid", "omar"):
        assert not authz.authorize(user, "tools.approve", "tool:lookup_invoice", {"args": {}}).allowed


MALFORMED = [
    ("unknown user", ("mallory", "ask", None, None)),
    ("empty user", ("", "ask", None, None)),
    ("unknown action", ("ana", "launch_missiles", None, None)),
    ("action of wrong type", ("ana", 7, None, None)),
    ("unknown tool", ("ana", "tools.call", "tool:delete_account", None)),
    ("unknown resource type", ("ana", "ask", "planet:earth", None)),
    ("garbage resource", ("ana", "ask", 'Charter::Tool::"x" || true', None)),
    ("other workflow", ("ana", "ask", "workflow:payroll", None)),
    ("NaN amount", ("lena", "tools.approve", "tool:issue_refund", {"args": {"amount": math.nan}})),
    ("inf amount", ("farid", "tools.approve", "tool:issue_refund", {"args": {"amount": math.inf}})),
    ("-inf amount", ("lena", "tools.approve", "tool:issue_refund", {"args": {"amount": -math.inf}})),
    ("Decimal NaN", ("lena", "tools.approve", "tool:issue_refund", {"args": {"amount": Decimal("NaN")}})),
    ("string amount", ("lena", "tools.approve", "tool:issue_refund", {"args": {"amount": "50"}})),
    ("bool amount", ("lena", "tools.approve", "tool:issue_refund", {"args": {"amount": True}})),
    ("list amount", ("lena", "tools.approve", "tool:issue_refund", {"args": {"amount": [50]}})),
    ("too precise", ("lena", "tools.approve", "tool:issue_refund", {"args": {"amount": 99.999999}})),
    ("huge amount", ("farid", "tools.approve", "tool:issue_refund", {"args": {"amount": 10**30}})),
    ("missing amount", ("lena", "tools.approve", "tool:issue_refund", {"args": {}})),
    ("None amount", ("lena", "tools.approve", "tool:issue_refund", {"args": {"amount": None}})),
    ("no context", ("lena", "tools.approve", "tool:issue_refund", None)),
    ("args not a mapping", ("lena", "tools.approve", "tool:issue_refund", {"args": [1, 2]})),
    ("context not a mapping", ("lena", "tools.approve", "tool:issue_refund", "amount=5")),
    (
        "extra context junk",
        ("lena", "tools.approve", "tool:issue_refund", {"args": {"amount": 5}, "admin": True}),
    ),
    (
        "object in args",
        ("lena", "tools.approve", "tool:issue_refund", {"args": {"amount": 5, "x": object()}}),
    ),
    ("bytes in args", ("lena", "tools.approve", "tool:issue_refund", {"args": {"amount": 5, "x": b"\x00"}})),
]


@pytest.mark.parametrize(("label", "request_"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_input_denies(authz: Authorizer, label: str, request_: tuple) -> None:  # type: ignore[type-arg]
    decision = authz.authorize(*request_)
    assert isinstance(decision, Decision)
    assert decision.allowed is False
    assert decision.reasons


def test_inactive_principal_is_denied(project: Path) -> None:
    users = project.parent / "users.yaml"
    text = users.read_text()
    users.write_text(
        text.replace(
            "groups: [support], roles: [agent]}", "groups: [support], roles: [agent], active: false}", 1
        )
    )
    authz = Authorizer.from_charter(load_charter(project))
    decision = authz.authorize("ana", "ask")
    assert not decision.allowed
    assert decision.policy_ids == ("identity.inactive",)
    assert authz.authorize("ben", "ask").allowed


def test_charter_not_caller_decides_roles(authz: Authorizer) -> None:
    """A Principal object claiming extra roles gets only what the charter gives its id."""
    from charter.spec import Principal

    forged = Principal(
        id="ana", kind="user", name="Ana", email=None, groups=("platform",), roles=("operator",), active=True
    )
    assert not authz.authorize(forged, "audit.read").allowed


def test_resource_spellings(authz: Authorizer) -> None:
    for spelling in (
        'Charter::Tool::"lookup_invoice"',
        'Tool::"lookup_invoice"',
        "tool:lookup_invoice",
        ("Tool", "lookup_invoice"),
    ):
        assert authz.authorize("ana", "tools.call", spelling).allowed, spelling
    assert authz.authorize("ana", "ask").allowed  # default resource: the workflow


def test_require_audits_denials(tmp_path: Path, authz: Authorizer) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'a.db'}")
    audit = AuditLog(store, key_dir=tmp_path / "keys")
    assert authz.require("ana", "ask", audit=audit).allowed
    with pytest.raises(Denied) as exc:
        authz.require("lena", "tools.approve", "tool:issue_refund", {"args": {"amount": 500}}, audit=audit)
    assert exc.value.reasons and "deny by default" in exc.value.reasons[0]
    entries = audit.tail(10)
    assert [e.action for e in entries] == ["policy.denied"]
    assert entries[0].actor == "lena" and entries[0].resource == "tool:issue_refund"
    assert audit.verify().ok


def test_the_policy_set_and_entities_are_parsed_once(
    authz: Authorizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decisions reuse the parsed policy set and entities: 2,000 decisions parse nothing (cedarpy's own
    parsers are counted). The cost of a decision is measured in bench/approvals_bench.py
    (``policy_check``), not here: a timed unit test only measures the machine's load."""
    import cedarpy

    parsed: list[str] = []
    for cls, name in ((cedarpy.PolicySet, "from_str"), (cedarpy.Entities, "from_json_str")):
        original = getattr(cls, name)
        monkeypatch.setattr(
            cls, name, lambda *a, _o=original, _n=name, **k: (parsed.append(_n), _o(*a, **k))[1]
        )
    decisions = {
        authz.authorize("lena", "tools.approve", "tool:issue_refund", {"args": {"amount": i % 300}}).allowed
        for i in range(2000)
    }
    assert parsed == [] and decisions == {True, False}


def test_memoised_decisions_equal_fresh_ones(authz: Authorizer) -> None:
    """Context-free decisions are memoised; every cell of the tables must match a fresh authorizer's answer,
    asked twice (the second answer comes from the memo), and context-bearing requests are never memoised."""
    fresh = Authorizer.from_charter(load_charter(EXAMPLE))
    for user, action, _allowed in WORKFLOW_TABLE:
        first = authz.authorize(user, action, "workflow:billing-support")
        again = authz.authorize(user, action, "workflow:billing-support")
        assert first == again == fresh._decide(user, action, "workflow:billing-support", None)
    small = authz.authorize("farid", "approve", ("Tool", "issue_refund"), {"args": {"amount": 10}})
    large = authz.authorize("farid", "approve", ("Tool", "issue_refund"), {"args": {"amount": 10**9}})
    assert small == fresh.authorize("farid", "approve", ("Tool", "issue_refund"), {"args": {"amount": 10}})
    assert large == fresh.authorize("farid", "approve", ("Tool", "issue_refund"), {"args": {"amount": 10**9}})
    # a caller-supplied Principal object with extra roles does not poison the memo for that id
    from charter.spec import Principal

    forged = Principal(
        id="ana", kind="user", name="Ana", email=None, groups=("platform",), roles=("operator",), active=True
    )
    assert not authz.authorize(forged, "audit.read", "workflow:billing-support").allowed
    assert not authz.authorize("ana", "audit.read", "workflow:billing-support").allowed
