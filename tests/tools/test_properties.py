"""Property tests: whatever JSON a model proposes, nothing runs without the approvals the charter needs."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charter.errors import Denied, UsageError
from charter.review import ManualClock
from charter.runtime import Runtime
from charter.tools import args_hash, list_actions, propose
from tests.tools._helpers import INVOICE_ID, billing_state

_examples: list[int] = []

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=10,
)
refund_like = st.fixed_dictionaries(
    {},
    optional={
        "invoice_id": st.sampled_from([INVOICE_ID, "INV-0000-00000", "x"]) | json_values,
        "amount": st.floats(allow_nan=True, allow_infinity=True) | st.integers(-1000, 10**7) | json_values,
        "reason": st.text(max_size=50) | json_values,
        "approved_by": json_values,
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=refund_like | json_values)
def test_no_proposal_of_a_write_tool_runs_without_an_approval(
    rt: Runtime, project: Path, args: object
) -> None:
    _examples.append(1)
    clock = ManualClock()
    clock.advance(timedelta(hours=2 * len(_examples)))  # a fresh rate-limit window for every example
    try:
        proposal = propose(rt, "ana", "issue_refund", args, origin="model", clock=clock)
    except (UsageError, Denied):
        pass
    else:
        assert proposal.status == "pending"
        assert isinstance(args, dict) and set(args) == {"invoice_id", "amount", "reason"}
        assert (
            isinstance(args["amount"], int | float) and math.isfinite(args["amount"]) and args["amount"] > 0
        )
    assert list_actions(rt, status=["approved", "executing", "executed", "failed"]) == []
    assert billing_state(project)["refunds"] == []


@given(st.dictionaries(st.text(max_size=8), json_values.filter(lambda v: not _has_nan(v)), max_size=6))
def test_the_args_hash_ignores_key_order(args: dict[str, object]) -> None:
    assert args_hash(args) == args_hash(dict(reversed(list(args.items()))))


def _has_nan(value: object) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, list):
        return any(_has_nan(v) for v in value)
    if isinstance(value, dict):
        return any(_has_nan(v) for v in value.values())
    return False
