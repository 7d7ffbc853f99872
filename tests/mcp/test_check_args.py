"""Arguments of an upstream tool are checked against its pinned schema; a result found valid is remembered per
(pin, canonical arguments) so a proposal and its call do not validate twice — and nothing else is skipped."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charter.errors import UsageError
from charter.tools import canonical_args
from charter.tools._mcp_tool import check_args

SCHEMA = {
    "type": "object",
    "properties": {"repo_path": {"type": "string", "maxLength": 50}, "max_count": {"type": "integer"}},
    "required": ["repo_path"],
}


def _oracle(args: dict[str, object]) -> bool:
    """The schema's rule, written apart from jsonschema."""
    path, count = args.get("repo_path"), args.get("max_count", 0)
    return (
        set(args) <= {"repo_path", "max_count"}
        and isinstance(path, str)
        and len(path) <= 50
        and isinstance(count, int)
        and not isinstance(count, bool)
    )


values = st.one_of(st.text(max_size=60), st.integers(-5, 5), st.booleans(), st.none())


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.dictionaries(st.sampled_from(["repo_path", "max_count", "extra"]), values, max_size=3), max_size=6
    )
)
def test_remembered_results_never_let_invalid_arguments_through(calls: list[dict[str, object]]) -> None:
    for args in calls:  # the same pin throughout: earlier valid arguments must not vouch for later ones
        text = canonical_args(args)
        for _ in range(2):  # first check and the remembered one agree with the oracle
            if _oracle(args):
                check_args("git_log", SCHEMA, "pin-a", args, text)
            else:
                with pytest.raises(UsageError):
                    check_args("git_log", SCHEMA, "pin-a", args, text)


def test_a_new_pin_validates_again() -> None:
    args = {"repo_path": "x" * 40}
    text = canonical_args(args)
    check_args("git_log", SCHEMA, "pin-b", args, text)
    stricter = {
        **SCHEMA,
        "properties": {**SCHEMA["properties"], "repo_path": {"type": "string", "maxLength": 10}},
    }
    with pytest.raises(UsageError, match="repo_path"):
        check_args("git_log", stricter, "pin-c", args, text)  # the changed schema has another pin hash
