"""The examples in docs/sources.md run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import charter.sources
from charter.retrieval import Index
from charter.sources import ConnectorContext, Document, connector_names, get_connector
from charter.sources._acl import parse_acl_file
from tests.conftest import REPO
from tests.sources._helpers import make_source
from tests.sources.conftest import DOCS_SOURCE, Workspace

DOC = (REPO / "docs" / "sources.md").read_text(encoding="utf-8")


def block(after: str, lang: str) -> str:
    start = DOC.index(after)
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(DOC, start)
    assert m is not None, f"no {lang} block after {after!r}"
    return m.group(1)


def test_custom_connector_example_registers_and_syncs(ws: Workspace) -> None:
    code = block("<!-- test: custom-connector -->", "python")
    exec(compile(code, "docs/sources.md", "exec"), {"__name__": "docs_example"})
    assert "faq-csv" in connector_names()
    (ws.base / "faq.csv").write_text(
        "id,question,answer,acl\n"
        "faq-1,How long do refunds take?,Card refunds take 5 to 10 business days.,group:support public\n"
        "faq-2,Who approves large refunds?,Finance approves refunds above 100 dollars.,\n"
        "faq-3,Broken row,,public\n",
        encoding="utf-8",
    )
    ws.configure([{**DOCS_SOURCE, "id": "faq", "connector": "faq-csv", "location": "faq.csv"}])
    s = ws.sync()["faq"]
    assert (s.added, s.private_by_default, s.failed) == (2, 1, 1)
    assert s.private[0]["doc_id"] == "faq-2"
    index = Index.for_runtime(ws.rt)
    assert index.current_acl("faq", "faq-1") == frozenset({"group:support", "public"})
    assert index.current_acl("faq", "faq-2") == frozenset({"user:omar"})
    hits = index.search(ws.rt.charter.principal("casey").acl_tokens, "how long do refunds take", k=5)
    assert [h.doc_id for h in hits] == ["faq-1"]


def test_jsonl_example_line_parses(tmp_path: Path) -> None:
    (tmp_path / "kb.jsonl").write_text(block("### `jsonl`", "json"), encoding="utf-8")
    src = make_source(connector="jsonl", location="kb.jsonl")
    [doc] = list(get_connector("jsonl").documents(ConnectorContext(src, tmp_path)))
    assert isinstance(doc, Document) and doc.doc_id == "kb-118" and doc.acl == frozenset({"group:support"})


def test_acl_sidecar_example_parses() -> None:
    assert parse_acl_file(block("`<file>.acl` —", "text")) == frozenset({"group:pricing-committee"})


def test_public_names_are_pinned() -> None:
    assert set(charter.sources.__all__) == {
        "AclEntry",
        "AclParseError",
        "Deleted",
        "Moved",
        "Unchanged",
        "acl_freshness",
        "Connector",
        "ConnectorContext",
        "Document",
        "EffectiveAcl",
        "Failed",
        "Freshness",
        "SourceUnavailable",
        "SyncProgress",
        "SyncSummary",
        "Syncer",
        "acl_hash",
        "approval_status",
        "approve_source",
        "connector",
        "connector_names",
        "effective_acl",
        "freshness",
        "get_connector",
        "is_valid_token",
        "last_successful_syncs",
        "parse_acl",
        "screened_documents",
        "source_config_hash",
        "source_documents_listing",
        "source_screening",
        "source_freshness",
        "source_statuses",
        "sync_sources",
    }


def test_every_public_name_is_documented_in_the_package_docstring() -> None:
    doc = charter.sources.__doc__ or ""
    for name in charter.sources.__all__:
        assert name in doc, name


def test_python_api_example_runs(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ws.write("a.md", "---\nacl: [public]\n---\n# A\n\ntext\n")
    ws.close()
    monkeypatch.chdir(ws.base)
    namespace: dict[str, object] = {}
    exec(compile(block("## From Python", "python"), "docs/sources.md", "exec"), namespace)
    assert "docs succeeded" in capsys.readouterr().out
    assert namespace["stale"] == [] and len(namespace["rows"]) == 1  # type: ignore[arg-type]
    namespace["rt"].close()  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["sql-example", "git-example", "web-example"])
def test_connector_examples_are_valid_sources(name: str) -> None:
    import yaml

    from charter.spec import Source

    [data] = yaml.safe_load(block(f"<!-- test: {name} -->", "yaml"))
    source = Source.model_validate(data)
    assert source.connector in connector_names()


def test_embeddings_example_is_a_valid_retrieval_section() -> None:
    import yaml

    from charter.spec._schema import Retrieval

    data = yaml.safe_load(block("<!-- test: embeddings-example -->", "yaml"))
    assert Retrieval.model_validate(data["retrieval"]).embeddings is not None
