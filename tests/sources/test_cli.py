"""``charter sync``, ``charter sources`` and ``sources show``: output shape, freshness, approval, access."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import yaml

from charter.retrieval import Index
from charter.sources import source_config_hash, source_statuses
from charter.spec import Source
from charter.store import utcnow
from tests.conftest import EXAMPLE, run_cli
from tests.sources.conftest import DOCS_SOURCE, Workspace, md

SOURCE_KEYS = {
    "id",
    "title",
    "connector",
    "location",
    "owner",
    "sensitivity",
    "permission_model",
    "groups",
    "allowed_in_prompts",
    "cadence",
    "documents",
    "chunks",
    "private_by_default",
    "last_successful_sync",
    "age_seconds",
    "max_age_seconds",
    "freshness",
    "on_stale",
    "acl_synced_at",
    "acl_freshness",
    "on_acl_stale",
    "last_run",
    "config_hash",
    "approval",
}


def cli(ws: Workspace, *args: str) -> Any:
    ws.close()  # the CLI opens its own runtime
    return run_cli(*args, "--charter", str(ws.charter))


def seed(ws: Workspace) -> None:
    ws.write("refunds.md", md("# Refunds\n\nAnnual plans are refunded pro-rata.\n"))
    ws.write("orphan.md", "# Orphan\n\nNo ACL here.\n")
    ws.write("junk.txt", b"\x00junk")


def test_sync_json_summary_and_exit_code(ws: Workspace) -> None:
    seed(ws)
    r = cli(ws, "sync", "--json")
    assert r.exit_code == 0, r.stderr
    data = r.json()
    assert data["ok"] is True
    [s] = data["sources"]
    assert s["source"] == "docs" and s["status"] == "partial"
    assert {
        k: s[k]
        for k in ("added", "updated", "acl_changed", "deleted", "unchanged", "private_by_default", "failed")
    } == {
        "added": 2,
        "updated": 0,
        "acl_changed": 0,
        "deleted": 0,
        "unchanged": 0,
        "private_by_default": 1,
        "failed": 1,
    }
    assert s["private"] == [{"doc_id": "orphan.md", "reason": "no ACL"}]
    assert s["failures"][0]["doc_id"] == "junk.txt" and "binary" in s["failures"][0]["reason"]


def test_sync_human_output_lists_private_and_failed_documents(ws: Workspace) -> None:
    seed(ws)
    r = cli(ws, "sync", "--no-progress")
    assert r.exit_code == 0, r.stderr
    assert "private by default docs/orphan.md: no ACL" in r.stdout
    assert "failed docs/junk.txt" in r.stdout
    assert "partial" in r.stdout


def test_sync_of_an_unreadable_source_exits_1(ws: Workspace) -> None:
    seed(ws)
    kb = {**DOCS_SOURCE, "id": "kb", "connector": "jsonl", "location": "https://kb.example/export.jsonl"}
    ws.configure([DOCS_SOURCE, kb])
    r = cli(ws, "sync", "--json")
    assert r.exit_code == 1, r.stdout
    assert "sources" in r.json(), r.stdout
    by_id = {s["source"]: s for s in r.json()["sources"]}
    assert by_id["kb"]["status"] == "failed" and "not URLs" in by_id["kb"]["error"]
    assert by_id["docs"]["status"] == "partial"  # the other source still synced


def test_sync_unknown_source_is_a_usage_error(ws: Workspace) -> None:
    r = cli(ws, "sync", "--source", "nope")
    assert r.exit_code == 2 and "unknown source 'nope'" in r.stderr


def test_sync_as_a_user_needs_sources_sync(ws: Workspace) -> None:
    seed(ws)
    denied = cli(ws, "sync", "--as", "ana", "--json")
    assert denied.exit_code == 1 and denied.json()["error"] == "Denied"
    ok = cli(ws, "sync", "--as", "omar", "--json", "--source", "docs")
    assert ok.exit_code == 0, ok.stdout
    ws.close()
    assert ws.rt.audit.tail(1, action="sources.synced")[0].actor == "omar"
    assert ws.rt.audit.tail(1, action="policy.denied")[0].actor == "ana"


def test_sources_json_shape_before_and_after_sync(ws: Workspace) -> None:
    seed(ws)
    before = cli(ws, "sources", "--json")
    assert before.exit_code == 0, before.stderr
    [row] = before.json()["sources"]
    assert set(row) == SOURCE_KEYS
    assert row["freshness"] == "never synced" and row["last_successful_sync"] is None
    assert (row["documents"], row["chunks"], row["last_run"]) == (0, 0, None)
    assert row["approval"]["state"] == "unapproved"
    assert cli(ws, "sync", "--json").exit_code == 0
    [row] = cli(ws, "sources", "--json").json()["sources"]
    assert row["id"] == "docs" and row["owner"] == "omar" and row["permission_model"] == "per-document"
    assert row["documents"] == 2 and row["chunks"] >= 2
    assert row["freshness"] == "fresh" and row["age_seconds"] < 60 and row["max_age_seconds"] == 7 * 86400
    assert row["last_run"]["status"] == "partial" and row["last_run"]["failed"] == 1
    human = cli(ws, "sources")
    assert human.exit_code == 0 and "docs" in human.stdout and "fresh" in human.stdout


def test_freshness_goes_stale_after_max_age(ws: Workspace) -> None:
    seed(ws)
    ws.sync(now=lambda: utcnow() - timedelta(days=8))
    [row] = source_statuses(ws.rt)
    assert row["freshness"] == "stale" and row["age_seconds"] > 7 * 86400
    [row] = source_statuses(ws.rt, now=utcnow() - timedelta(days=2))
    assert row["freshness"] == "fresh"
    [row] = cli(ws, "sources", "--json").json()["sources"]
    assert row["freshness"] == "stale"
    assert "stale" in cli(ws, "sources").stdout


def _with_approval(ws: Workspace, approval: dict[str, Any] | None) -> None:
    source = {**DOCS_SOURCE, **({"approval": approval} if approval else {})}
    ws.configure([source])


def test_approval_status_and_config_hash(ws: Workspace) -> None:
    current = source_config_hash(Source.model_validate(DOCS_SOURCE))
    assert current.startswith("sha256:")
    cases = [
        (None, "unapproved", None),
        ({"by": "lena", "at": "2026-11-02T10:00:00Z"}, "approved_unbound", None),
        ({"by": "lena", "at": "2026-11-02T10:00:00Z", "config_hash": current}, "approved", True),
        (
            {"by": "lena", "at": "2026-11-02T10:00:00Z", "config_hash": "sha256:0000000000000000"},
            "config_changed",
            False,
        ),
    ]
    for approval, state, matches in cases:
        _with_approval(ws, approval)
        [row] = cli(ws, "sources", "--json").json()["sources"]
        assert row["approval"]["state"] == state
        assert row["approval"]["matches"] is matches
        assert row["approval"]["current_config_hash"] == current == row["config_hash"]
    # the approval record itself is not part of the hash; any other change is
    changed = Source.model_validate({**DOCS_SOURCE, "owner": "lena"})
    approval = {"by": "omar", "at": "2026-01-01T00:00:00Z"}
    approved = Source.model_validate({**DOCS_SOURCE, "approval": approval})
    assert source_config_hash(approved) == current != source_config_hash(changed)


def test_sources_show_lists_documents_for_owners_only(ws: Workspace) -> None:
    seed(ws)
    assert cli(ws, "sync", "--json").exit_code == 0
    denied = cli(ws, "sources", "show", "docs", "--as", "ana", "--json")
    assert denied.exit_code == 1 and denied.json()["error"] == "Denied"
    assert "refunds" not in denied.stdout
    r = cli(ws, "sources", "show", "docs", "--as", "omar", "--json")
    assert r.exit_code == 0, r.stderr
    data = r.json()
    assert data["source"]["id"] == "docs"
    docs = {d["doc_id"]: d for d in data["documents"]}
    assert set(docs) == {"refunds.md", "orphan.md"}
    assert docs["refunds.md"]["acl"] == ["group:support"] and docs["refunds.md"]["chunks"] >= 1
    assert docs["orphan.md"]["private_by_default"] and docs["orphan.md"]["acl"] == ["user:omar"]
    assert docs["orphan.md"]["acl_error"] == "no ACL"
    human = cli(ws, "sources", "show", "docs")
    assert human.exit_code == 0 and "orphan.md" in human.stdout and "no ACL" in human.stdout
    assert cli(ws, "sources", "show", "nope").exit_code == 2


def test_example_project_syncs_cleanly_and_broken_acls_are_private(ws: Workspace) -> None:
    """The shipped example: every document parses; its broken-ACL folder is indexed private (fail closed)."""
    original = yaml.safe_load((EXAMPLE / "charter.yaml").read_text(encoding="utf-8"))
    sources = original["sources"] + [
        {
            "id": "team-notes",
            "connector": "folder",
            "location": "sources/broken-acl",
            "owner": "lena",
            "sensitivity": "internal",
            "permissions": {"model": "per-document"},
            "freshness": {"max_age": "30d"},
        }
    ]
    ws.configure(sources)
    out = ws.sync()
    for sid in ("help-center", "playbook", "finance-policies", "pricing-committee"):
        assert out[sid].status == "succeeded" and out[sid].failed == 0, out[sid].as_dict()
        assert out[sid].private_by_default == 0, out[sid].private
        assert out[sid].added >= 3
    notes = out["team-notes"]
    assert notes.private_by_default == notes.added >= 2
    index = Index.for_runtime(ws.rt)
    for user in ("ana", "ben", "farid", "omar", "casey"):
        tokens = ws.rt.charter.principal(user).acl_tokens
        hits = index.search(tokens, "helpdesk macro cleanup offsite notes", k=20)
        assert all(h.source_id != "team-notes" for h in hits), user
    assert any(
        h.source_id == "team-notes"
        for h in index.search(
            ws.rt.charter.principal("lena").acl_tokens, "helpdesk macro cleanup offsite notes", k=20
        )
    )
