"""Guidance in errors: every gate problem says what to do next, and a source approved with
``charter sources approve SOURCE`` is recorded in the database without changing the charter's fingerprint."""

from __future__ import annotations

from pathlib import Path

import yaml

from charter.gate._checks import check_evaluation, check_owners, check_scope_static, check_sources
from charter.gate._types import CHECK_IDS, NEXT_STEPS, CheckResult
from charter.runtime import Runtime
from charter.store import utcnow
from tests.conftest import run_cli


def test_every_check_has_a_default_next_step() -> None:
    assert set(NEXT_STEPS) == set(CHECK_IDS)
    for cid in CHECK_IDS:
        c = CheckResult(cid, cid, "scope", None)
        assert c.add("fail", "x").fix == NEXT_STEPS[cid]
        assert c.add("warn", "y").fix == NEXT_STEPS[cid]
        assert c.add("pass", "z", fix="ignored").fix is None
        assert c.add("fail", "w", fix="charter sync").as_dict()["fix"] == "charter sync"


def _drop_approval(path: Path, source_id: str) -> None:
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    for s in doc["sources"]:
        if s["id"] == source_id:
            s.pop("approval", None)
    doc["scope"]["out_of_scope"] = []
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")


def test_source_approval_in_the_database_keeps_the_fingerprint(synced_project: Path) -> None:
    _drop_approval(synced_project, "help-center")
    rt = Runtime.open(synced_project)
    try:
        before = rt.fingerprint
        c = CheckResult("sources", "Sources", "sources", None)
        check_sources(rt, c, utcnow())
        missing = [f for f in c.findings if f.message == "help-center: no approval record"]
        assert (
            missing
            and missing[0].fix
            and missing[0].fix.startswith("charter sources approve help-center --as omar")
        )
    finally:
        rt.close()
    # someone else may not approve (refused, audited); the owner may
    denied = run_cli("sources", "approve", "help-center", "--as", "ana", "--charter", str(synced_project))
    assert denied.exit_code != 0
    ok = run_cli(
        "sources", "approve", "help-center", "--as", "omar", "--json", "--charter", str(synced_project)
    )
    assert ok.exit_code == 0, ok.stderr
    rt = Runtime.open(synced_project)
    try:
        assert rt.fingerprint == before  # the charter did not change: eval runs stay valid
        from charter.sources import approval_status

        a = approval_status(rt, rt.spec.source("help-center"))
        assert a["state"] == "approved" and a["by"] == "omar" and a["recorded_in"] == "database"
        c = CheckResult("sources", "Sources", "sources", None)
        check_sources(rt, c, utcnow())
        assert not [f for f in c.findings if f.message.startswith("help-center: no approval")]
        assert [f for f in c.findings if f.message.startswith("help-center: approved by omar")]
        events = rt.audit.tail(2, action="sources.approved")
        assert [(e.actor, e.outcome) for e in events] == [("ana", "denied"), ("omar", "approved")]
    finally:
        rt.close()
    # a configuration change after the approval is caught, with the command that fixes it
    doc = yaml.safe_load(synced_project.read_text(encoding="utf-8"))
    doc["sources"][0]["sensitivity"] = "internal"
    synced_project.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    rt = Runtime.open(synced_project)
    try:
        c = CheckResult("sources", "Sources", "sources", None)
        check_sources(rt, c, utcnow())
        changed = [f for f in c.findings if "configuration changed since approval" in f.message]
        assert changed and "charter sources approve help-center --as omar" in (changed[0].fix or "")
    finally:
        rt.close()


def test_representative_gate_problems_say_what_to_do(synced_project: Path) -> None:
    _drop_approval(synced_project, "help-center")
    rt = Runtime.open(synced_project)
    try:
        scope = CheckResult("scope", "Scope", "scope", None)
        check_scope_static(rt, scope)
        empty = [f for f in scope.findings if f.message == "scope.out_of_scope is empty"]
        assert empty and "scope.out_of_scope" in (empty[0].fix or "")
        ev = CheckResult("evaluation", "Evaluation", "failures", None)
        check_evaluation(rt, ev, None, utcnow())
        assert ev.findings[0].status == "fail" and ev.findings[0].fix == "charter eval --permission-probes"
        owners = CheckResult("owners", "Owners", "scope", None)
        check_owners(rt, owners)
        assert all(f.fix for f in owners.findings if f.status != "pass")
        src = CheckResult("sources", "Sources", "sources", None)
        check_sources(rt, src, utcnow())
        for f in src.findings:
            if f.status != "pass":
                assert f.fix and ("charter " in f.fix or "." in f.fix), f
    finally:
        rt.close()
