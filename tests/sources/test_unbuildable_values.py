"""Values a YAML or JSON parser accepts but Python will not build — an integer of more than 4,300 digits
(``sys.get_int_max_str_digits``), a date like 2026-02-30 — in front matter, a metadata sidecar or a JSONL
line. Each used to raise ``ValueError`` out of the connector and stop the whole source's sync; now the
front matter or sidecar is invalid (the document's ACL fails closed: private to the source's owner) and the
JSONL line fails alone, with its line number."""

from __future__ import annotations

import pytest

from charter.retrieval import Index
from tests.sources.conftest import DOCS_SOURCE, Workspace, md

HUGE = "1" + "0" * 5000


def _hits(ws: Workspace, word: str, tokens: list[str]) -> set[str]:
    return {h.doc_id for h in Index.for_runtime(ws.rt).search(tokens, word, k=20, mode="bm25")}


@pytest.mark.parametrize("value", [HUGE, "2026-02-30"])
def test_front_matter_and_sidecars_fail_closed(ws: Workspace, value: str) -> None:
    ws.write("ok.md", md("# Fine\n\nword quillet"))
    ws.write("fm.md", f"---\nacl: [group:support]\nreviewed: {value}\n---\n# FM\n\nword morrowby\n")
    ws.write("side.md", "# Side\n\nword fennigal\n")
    ws.write("side.md.meta.yaml", f"acl: [group:support]\nreviewed: {value}\n")
    s = ws.sync()["docs"]
    assert s.status == "succeeded" and s.added == 3, s.as_dict()
    assert sorted(p["doc_id"] for p in s.private) == ["fm.md", "side.md"]
    assert all("YAML" in p["reason"] for p in s.private), s.private
    support = ["group:support", "user:ana"]
    assert _hits(ws, "quillet", support) == {"ok.md"}
    assert _hits(ws, "morrowby", support) == set() and _hits(ws, "fennigal", support) == set()
    assert _hits(ws, "morrowby", ["user:omar"]) == {"fm.md"}  # the source's owner


def test_a_jsonl_line_with_a_huge_number_fails_alone(ws: Workspace) -> None:
    ws.configure([{**DOCS_SOURCE, "id": "kb", "connector": "jsonl", "location": "testdocs/kb.jsonl"}])
    ws.write(
        "kb.jsonl",
        '{"id": "a", "title": "A", "text": "word quillet", "acl": ["group:support"]}\n'
        f'{{"id": "b", "title": "B", "text": "word morrowby", "acl": ["group:support"], "n": {HUGE}}}\n'
        '{"id": "c", "title": "C", "text": "word fennigal", "acl": ["group:support"]}\n',
    )
    s = ws.sync()["kb"]
    assert (s.status, s.added, s.failed) == ("partial", 2, 1), s.as_dict()
    [failure] = s.failures
    assert failure["line"] == 2 and "4300 digits" in failure["reason"] and "sys." not in failure["reason"]
    assert _hits(ws, "fennigal", ["group:support"]) == {"c"}


@pytest.mark.parametrize("stamp", ["9999-12-31 23:59:59 -12:00", "0001-01-01 00:00:00 +14:00"])
def test_a_timestamp_with_no_utc_time_is_unknown_not_a_crash(ws: Workspace, stamp: str) -> None:
    """At the edge of the calendar a time zone pushes the UTC time out of range (``OverflowError``): the
    document's time is then unknown (its file's modification time, for a folder), as for any bad value."""
    ws.write("ok.md", md("# Fine\n\nword quillet"))
    ws.write("late.md", f"---\nacl: [group:support]\nupdated_at: {stamp}\n---\n# Late\n\nword morrowby\n")
    ws.configure(
        [DOCS_SOURCE, {**DOCS_SOURCE, "id": "kb", "connector": "jsonl", "location": "testdocs/kb.jsonl"}]
    )
    iso = stamp.replace(" ", "T", 1).replace(" ", "")
    ws.write(
        "kb.jsonl",
        f'{{"id": "a", "text": "word fennigal", "acl": ["group:support"], "updated_at": "{iso}"}}\n',
    )
    summaries = ws.sync()
    assert all(s.status == "succeeded" for s in summaries.values()), {
        k: s.as_dict() for k, s in summaries.items()
    }
    support = ["group:support", "user:ana"]
    assert _hits(ws, "morrowby", support) == {"late.md"} and _hits(ws, "fennigal", support) == {"a"}
