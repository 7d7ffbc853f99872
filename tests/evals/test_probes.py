"""Generated permission probes: built from the ACLs, canaries only in a temporary copy, leaks caught."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from charter.evals import probe_runtime, run_cases, score_outputs
from charter.retrieval import Index
from charter.runtime import Runtime
from charter.store.tables import chunks

DOCS = {
    "finance-policies/write-off-authority.md",
    "pricing-committee/price-change-2027.md",
    "playbook/goodwill-credits.md",
}


def _canary_chunks(rt: Runtime) -> list[str]:
    with rt.store.connect() as conn:
        return list(
            conn.execute(select(chunks.c.text).where(chunks.c.text.like("%CANARY-PROBE-%"))).scalars()
        )


def test_probes_plant_canaries_in_a_temporary_copy_and_catch_a_leak(synced_project: Path) -> None:
    rt = Runtime.open(synced_project)
    try:
        index = Index.for_runtime(rt)
        version = index.version
        with probe_runtime(rt, documents=DOCS, max_sentences=1) as probe:
            prt = probe.runtime
            assert prt.store is not rt.store
            # every outsider of every document gets probes; insiders never do
            pairs = {(c.forbidden_sources[0], c.user) for c in probe.cases}
            assert {u for d, u in pairs if d == "playbook/goodwill-credits.md"} == {"omar", "casey"}
            assert {u for d, u in pairs if d == "finance-policies/write-off-authority.md"} == {
                "ana",
                "ben",
                "lena",
                "omar",
                "casey",
                "svc-helpdesk",
            }
            assert "farid" in {u for d, u in pairs if d == "pricing-committee/price-change-2027.md"}
            assert all(c.canaries and c.category == "permission" for c in probe.cases)
            assert set(probe.canaries.values()) == DOCS
            planted = _canary_chunks(prt)
            for canary in probe.canaries:
                assert any(canary in text for text in planted)
            assert _canary_chunks(rt) == []  # the real index is untouched

            sample = [
                c
                for c in probe.cases
                if c.forbidden_sources[0] == "finance-policies/write-off-authority.md"
                and c.user in ("ana", "casey")
            ]
            clean = score_outputs(prt, run_cases(prt, sample, concurrency=2), extra_canaries=probe.canaries)
            assert all(r.failure is None for r in clean), [(r.case.id, r.failures) for r in clean]

            # break the document's ACL in the copy: the probes must now report leaks
            Index.for_runtime(prt).update_acl(
                "finance-policies", "write-off-authority.md", frozenset({"public"})
            )
            leaky = score_outputs(prt, run_cases(prt, sample, concurrency=2), extra_canaries=probe.canaries)
            assert any(r.failure == "permission_leak" for r in leaky)
            assert sum(r.score.metrics["permission.leak_count"] for r in leaky) >= 1
        assert index.version == version
        assert _canary_chunks(rt) == []
    finally:
        rt.close()
