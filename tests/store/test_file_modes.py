"""Everything Charter writes to disk is private (folders 0700, files 0600) whatever the umask, and wider
modes are reported by ``charter check`` (warning, with the chmod that fixes it) and failed by the gate."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import run_cli

from charter.gate._checks import check_storage_modes
from charter.gate._types import CheckResult
from charter.runtime import Runtime


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def loose_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the common default: without explicit modes, files would be 0644, folders 0755
    try:
        yield
    finally:
        os.umask(old)


def test_database_wal_shm_keys_anchor_and_reports_are_private(
    unopened_project: Path, loose_umask: None
) -> None:
    project = unopened_project  # the first open creates the folder and the database
    rt = Runtime.open(project)
    try:
        for i in range(3):
            rt.audit.append(
                actor="ana", action="test.event", resource="workflow:x", outcome="ok", details={"i": i}
            )
        rt.audit.checkpoint()  # writes the anchor beside the key
        base = project.parent / ".charter"
        db = base / "charter.db"
        assert (base / "charter.db-wal").exists() and (base / "charter.db-shm").exists()
        assert _mode(base) == 0o700
        for f in (db, base / "charter.db-wal", base / "charter.db-shm"):
            assert _mode(f) == 0o600, (f, oct(_mode(f)))
        assert _mode(rt.key_dir) == 0o700
        key_files = [p for p in rt.key_dir.iterdir() if p.is_file()]
        assert any(p.name.startswith("audit-anchor") for p in key_files)
        for f in key_files:
            assert _mode(f) == 0o600, (f, oct(_mode(f)))

        from charter.gate import run_gate
        from charter.gate._report import write_report

        result = run_gate(rt, only=["owners"], drills=False)
        out = project.parent / "reports" / "gate"
        write_report(rt, result, out)
        assert _mode(out) == 0o700
        for f in out.iterdir():
            assert _mode(f) == 0o600, (f, oct(_mode(f)))

        c = CheckResult("sources", "t", "sources", None)
        check_storage_modes(rt, c)
        assert c.status == "pass", [f.message for f in c.findings]
    finally:
        rt.close()


def test_check_warns_and_gate_fails_on_wider_modes(project: Path, loose_umask: None) -> None:
    rt = Runtime.open(project)
    try:
        base = project.parent / ".charter"
        (base / "charter.db").chmod(0o644)
        base.chmod(0o755)
        c = CheckResult("sources", "t", "sources", None)
        check_storage_modes(rt, c)
        assert c.status == "fail"
        fixes = {f.fix for f in c.findings if f.status == "fail"}  # the chmod that fixes each
        assert f"chmod 600 {base / 'charter.db'}" in fixes and f"chmod 700 {base}" in fixes
    finally:
        rt.close()
    res = run_cli("check", str(project), "--json")
    assert res.exit_code == 0, res.stderr
    warnings = res.json()["warnings"]  # type: ignore[index]
    assert {w["path"] for w in warnings} >= {str(base), str(base / "charter.db")}
    text = run_cli("check", str(project))
    assert "warning" in text.stdout and "chmod 600" in text.stdout
    os.chmod(base / "charter.db", 0o600)
    base.chmod(0o700)
    assert run_cli("check", str(project), "--json").json()["warnings"] == []  # type: ignore[index]
