"""Property tests for the parsers that read untrusted files: ACLs, front matter, HTML, JSON lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charter.sources import AclParseError, ConnectorContext, Document, Failed, get_connector, parse_acl
from charter.sources._acl import is_valid_token
from charter.sources._extract import ExtractionError, html_to_text, split_front_matter
from tests.sources._helpers import make_source

ident = st.from_regex(r"[a-z][a-z0-9_.-]{0,20}", fullmatch=True)
token = st.one_of(st.just("public"), ident.map(lambda i: f"group:{i}"), ident.map(lambda i: f"user:{i}"))
json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4),
    max_leaves=10,
)


@given(st.lists(token, min_size=1, max_size=10))
def test_valid_token_lists_round_trip(tokens: list[str]) -> None:
    assert parse_acl(tokens) == frozenset(tokens)
    assert parse_acl(", ".join(tokens)) == frozenset(tokens)


@given(st.lists(token, max_size=5), st.text(max_size=20).filter(lambda t: not is_valid_token(t.strip())))
def test_one_bad_token_rejects_the_whole_acl(tokens: list[str], bad: str) -> None:
    with pytest.raises(AclParseError):
        parse_acl([*tokens, bad])


@given(json_like)
def test_parse_acl_only_ever_raises_acl_parse_error(value: object) -> None:
    try:
        result = parse_acl(value)
    except AclParseError:
        return
    assert result and all(is_valid_token(t) for t in result)


@given(st.text(max_size=300))
def test_front_matter_split_never_raises(text: str) -> None:
    fm = split_front_matter("---\n" + text)
    assert isinstance(fm.body, str) and isinstance(fm.meta, dict)
    split_front_matter(text)


@settings(max_examples=60)
@given(
    st.binary(max_size=400) | st.text(max_size=400).map(lambda t: f"<html><h2>{t}</h2><p>{t}</p>".encode())
)
def test_html_extraction_never_crashes(data: bytes) -> None:
    try:
        out = html_to_text(data)
    except ExtractionError:
        return
    assert isinstance(out.text, str)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(max_size=60).filter(lambda s: "\n" not in s and "\r" not in s), max_size=8))
def test_jsonl_lines_become_documents_or_failures(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str]
) -> None:
    base: Path = tmp_path_factory.mktemp("jsonl")
    (base / "kb.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    ctx = ConnectorContext(make_source(connector="jsonl", location="kb.jsonl"), base)
    items = list(get_connector("jsonl").documents(ctx))
    assert len(items) == sum(1 for line in lines if line.encode().strip())  # ASCII whitespace is blank
    assert all(isinstance(i, Document | Failed) for i in items)
