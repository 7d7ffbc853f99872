"""The launch gate on the billing example: intact it passes and its signed report verifies; each test
breaks exactly one launch item in a copy and the gate fails with that check only, naming its owner."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.gate.conftest import edit_yaml, rebind_eval


def gate(charter: Path):  # type: ignore[no-untyped-def]
    from charter.gate import run_gate
    from charter.runtime import Runtime

    rt = Runtime.open(charter)
    try:
        return run_gate(rt)
    finally:
        rt.close()


def assert_only(result, check_id: str, owner: str) -> None:  # type: ignore[no-untyped-def]
    detail = {c.id: [f.message for f in c.findings if f.status == "fail"] for c in result.checks}
    assert result.failed == [check_id], detail
    assert result.check(check_id).owner == owner


def test_intact_example_passes_and_report_verifies(gated_project: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    res = run_cli("gate", "--report", str(out), "--json", "-c", str(gated_project))
    data = res.json()
    assert res.exit_code == 0, [
        (c["id"], [f["message"] for f in c["findings"] if f["status"] != "pass"]) for c in data["checks"]
    ]
    assert [c["id"] for c in data["checks"]] == [
        "scope",
        "sources",
        "evaluation",
        "review",
        "monitoring",
        "cost_latency",
        "owners",
    ]
    assert data["status"] in ("pass", "warn")
    assert data["duration_s"] < 120  # the acceptance bound for the whole gate on this example
    assert {p.name for p in out.iterdir()} == {
        "gate-report.json",
        "gate-report.md",
        "gate-report.html",
        "gate-report.sig.json",
    }
    ok = run_cli("gate", "verify", str(out), "-c", str(gated_project))
    assert ok.exit_code == 0, ok.stdout + ok.stderr
    # one edited byte in any report file fails verification
    for name in ("gate-report.json", "gate-report.md", "gate-report.html", "gate-report.sig.json"):
        p = out / name
        original = p.read_bytes()
        i = original.index(b"pass") if b"pass" in original else len(original) // 2
        p.write_bytes(original[:i] + bytes([original[i] ^ 0x01]) + original[i + 1 :])
        bad = run_cli("gate", "verify", str(out), "-c", str(gated_project))
        assert bad.exit_code == 1, name
        p.write_bytes(original)
    assert run_cli("gate", "verify", str(out / "gate-report.md"), "-c", str(gated_project)).exit_code == 0
    # recorded in the audit log, and the chain still verifies
    from charter.runtime import Runtime

    rt = Runtime.open(gated_project)
    try:
        latest = rt.get_state("gate.latest")
        assert latest["id"] == data["id"] and latest["report_files"]
        assert rt.audit.verify().ok
    finally:
        rt.close()
    # strict mode: the example has no OTLP exporter, a warning, so --strict fails
    strict = run_cli("gate", "--strict", "--json", "-c", str(gated_project))
    assert strict.exit_code == 1 and strict.json()["status"] == "fail"


def test_vague_scope(gated_project: Path) -> None:
    edit_yaml(gated_project, lambda d: d["scope"].update(job="Automate support."))
    rebind_eval(gated_project)
    assert_only(gate(gated_project), "scope", "lena")


def test_unapproved_source(gated_project: Path) -> None:
    edit_yaml(gated_project, lambda d: d["sources"][1].pop("approval"))
    rebind_eval(gated_project)
    res = gate(gated_project)
    assert_only(res, "sources", "omar")
    assert any("playbook: no approval record" in f.message for f in res.check("sources").findings)


def test_stale_source(gated_project: Path) -> None:
    from sqlalchemy import update

    from charter.runtime import Runtime
    from charter.store import utcnow
    from charter.store.tables import source_state

    rt = Runtime.open(gated_project)
    try:
        with rt.store.begin() as conn:
            conn.execute(
                update(source_state)
                .where(source_state.c.source_id == "help-center")
                .values(last_success_at=utcnow() - timedelta(days=45))
            )
    finally:
        rt.close()
    res = gate(gated_project)
    assert_only(res, "sources", "omar")
    assert any("help-center: stale" in f.message for f in res.check("sources").findings)


def test_failing_eval(gated_project: Path) -> None:
    edit_yaml(gated_project, lambda d: d["evals"]["thresholds"].append("retrieval.recall@5 >= 0.9999"))
    rebind_eval(gated_project)
    assert_only(gate(gated_project), "evaluation", "lena")


def test_eval_for_old_prompt_version(gated_project: Path) -> None:
    from charter.models import PromptRegistry
    from charter.runtime import Runtime

    edit_yaml(gated_project, lambda d: d["prompts"][0].update(active="v1"))
    rt = Runtime.open(gated_project)
    try:
        PromptRegistry(rt.charter, rt.store, audit=lambda **e: rt.audit.append(**e)).approve(
            "draft_reply", "v1", principal=rt.charter.principal("lena")
        )
    finally:
        rt.close()
    res = gate(gated_project)
    assert_only(res, "evaluation", "lena")
    assert any(
        "no eval run for the current charter fingerprint" in f.message
        for f in res.check("evaluation").findings
    )


def test_self_approval_through_bad_custom_policy(gated_project: Path) -> None:
    from charter.gate import approve_policies
    from charter.runtime import Runtime

    policy = gated_project.parent / "policies" / "billing.cedar"
    policy.write_text(
        policy.read_text() + '\n@id("anyone-approves")\npermit (principal, action == '
        'Charter::Action::"tools.approve", resource);\n'
    )
    rt = Runtime.open(gated_project)
    try:  # the bad policy set even carries a (mistaken) approval, so only the drill can catch it
        approve_policies(rt, rt.charter.principal("lena"))
    finally:
        rt.close()
    rebind_eval(gated_project)
    res = gate(gated_project)
    assert_only(res, "review", "omar")
    assert any("PERMITS the requester" in f.message for f in res.check("review").findings)


def test_masking_disabled(gated_project: Path) -> None:
    edit_yaml(gated_project, lambda d: d["monitoring"].update(masking="off"))
    rebind_eval(gated_project)
    res = gate(gated_project)
    assert_only(res, "monitoring", "omar")
    assert any("NOT masked" in f.message for f in res.check("monitoring").findings)


def test_budget_below_measured_cost(gated_project: Path) -> None:
    def change(d: dict) -> None:  # type: ignore[type-arg]
        d["model"]["prices"] = {"input_per_1k": 0.001, "output_per_1k": 0.003}
        d["budgets"]["monthly_usd"] = 5

    edit_yaml(gated_project, change)
    rebind_eval(gated_project)
    res = gate(gated_project)
    assert_only(res, "cost_latency", "farid")
    findings = res.check("cost_latency").findings
    assert any("monthly projection" in f.message and f.status == "fail" for f in findings)


def test_missing_owner(gated_project: Path) -> None:
    users = gated_project.parent / "users.yaml"
    pat = {"id": "pat", "name": "Pat Former", "email": "pat@quillo.example"}  # no role left in the workflow
    edit_yaml(users, lambda d: d["users"].append(pat))
    edit_yaml(gated_project, lambda d: d["owners"].update(cost="pat"))
    rebind_eval(gated_project)
    res = gate(gated_project)
    assert_only(res, "owners", "lena")
    assert any("owners.cost: pat holds no role" in f.message for f in res.check("owners").findings)


def test_only_the_owners_approve(gated_project: Path) -> None:
    res = run_cli("gate", "approve-policies", "--as", "ben", "-c", str(gated_project))
    assert res.exit_code != 0
    res = run_cli("gate", "ack-private", "ops-notes", "--as", "omar", "-c", str(gated_project))
    assert res.exit_code != 0
    assert run_cli("gate", "approve-policies", "--as", "lena", "-c", str(gated_project)).exit_code == 0


@pytest.mark.parametrize("mode", ["restrict", "kill"])
def test_drift_regression_notifies_and_applies(gated_project: Path, mode: str, caplog) -> None:  # type: ignore[no-untyped-def]
    from sqlalchemy import update

    from charter.gate import is_restricted
    from charter.runtime import Runtime
    from charter.store import utcnow
    from charter.store.tables import source_state
    from charter.tools import is_killed

    edit_yaml(gated_project, lambda d: d["drift"].update(on_regression=mode, notify="log"))
    rebind_eval(gated_project)
    first = run_cli("gate", "--watch", "--once", "--json", "-c", str(gated_project))
    assert first.exit_code == 0, first.stdout
    rt = Runtime.open(gated_project)
    try:
        assert not is_restricted(rt) and not is_killed(rt)
        with rt.store.begin() as conn:
            conn.execute(update(source_state).values(last_success_at=utcnow() - timedelta(days=400)))
    finally:
        rt.close()
    res = run_cli("gate", "--watch", "--once", "--json", "-c", str(gated_project))
    assert res.exit_code == 1
    data = json.loads(res.stdout)
    assert data["failed"] == ["sources"] and data["action"]["owners"] == {"sources": "omar"}
    rt = Runtime.open(gated_project)
    try:
        assert is_restricted(rt) == (mode == "restrict")
        assert is_killed(rt) == (mode == "kill")
        assert rt.audit.verify().ok
    finally:
        rt.close()
