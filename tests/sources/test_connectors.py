"""The built-in connectors read real files: Markdown with front matter, text, HTML, PDF, sidecars, JSONL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from charter.errors import UsageError
from charter.sources import (
    ConnectorContext,
    Document,
    Failed,
    SourceUnavailable,
    connector,
    connector_names,
    get_connector,
)
from tests.sources._helpers import make_source, write_pdf


def read_all(tmp_path: Path, **source: object) -> dict[str, Document | Failed]:
    src = make_source(**source)
    ctx = ConnectorContext(source=src, base_dir=tmp_path)
    out: dict[str, Document | Failed] = {}
    for item in get_connector(src.connector).documents(ctx):
        key = item.doc_id if item.doc_id else f"line:{item.line}"  # type: ignore[union-attr]
        out[key] = item
    return out


def folder(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    root = tmp_path / "docs"
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content, encoding="utf-8")
    root.mkdir(exist_ok=True)
    return root


def test_builtins_are_registered_through_the_public_registry() -> None:
    assert {"folder", "jsonl"} <= set(connector_names())
    with pytest.raises(UsageError, match="unknown connector 'nope'"):
        get_connector("nope")


def test_markdown_front_matter_gives_acl_title_url_and_updated_at(tmp_path: Path) -> None:
    folder(
        tmp_path,
        {
            "guides/refunds.md": (
                "---\ntitle: How refunds work\nurl: https://help.example/refunds\nupdated_at: 2026-10-02T09:00:00Z\n"
                "acl: [group:support, user:farid]\n---\n# Refunds\n\nAnnual plans are refunded pro-rata.\n"
            )
        },
    )
    docs = read_all(tmp_path)
    doc = docs["guides/refunds.md"]
    assert isinstance(doc, Document)
    assert doc.source_id == "docs" and doc.format == "markdown"
    assert doc.title == "How refunds work"
    assert doc.url == "https://help.example/refunds"
    assert doc.updated_at == datetime(2026, 10, 2, 9, tzinfo=UTC)
    assert doc.acl == frozenset({"group:support", "user:farid"}) and doc.acl_error is None
    assert doc.text.startswith("# Refunds") and "---" not in doc.text and "acl" not in doc.text


def test_title_falls_back_to_first_heading_then_file_name_and_mtime(tmp_path: Path) -> None:
    root = folder(
        tmp_path, {"a.md": "Intro line\n\n## Second-level title\n\nBody", "failed-payments.txt": "x"}
    )
    docs = read_all(tmp_path)
    a, b = docs["a.md"], docs["failed-payments.txt"]
    assert isinstance(a, Document) and isinstance(b, Document)
    assert a.title == "Second-level title"
    assert b.title == "Failed payments" and b.format == "text"
    assert a.acl is None and a.acl_error is None  # no ACL at all; the sync's fail-closed rule decides
    mtime = datetime.fromtimestamp((root / "a.md").stat().st_mtime, UTC)
    assert a.updated_at == mtime


def test_document_ids_are_stable_relative_posix_paths_and_hidden_files_are_skipped(tmp_path: Path) -> None:
    folder(
        tmp_path,
        {
            "b/c/deep.md": "# Deep",
            "top.md": "# Top",
            ".hidden.md": "# no",
            ".git/x.md": "# no",
            "image.png": b"\x89PNG",
            "notes.acl": "public",
        },
    )
    assert sorted(read_all(tmp_path)) == ["b/c/deep.md", "top.md"]


@pytest.mark.parametrize(
    "front_matter, error",
    [
        ("acl: [group:support, admins]", "invalid ACL token 'admins'"),
        ("acl: []", "empty ACL"),
        ("acl: {group: support}", "ACL must be a list"),
        ("acl: [group:Support]", "invalid ACL token"),
        ("acl: [group:support\ntitle: x", "not valid YAML"),
        ("- just\n- a list", "not a mapping"),
    ],
)
def test_unparseable_acls_become_none_with_a_reason(tmp_path: Path, front_matter: str, error: str) -> None:
    folder(tmp_path, {"d.md": f"---\n{front_matter}\n---\n# Body\n\ntext"})
    doc = read_all(tmp_path)["d.md"]
    assert isinstance(doc, Document)
    assert doc.acl is None
    assert doc.acl_error is not None and error in doc.acl_error
    assert doc.text.startswith("# Body")


def test_unclosed_front_matter_is_an_acl_error_not_content(tmp_path: Path) -> None:
    folder(tmp_path, {"d.md": "---\nacl: [public]\n# Body never closed"})
    doc = read_all(tmp_path)["d.md"]
    assert isinstance(doc, Document) and doc.acl is None and "not closed" in (doc.acl_error or "")


def test_acl_as_comma_separated_string_is_accepted(tmp_path: Path) -> None:
    folder(tmp_path, {"d.md": "---\nacl: group:finance, user:lena\n---\nx"})
    doc = read_all(tmp_path)["d.md"]
    assert isinstance(doc, Document) and doc.acl == frozenset({"group:finance", "user:lena"})


def test_html_keeps_headings_as_markdown_and_uses_title_tag(tmp_path: Path) -> None:
    html = """<!doctype html><html><head><title>Price change 2027</title>
    <link rel="canonical" href="https://intranet.example/price-change"><style>p{color:red}</style>
    <script>var secret = 1;</script></head><body>
    <nav>Home</nav><h1>Pending price change</h1><p>Business plan goes from <b>$12</b> to $14.</p>
    <h2>Timeline</h2><ul><li>Announce in <em>January</em></li><li>Effective March</li></ul>
    <table><tr><th>Plan</th><th>Now</th></tr><tr><td>Team</td><td>$8</td></tr></table>
    <!-- a comment that must not appear --></body></html>"""
    folder(tmp_path, {"committee/price.html": html, "committee/price.html.acl": "group:pricing-committee\n"})
    doc = read_all(tmp_path)["committee/price.html"]
    assert isinstance(doc, Document)
    assert doc.format == "html" and doc.title == "Price change 2027"
    assert doc.url == "https://intranet.example/price-change"
    assert doc.acl == frozenset({"group:pricing-committee"})
    lines = doc.text.split("\n\n")
    assert "# Pending price change" in lines
    assert "Business plan goes from $12 to $14." in lines
    assert "## Timeline" in lines
    assert "- Announce in January" in lines and "- Effective March" in lines
    assert "Plan | Now" in lines and "Team | $8" in lines
    assert "secret" not in doc.text and "color" not in doc.text and "comment" not in doc.text


def test_pdf_text_per_page_title_from_metadata_and_sidecar_meta_yaml(tmp_path: Path) -> None:
    root = folder(tmp_path, {})
    write_pdf(
        root / "policy.pdf",
        ["Refund exceptions need finance approval.", "Page two: goodwill credits."],
        title="Refund exceptions policy",
    )
    (root / "policy.meta.yaml").write_text("acl: [group:finance]\nurl: https://wiki.example/policy\n")
    doc = read_all(tmp_path)["policy.pdf"]
    assert isinstance(doc, Document)
    assert doc.format == "pdf" and doc.title == "Refund exceptions policy"
    assert doc.pages is not None and len(doc.pages) == 2
    assert "finance approval" in doc.pages[0] and "goodwill" in doc.pages[1]
    assert doc.acl == frozenset({"group:finance"}) and doc.url == "https://wiki.example/policy"


def test_pdf_without_metadata_title_uses_file_name(tmp_path: Path) -> None:
    root = folder(tmp_path, {})
    write_pdf(root / "refund-exceptions.pdf", ["Hello"])
    doc = read_all(tmp_path)["refund-exceptions.pdf"]
    assert isinstance(doc, Document) and doc.title == "Refund exceptions" and doc.acl is None


def test_acl_in_two_places_is_an_error(tmp_path: Path) -> None:
    folder(
        tmp_path,
        {
            "a.md": "---\nacl: [public]\n---\nx",
            "a.acl": "group:support",
            "b.html": "<p>x</p>",
            "b.html.acl": "public",
            "b.meta.yaml": "acl: [group:finance]",
        },
    )
    docs = read_all(tmp_path)
    for key in ("a.md", "b.html"):
        doc = docs[key]
        assert isinstance(doc, Document) and doc.acl is None
        assert "more than one place" in (doc.acl_error or "")


def test_bad_sidecar_is_an_acl_error(tmp_path: Path) -> None:
    folder(
        tmp_path,
        {
            "a.html": "<p>x</p>",
            "a.acl": "group:support\nadmins  # who?\n",
            "b.html": "<p>y</p>",
            "b.meta.yaml": "acl: [public\n",
        },
    )
    docs = read_all(tmp_path)
    a, b = docs["a.html"], docs["b.html"]
    assert isinstance(a, Document) and a.acl is None and "a.acl" in (a.acl_error or "")
    assert isinstance(b, Document) and b.acl is None and "not valid YAML" in (b.acl_error or "")


def test_acl_file_comments_and_separators(tmp_path: Path) -> None:
    folder(
        tmp_path, {"a.txt": "x", "a.txt.acl": "# who may read\ngroup:support, user:lena\n\npublic # all\n"}
    )
    doc = read_all(tmp_path)["a.txt"]
    assert isinstance(doc, Document) and doc.acl == frozenset({"group:support", "user:lena", "public"})


def test_corrupt_binary_and_oversize_files_fail_alone(tmp_path: Path) -> None:
    folder(
        tmp_path,
        {
            "ok.md": "# fine",
            "broken.pdf": b"%PDF-1.4\nthis is not really a pdf",
            "junk.md": b"\x00\x01\x02binary",
            "latin1.txt": "caf\xe9".encode("latin-1"),
            "big.txt": "x" * 5000,
        },
    )
    src = make_source()
    ctx = ConnectorContext(source=src, base_dir=tmp_path, max_bytes=4000)
    items = {i.doc_id: i for i in get_connector("folder").documents(ctx)}
    assert isinstance(items["ok.md"], Document)
    for key, reason in (
        ("broken.pdf", "PDF"),
        ("junk.md", "binary"),
        ("latin1.txt", "not UTF-8"),
        ("big.txt", "too large"),
    ):
        item = items[key]
        assert isinstance(item, Failed), key
        assert reason in item.reason, (key, item.reason)


def test_missing_folder_makes_the_source_unavailable(tmp_path: Path) -> None:
    ctx = ConnectorContext(source=make_source(location="nowhere"), base_dir=tmp_path)
    with pytest.raises(SourceUnavailable, match="folder not found"):
        list(get_connector("folder").documents(ctx))


def test_folder_reads_lazily(tmp_path: Path) -> None:
    folder(tmp_path, {f"d{i:03}.md": f"# Doc {i}" for i in range(50)})
    ctx = ConnectorContext(source=make_source(), base_dir=tmp_path)
    it = iter(get_connector("folder").documents(ctx))
    first = next(it)
    assert isinstance(first, Document) and first.doc_id == "d000.md"
    # the generator has read one file, not fifty: deleting the rest now makes them vanish from the stream
    for p in sorted((tmp_path / "docs").glob("d*.md"))[1:]:
        p.unlink()
    rest = [d.doc_id for d in it]
    assert rest == []


# -------------------------------------------------------------------------------------------- jsonl
def write_jsonl(tmp_path: Path, lines: list[str]) -> None:
    (tmp_path / "kb.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_jsonl_reads_documents_and_reports_bad_lines_with_numbers(tmp_path: Path) -> None:
    good = {
        "id": "kb-1",
        "title": "Refunds",
        "text": "# Refunds\n\nWithin 30 days.",
        "url": "https://x/1",
        "acl": ["group:support"],
        "updated_at": "2026-11-01T10:00:00+01:00",
    }
    write_jsonl(
        tmp_path,
        [
            json.dumps(good),
            "",
            '{"id": "kb-2", "title": "Broken", "text": "unterminated',
            json.dumps({"title": "no id", "text": "x"}),
            json.dumps({"id": "kb-3", "text": "no acl"}),
            json.dumps({"id": 7, "text": "numeric id", "acl": "public"}),
            json.dumps({"id": "kb-4", "text": 12}),
            "[1, 2]",
            json.dumps({"id": "kb-5", "text": "bad acl", "acl": ["everyone"]}),
        ],
    )
    docs = read_all(tmp_path, connector="jsonl", location="kb.jsonl")
    kb1 = docs["kb-1"]
    assert isinstance(kb1, Document) and kb1.format == "jsonl" and kb1.title == "Refunds"
    assert kb1.acl == frozenset({"group:support"})
    assert kb1.updated_at == datetime(2026, 11, 1, 9, tzinfo=UTC)
    broken = docs["kb-2"]
    assert isinstance(broken, Failed) and broken.line == 3 and "not valid JSON" in broken.reason
    no_id = docs["line:4"]
    assert isinstance(no_id, Failed) and "missing 'id'" in no_id.reason
    kb3 = docs["kb-3"]
    assert isinstance(kb3, Document) and kb3.acl is None and kb3.acl_error == "no ACL" and kb3.title == "kb-3"
    seven = docs["7"]
    assert isinstance(seven, Document) and seven.acl == frozenset({"public"})
    kb4 = docs["kb-4"]
    assert isinstance(kb4, Failed) and kb4.line == 7 and "text" in kb4.reason
    assert isinstance(docs["line:8"], Failed)
    kb5 = docs["kb-5"]
    assert isinstance(kb5, Document) and kb5.acl is None and "everyone" in (kb5.acl_error or "")


def test_jsonl_overlong_line_fails_alone(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path,
        [
            json.dumps({"id": "big", "text": "x" * 3000, "acl": ["public"]}),
            json.dumps({"id": "small", "text": "y", "acl": ["public"]}),
        ],
    )
    src = make_source(connector="jsonl", location="kb.jsonl")
    items = list(get_connector("jsonl").documents(ConnectorContext(src, tmp_path, max_bytes=1000)))
    assert isinstance(items[0], Failed) and items[0].line == 1 and "longer than" in items[0].reason
    assert isinstance(items[1], Document) and items[1].doc_id == "small"


def test_jsonl_missing_file_is_unavailable(tmp_path: Path) -> None:
    src = make_source(connector="jsonl", location="missing.jsonl")
    with pytest.raises(SourceUnavailable):
        list(get_connector("jsonl").documents(ConnectorContext(src, tmp_path)))


# -------------------------------------------------------------------------------------------- custom
def test_a_function_registered_with_the_decorator_is_a_connector(tmp_path: Path) -> None:
    @connector("test-lines")
    def lines(ctx: ConnectorContext):  # type: ignore[no-untyped-def]
        """One document per line of the location string."""
        for i, line in enumerate(ctx.source.location.split("|")):
            yield ctx.document(
                doc_id=f"l{i}", title=line, text=line, format="text", acl=frozenset({"public"})
            )

    src = make_source(connector="test-lines", location="a|b")
    docs = list(get_connector("test-lines").documents(ConnectorContext(src, tmp_path)))
    assert [d.doc_id for d in docs] == ["l0", "l1"]
    assert all(isinstance(d, Document) and d.source_id == "docs" for d in docs)


def test_sidecar_by_stem_applies_only_to_files_with_that_stem(tmp_path: Path) -> None:
    folder(tmp_path, {"q3.prices.html": "<p>x</p>", "q3.prices.acl": "group:finance", "q3.html": "<p>y</p>"})
    docs = read_all(tmp_path)
    a, b = docs["q3.prices.html"], docs["q3.html"]
    assert isinstance(a, Document) and a.acl == frozenset({"group:finance"})
    assert isinstance(b, Document) and b.acl is None and b.acl_error is None
