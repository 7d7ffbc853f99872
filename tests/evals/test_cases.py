"""Eval-set files: YAML and JSONL, validated with file:line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from charter.evals import EvalSetError, load_eval_set, load_eval_sets

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "billing-support" / "evals" / "billing.yaml"


def test_yaml_set_with_graded_sources_regexes_and_tools(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(
        """\
name: demo
cases:
  - id: a
    category: normal
    as: ana
    question: How long does a refund take?
    expected_sources: [help-center/refund-timing.md, {doc: help-center/refunds.md, relevance: 2}]
    must_include: ["5–10 business days", "/pro[- ]rata/i"]
    must_not_include: [CANARY-FIN-7d3a91]
    expected_tools: [lookup_invoice, {tool: issue_refund, args: {amount: 10}}]
    forbidden_tools: [delete_account]
    tags: [refunds]
""",
        encoding="utf-8",
    )
    (case,) = load_eval_set(f)
    assert case.user == "ana" and case.expect == "answer"
    assert case.expected_sources == {"help-center/refund-timing.md": 1, "help-center/refunds.md": 2}
    assert case.must_include[0].found_in("takes 5–10 BUSINESS DAYS")
    assert case.must_include[1].found_in("Pro-rata refund") and not case.must_include[1].found_in("prorated")
    assert case.expected_tools[1].args == {"amount": 10}
    assert case.origin == f"{f}:3"


def test_jsonl_set(tmp_path: Path) -> None:
    f = tmp_path / "s.jsonl"
    rows = [
        {"id": "j1", "category": "negative", "as": "ben", "question": "legal advice?", "expect": "refuse"},
        {"id": "j2", "category": "edge", "as": "ana", "question": "€ and £?"},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    cases = load_eval_set(f)
    assert [c.id for c in cases] == ["j1", "j2"] and cases[0].expect == "refuse"
    assert cases[1].origin.endswith(":2")


def test_errors_name_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(
        """\
cases:
  - id: ok
    category: normal
    as: ana
    question: fine
  - id: bad
    category: weird
    as: ana
    question: q
    colour: blue
    must_include: ["/(unclosed/"]
  - id: ok
    category: edge
    as: ana
    question: again
""",
        encoding="utf-8",
    )
    with pytest.raises(EvalSetError) as info:
        load_eval_set(f)
    problems = {(p.field, p.line) for p in info.value.problems}
    assert ("category", 7) in problems
    assert ("colour", 10) in problems
    assert ("must_include", 11) in problems
    assert ("id", 12) in problems  # duplicate id
    assert info.value.exit_code == 2
    assert f"{f}:7" in str(info.value)


def test_jsonl_errors_name_the_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text(
        '{"id": "a", "category": "normal", "as": "ana", "question": "q"}\n{not json\n'
        '{"id": "b", "category": "normal", "question": "q"}\n',
        encoding="utf-8",
    )
    with pytest.raises(EvalSetError) as info:
        load_eval_set(f)
    assert {p.line for p in info.value.problems} == {2, 3}


def test_unknown_user_and_cross_file_duplicates(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("- {id: x, category: normal, as: ana, question: q}\n", encoding="utf-8")
    b.write_text("- {id: x, category: normal, as: nobody, question: q}\n", encoding="utf-8")
    with pytest.raises(EvalSetError) as info:
        load_eval_sets([a, b], users={"ana"})
    msgs = str(info.value)
    assert "duplicate case id 'x'" in msgs and "unknown user 'nobody'" in msgs and f"{b}:1" in msgs


def test_the_billing_example_set_is_valid_and_covers_every_category_user_and_restricted_doc() -> None:
    from charter.spec import load_charter

    charter = load_charter(EXAMPLE.parent.parent / "charter.yaml")
    cases = load_eval_sets([EXAMPLE], users=set(charter.principals))
    assert len(cases) >= 80
    by_cat = {c: [x for x in cases if x.category == c] for c in ("normal", "edge", "negative", "permission")}
    assert all(len(v) >= 10 for v in by_cat.values())
    assert {c.user for c in by_cat["permission"]} == set(charter.principals)
    restricted = {
        f"{src}/{p.name}"
        for src, folder in (
            ("finance-policies", "finance"),
            ("pricing-committee", "restricted"),
            ("ops-notes", "broken-acl"),
        )
        for p in (EXAMPLE.parent.parent / "sources" / folder).glob("*.md")
    }
    covered = {s for c in by_cat["permission"] for s in c.forbidden_sources}
    assert restricted <= covered
    topics = {p.name for p in (EXAMPLE.parent.parent / "sources" / "help-center").glob("*.md")}
    expected = {
        s.split("/", 1)[1]
        for c in by_cat["normal"]
        for s in c.expected_sources
        if s.startswith("help-center/")
    }
    assert topics == expected, sorted(topics - expected)
