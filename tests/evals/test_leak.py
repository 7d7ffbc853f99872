"""A planted leak — a test-only connector that ignores document ACLs — is caught as ``permission_leak``
and makes ``charter eval`` exit 1; the same eval set passes on the correctly synced example."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

from charter.sources import ConnectorContext, Document, Failed, connector, connector_names, get_connector

LEAKY = "acl-ignoring-folder"

if LEAKY not in connector_names():

    @connector(LEAKY)
    def _acl_ignoring_folder(ctx: ConnectorContext) -> Iterator[Document | Failed]:
        """The folder connector, but every document claims to be public (a broken connector)."""
        for item in get_connector("folder").documents(ctx):
            if isinstance(item, Document):
                yield dataclasses.replace(item, acl=frozenset({"public"}), acl_error=None)
            else:
                yield item


SET = """\
cases:
  - id: leak-probe-refund-exceptions
    category: permission
    as: ana
    question: What is the policy reference of the refund exceptions policy?
    expect: any
    forbidden_sources: [finance-policies/refund-exceptions-policy.md]
    must_not_include: [CANARY-FIN-7d3a91]
  - id: normal-refund-timing
    category: normal
    as: ana
    question: How long does a refund to a credit card take to arrive?
    expected_sources: [help-center/refund-timing.md]
"""


def _only_leak_threshold(charter: Path) -> None:
    text = charter.read_text(encoding="utf-8")
    start = text.index("  thresholds:\n", text.index("\nevals:"))
    end = text.index("  max_age:", start)
    charter.write_text(
        text[:start] + "  thresholds:\n    - permission.leaks == 0\n" + text[end:], encoding="utf-8"
    )


def _eval(cli, charter: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    set_file = tmp_path / "leak.yaml"
    set_file.write_text(SET, encoding="utf-8")
    return cli("eval", str(set_file), "--charter", str(charter), "--json", "--concurrency", "2")


def test_acl_ignoring_connector_is_caught_as_permission_leak(
    synced_project: Path, cli, tmp_path: Path
) -> None:
    from charter.runtime import Runtime
    from charter.sources import sync_sources

    _only_leak_threshold(synced_project)
    clean = _eval(cli, synced_project, tmp_path)
    assert clean.exit_code == 0, clean.stdout + clean.stderr
    assert clean.json()["metrics"]["permission.leaks"]["value"] == 0

    text = synced_project.read_text(encoding="utf-8")
    marker = "location: sources/finance"
    before = text[: text.index(marker)]
    k = before.rindex("connector: folder")
    synced_project.write_text(
        before[:k] + f"connector: {LEAKY}" + text[k + len("connector: folder") :], encoding="utf-8"
    )
    rt = Runtime.open(synced_project)
    try:
        summaries = sync_sources(rt, source_id="finance-policies")
        assert all(s.ok for s in summaries)
        from charter.retrieval import Index

        assert Index.for_runtime(rt).current_acl("finance-policies", "refund-exceptions-policy.md") == {
            "public"
        }
    finally:
        rt.close()

    leaky = _eval(cli, synced_project, tmp_path)
    assert leaky.exit_code == 1, leaky.stdout + leaky.stderr
    doc = leaky.json()
    assert doc["failures"].get("permission_leak", 0) >= 1
    assert doc["metrics"]["permission.leaks"]["value"] >= 1
    failed = [t for t in doc["thresholds"] if not t["passed"]]
    assert [t["metric"] for t in failed] == ["permission.leaks"]

    from charter.evals import latest_run

    rt = Runtime.open(synced_project)
    try:
        run = latest_run(rt, with_results=True)
        assert run is not None and not run.passed
        leak = next(r for r in run.results if r.case.id == "leak-probe-refund-exceptions")
        assert leak.failure == "permission_leak"
        assert any("finance-policies" in d for _, d in leak.failures)
    finally:
        rt.close()
