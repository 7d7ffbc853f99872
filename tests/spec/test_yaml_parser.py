"""The charter loader parses with libyaml when PyYAML has it; the pure-Python SafeLoader is the oracle: same
data and same line for every value, on generated documents (any scalars, nesting, comments, flow and block
styles), and the same refusals (duplicate keys, syntax errors with their line)."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from charter.errors import SpecError
from charter.spec._yaml import _BaseLoader, _walk, load_yaml_text

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**12), max_value=10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=40),
)
keys = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=20)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=30,
)


def oracle(text: str) -> tuple[object, dict[tuple[str | int, ...], int]]:
    data = yaml.load(text, Loader=yaml.SafeLoader)
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    lines: dict[tuple[str | int, ...], int] = {}
    if node is not None:
        _walk(node, (), lines)
    return data, lines


@settings(max_examples=300)
@given(documents, st.booleans(), st.booleans())
def test_same_data_and_lines_as_the_pure_python_loader(doc: object, flow: bool, comment: bool) -> None:
    text = yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=True, sort_keys=False)
    if comment:
        text = "# a charter\n" + text.replace("\n", "  # note\n", 1) if not flow else "# a charter\n" + text
    want_data, want_lines = oracle(text)
    got = load_yaml_text(text, "charter.yaml")
    assert got.data == want_data
    assert got.lines == want_lines


def test_duplicate_keys_are_refused_with_the_first_line() -> None:
    with pytest.raises(SpecError, match=r"duplicate key 'owner' \(first at line 2\)"):
        load_yaml_text("sources:\n  owner: omar\n  path: docs\n  owner: lena\n", "charter.yaml")


@pytest.mark.parametrize(
    "text", ["a: [1, 2\nb: 3\n", "a: 1\n  b: 2\n", "a:\n\t- 1\n", "a: 'x\n", "- a\nb: 1\n"]
)
def test_syntax_errors_name_a_line_like_the_oracle(text: str) -> None:
    with pytest.raises(yaml.MarkedYAMLError) as want:
        oracle(text)
    with pytest.raises(SpecError) as got:
        load_yaml_text(text, "charter.yaml")
    problem = got.value.problems[0]
    assert problem.message.startswith("invalid YAML")
    mark = want.value.problem_mark or want.value.context_mark
    assert problem.line is not None and mark is not None
    assert abs(problem.line - (mark.line + 1)) <= 1  # libyaml may report the token's line or the next


def test_a_lone_surrogate_is_a_spec_error_not_a_crash() -> None:
    with pytest.raises(SpecError, match="not valid Unicode"):
        load_yaml_text("name: \ud800\n", "charter.yaml")


def test_libyaml_is_used_when_pyyaml_has_it() -> None:
    assert yaml.__with_libyaml__, "PyYAML without libyaml: the loader falls back to the pure-Python parser"
    assert _BaseLoader is yaml.CSafeLoader


@pytest.mark.parametrize(
    "value",
    [
        "1" + "0" * 5000,  # YAML accepts it; Python will not build an int of more than 4,300 digits
        "2026-02-30",  # a timestamp YAML accepts that no calendar has
    ],
)
def test_a_value_python_cannot_build_is_a_spec_error_not_a_crash(value: str) -> None:
    with pytest.raises(ValueError):
        yaml.load(f"a: {value}\n", Loader=yaml.SafeLoader)  # the oracle: PyYAML itself raises ValueError
    with pytest.raises(SpecError, match="a value cannot be read") as got:
        load_yaml_text(f"budgets:\n  per_task_usd: {value}\n", "charter.yaml")
    assert got.value.problems[0].file == "charter.yaml"
