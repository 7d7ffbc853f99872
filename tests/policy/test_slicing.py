"""A decision is made with only the policies whose action scope can match the request's action
(``Authorizer._slice``). Generated requests are decided again by Cedar over the *whole* policy set (the
independent oracle: ``cedarpy.is_authorized`` on every policy, no slicing) and must agree exactly: allowed
or not, the policies that decided, the errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import cedarpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charter.policy import Authorizer
from charter.policy._generate import PolicyInfo, entities, generate, principal_uid, uid
from charter.spec import load_charter

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "billing-support" / "charter.yaml"
LOADED = load_charter(EXAMPLE)
WF = LOADED.spec.workflow.id

# extra policies with every action-scope form; the ``when`` conditions fail to evaluate (an error) whenever
# the argument they read is missing or of another type, so a policy wrongly left out or kept shows up in
# the errors as well as in the decision
EXTRA = [
    (
        'permit (principal, action in [Charter::Action::"tools.call", Charter::Action::"search"], resource)'
        " when { context.args.amount > 1000 };"
    ),
    'forbid (principal, action == Charter::Action::"ask", resource) when { context.args.flag == true };',
    "forbid (principal, action, resource) when { context.args.level > 3 };",
    'permit (principal, action in Charter::Action::"feedback", resource) when { context.args.ok };',
    "forbid (principal, action in [], resource) when { context.args.never };",
]


def build() -> Authorizer:
    generated, ents, actions = generate(LOADED)
    extra = [
        PolicyInfo(id=f"extra:{i}", effect=t.split(" ", 1)[0], text=t, source=f"extra:{i}", generated=False)
        for i, t in enumerate(EXTRA)
    ]
    return Authorizer([*generated, *extra], ents, actions, LOADED.principals, WF)


AUTHZ = build()
WHOLE = cedarpy.PolicySet.from_str(AUTHZ.text)
ENTITIES = cedarpy.Entities.from_json_str(json.dumps(entities(LOADED)))
PRINCIPALS = sorted(LOADED.principals)
ACTIONS = sorted(AUTHZ.actions)
RESOURCES = (
    [("Workflow", WF)]
    + [("Tool", t.name) for t in LOADED.spec.tools]
    + [("Source", s.id) for s in LOADED.spec.sources]
)
REF = re.compile(r"\bpolicy(\d+)\b")


def oracle(pid: str, action: str, resource: tuple[str, str], args: dict[str, Any]) -> tuple[Any, ...]:
    """Cedar over every policy: (allowed, deciding policy ids, errors with policy ids named)."""
    # the request as the authorizer builds it (absent optional arguments dropped, values converted): what
    # is under test is which policies decide it, not how it is built
    request = AUTHZ._request(pid, action, resource, {"args": args})
    p = LOADED.principals[pid]
    assert request["principal"] == principal_uid(p.kind, p.id) and request["action"] == uid("Action", action)
    result = cedarpy.is_authorized(request, WHOLE, ENTITIES)
    name = lambda m: AUTHZ.policies[int(m.group(1))].id  # noqa: E731
    # in the policy set's order (Cedar reports a set): the authorizer's documented order
    order = lambda t: (int(m.group(1)) if (m := REF.search(t)) else 1 << 30, t)  # noqa: E731
    ids = tuple(REF.sub(name, r) for r in sorted(result.diagnostics.reasons, key=order))
    errors = tuple(REF.sub(name, e) for e in sorted(result.diagnostics.errors, key=order))
    return result.decision == cedarpy.Decision.Allow, ids, errors


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5000, max_value=5000),
    st.text(max_size=12),
    st.lists(st.integers(min_value=0, max_value=9), max_size=3),
)
arg_dicts = st.dictionaries(
    st.sampled_from(["amount", "flag", "level", "ok", "never", "customer_id", "reason"]), values, max_size=5
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    pid=st.sampled_from(PRINCIPALS),
    action=st.sampled_from(ACTIONS),
    resource=st.sampled_from(RESOURCES),
    args=arg_dicts,
)
def test_sliced_decision_equals_the_whole_policy_set(
    pid: str, action: str, resource: tuple[str, str], args: dict[str, Any]
) -> None:
    allowed, ids, errors = oracle(pid, action, resource, args)
    decision = AUTHZ.authorize(pid, action, resource, {"args": args})
    assert decision.allowed == allowed
    assert decision.policy_ids == ids
    assert decision.errors == errors


def test_a_slice_leaves_out_only_scopes_that_exclude_the_action() -> None:
    ids = lambda action: {AUTHZ.policies[i].id for i in AUTHZ._slice(action)[1]}  # noqa: E731
    call, ask, feedback = ids("tools.call"), ids("ask"), ids("feedback")
    # unconstrained and generated catch-alls stay everywhere; `in []` is nowhere
    for got in (call, ask, feedback):
        assert "extra:2" in got and "identity.inactive" in got and "extra:4" not in got
    assert "extra:0" in call and "extra:0" not in ask
    assert "extra:1" in ask and "extra:1" not in call
    assert "extra:3" in feedback and "extra:3" not in call
    assert len(call) < len(AUTHZ.policies)  # the point: fewer policies evaluated per call


def test_an_error_in_a_policy_for_another_action_is_never_reported() -> None:
    # `context.args.flag == true` on a number errors, but only for `ask`
    other = AUTHZ.authorize("ana", "tools.call", ("Tool", LOADED.spec.tools[0].name), {"args": {"flag": 1}})
    assert not any("extra:1" in e for e in other.errors)
    ask = AUTHZ.authorize("ana", "ask", None, {"args": {"flag": 1}})
    assert ask.errors == oracle("ana", "ask", ("Workflow", WF), {"flag": 1})[2]
