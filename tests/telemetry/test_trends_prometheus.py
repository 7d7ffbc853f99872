"""The shipped Prometheus alerting rules: `promtool check rules` and `promtool test rules` (one unit test per
alert, each with a quiet and a firing case) must pass. promtool comes from Debian's `prometheus` package,
which `scripts/setup` installs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROM = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = PROM / "charter-alerts.yaml"
TESTS = [PROM / "charter-alerts.test.yaml", PROM / "charter-alerts-escalation.test.yaml"]
ALERTS = {
    "CharterBudgetBurn",
    "CharterEscalationSpike",
    "CharterLatencySLOBurnFast",
    "CharterLatencySLOBurnSlow",
    "CharterSyncFreshnessBreach",
    "CharterAuditVerificationFailed",
    "CharterKillSwitchEngaged",
}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is missing: install Debian's prometheus package "
            "(scripts/setup does it: apt-get install --no-install-recommends prometheus)"
        )
    return found


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *args], cwd=PROM, capture_output=True, text=True, timeout=600)


def test_promtool_check_rules() -> None:
    r = _run("check", "rules", RULES.name)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


@pytest.mark.slow  # runs Debian's promtool: an external binary, full suite only
def test_promtool_test_rules() -> None:
    r = _run("test", "rules", *(t.name for t in TESTS))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert alerts == ALERTS
    firing: set[str] = set()
    quiet: set[str] = set()
    for t in (case for f in TESTS for case in yaml.safe_load(f.read_text())["tests"]):
        for case in t.get("alert_rule_test", []):
            (firing if case["exp_alerts"] else quiet).add(case["alertname"])
    assert firing == ALERTS and quiet == ALERTS


@pytest.mark.slow  # runs Debian's promtool: an external binary, full suite only
def test_a_broken_rule_fails_its_unit_test(tmp_path: Path) -> None:
    """The unit tests can fail: with the spike factor raised from 2 to 7 the escalation test must fail."""
    for p in (RULES, *TESTS):
        shutil.copy(p, tmp_path / p.name)
    broken = tmp_path / RULES.name
    text = broken.read_text()
    assert ">= on (workflow, reason) 2 *" in text
    broken.write_text(text.replace(">= on (workflow, reason) 2 *", ">= on (workflow, reason) 7 *"))
    r = subprocess.run(
        [_promtool(), "test", "rules", TESTS[1].name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode != 0 and "CharterEscalationSpike" in r.stdout + r.stderr


def exported_names(rules_text: str) -> set[str]:
    """Metric names a PromQL text reads (recording rule names contain ':' and are skipped)."""
    return set(re.findall(r"\b(charter_[a-z0-9_]+)\b", rules_text))
