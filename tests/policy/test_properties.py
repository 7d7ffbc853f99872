"""Property tests: random principals, actions, resources and contexts never crash the authorizer and are
never allowed unless the charter grants them (an independent Python oracle of the charter's rules)."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charter.errors import UsageError
from charter.policy import Authorizer, parse_condition
from charter.spec import LoadedCharter, Principal, load_charter

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "billing-support" / "charter.yaml"
LOADED = load_charter(EXAMPLE)
AUTHZ = Authorizer.from_charter(LOADED)
TOOLS = [t.name for t in LOADED.spec.tools]
SOURCES = [s.id for s in LOADED.spec.sources]
USERS = sorted(LOADED.principals)
ACTIONS = sorted(AUTHZ.actions)


def oracle(loaded: LoadedCharter, principal: Any, action: Any, resource: Any, context: Any) -> bool:
    """What the charter (plus billing.cedar: contractors never call tools) grants, computed without Cedar."""
    pid = principal.id if isinstance(principal, Principal) else principal
    p = loaded.principals.get(pid) if isinstance(pid, str) else None
    if p is None or not p.active or not isinstance(action, str):
        return False
    wf = loaded.spec.workflow.id
    kind, ident = (
        resource if isinstance(resource, tuple) else ("Workflow", wf) if resource is None else (None, None)
    )
    if kind == "Workflow" and ident != wf:
        return False
    if kind == "Tool" and ident not in TOOLS:
        return False
    if kind == "Source" and ident not in SOURCES:
        return False
    if kind not in ("Workflow", "Tool", "Source"):  # role permissions cover the workflow and its children
        return False
    if action in {perm for r in p.roles for perm in loaded.spec.roles[r].permissions}:
        return True
    if kind != "Tool":
        return False
    tool = next(t for t in loaded.spec.tools if t.name == ident)
    if action == "tools.call":
        return "contractors" not in p.groups and bool(set(p.roles) & set(tool.roles))
    if action == "tools.approve":
        if tool.approval.rule == "always":
            return tool.approval.approver_role in p.roles
        args = (context or {}).get("args") if isinstance(context, dict) else None
        if not isinstance(args, dict) or set(context) - {"args"}:
            return False
        for cond in tool.approval.conditions:
            try:
                holds = parse_condition(cond.when).evaluate(args)
            except UsageError:
                return False
            if holds:
                return cond.approver_role in p.roles
    return False


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=5),
)
junk = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
principals = st.one_of(
    st.sampled_from(USERS),
    st.text(max_size=12),
    st.integers(),
    st.builds(
        Principal,
        id=st.sampled_from([*USERS, "mallory"]),
        kind=st.sampled_from(["user", "service"]),
        name=st.just("x"),
        email=st.none(),
        groups=st.lists(st.sampled_from(["contractors", "finance", "x"]), max_size=2).map(tuple),
        roles=st.lists(st.sampled_from([*LOADED.spec.roles, "root"]), max_size=2).map(tuple),
        active=st.booleans(),
    ),
)
actions = st.one_of(st.sampled_from(ACTIONS), st.text(max_size=15), st.none())
resources = st.one_of(
    st.none(),
    st.tuples(st.just("Tool"), st.sampled_from([*TOOLS, "delete_account", "x"])),
    st.tuples(
        st.sampled_from(["Workflow", "Source", "Group", "Role", "Action", "Nope"]),
        st.sampled_from(["billing-support", "help-center", "x", ""]),
    ),
    st.text(max_size=30),
)
amounts = st.one_of(
    st.integers(min_value=-1000, max_value=10**6),
    st.floats(),
    st.decimals(places=2),
    st.text(max_size=5),
    st.none(),
    st.booleans(),
)
contexts = st.one_of(
    st.none(),
    junk,
    st.builds(
        lambda a, extra: {"args": {"amount": a, **extra}},
        amounts,
        st.dictionaries(st.sampled_from(["currency", "invoice", "reason"]), junk, max_size=2),
    ),
    st.builds(lambda a: {"args": {"amount": a}, "admin": True}, amounts),
)


def _as_oracle_resource(resource: Any) -> Any:
    if resource is None or isinstance(resource, tuple):
        return resource
    return ("?", "?")  # any string the oracle does not model: the oracle denies, so Cedar must too


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(principal=principals, action=actions, resource=resources, context=contexts)
def test_never_crashes_never_over_grants(principal: Any, action: Any, resource: Any, context: Any) -> None:
    decision = AUTHZ.authorize(principal, action, resource, context)
    assert isinstance(decision.allowed, bool)
    expected = oracle(LOADED, principal, action, _as_oracle_resource(resource), context)
    if decision.allowed:
        assert expected, (principal, action, resource, context, decision)


well_formed_amounts = st.one_of(
    st.integers(min_value=-(10**6), max_value=10**6),
    st.decimals(min_value=-(10**6), max_value=10**6, places=2, allow_nan=False),
)


@settings(max_examples=400, deadline=None)
@given(
    user=st.sampled_from(USERS),
    action=st.sampled_from(ACTIONS),
    resource=st.one_of(st.none(), st.tuples(st.just("Tool"), st.sampled_from(TOOLS))),
    amount=well_formed_amounts,
)
def test_well_formed_requests_match_the_oracle_exactly(
    user: str, action: str, resource: Any, amount: Any
) -> None:
    context = {"args": {"amount": amount}}
    decision = AUTHZ.authorize(user, action, resource, context)
    assert decision.allowed is oracle(LOADED, user, action, resource, context), decision


def test_float_edge_values_deny() -> None:
    for amount in (math.nan, math.inf, -math.inf, Decimal("sNaN"), 1e-9, 1e300):
        for user in ("lena", "farid"):
            assert not AUTHZ.authorize(
                user, "tools.approve", "tool:issue_refund", {"args": {"amount": amount}}
            ).allowed
