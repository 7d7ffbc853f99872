"""``charter audit verify`` and ``charter audit tail`` on the example project, tampered with raw SQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from _audit_helpers import RawDB, fill

from charter.runtime import Runtime
from charter.telemetry.audit import AuditLog


@pytest.fixture
def filled(project: Path) -> tuple[Path, RawDB]:
    """The example project with 25 more audit entries, checkpointed every 10."""
    rt = Runtime.open(project)
    try:
        fill(AuditLog(rt.store, key_dir=rt.key_dir, checkpoint_every=10), 25)
    finally:
        rt.close()
    return project, RawDB(project.parent / ".charter" / "charter.db")


def test_verify_intact_prints_the_count(filled: tuple[Path, RawDB], cli) -> None:  # type: ignore[no-untyped-def]
    project, _ = filled
    total = 26  # charter.changed on first open + 25
    res = cli("audit", "verify", "--charter", str(project))
    assert res.exit_code == 0, res.stderr
    assert f"{total} entries verified" in res.stdout
    res = cli("audit", "verify", "--json", "--charter", str(project))
    doc = res.json()
    assert res.exit_code == 0 and doc["ok"] is True and doc["entries_verified"] == total
    assert doc["first_bad_seq"] is None and doc["last_checkpoint_seq"] == total  # the first run signed it


def test_verify_finds_the_charter_from_the_current_folder(filled: tuple[Path, RawDB], cli) -> None:  # type: ignore[no-untyped-def]
    project, _ = filled
    res = cli("audit", "verify", cwd=project.parent)
    assert res.exit_code == 0 and "26 entries verified" in res.stdout


def _flip(raw: RawDB) -> None:
    h = str(raw.row(7)["hash"])
    raw.execute("UPDATE audit_log SET hash = ? WHERE seq = 7", (h[:-1] + ("0" if h[-1] != "0" else "1"),))


def _swap(raw: RawDB) -> None:
    a, b = raw.row(7), raw.row(8)
    for src, dst in ((b, 7), (a, 8)):
        raw.execute(
            "UPDATE audit_log SET actor = ?, action = ?, resource = ?, outcome = ?, details = ?, "
            "prev_hash = ?, hash = ? WHERE seq = ?",
            (
                src["actor"],
                src["action"],
                src["resource"],
                src["outcome"],
                src["details"],
                src["prev_hash"],
                src["hash"],
                dst,
            ),
        )


def _rehash(raw: RawDB) -> None:
    raw.execute("UPDATE audit_log SET actor = 'mallory' WHERE seq = 7")
    raw.rehash_from(7)


CASES = {
    "flip-one-byte": (_flip, 7),
    "delete-a-row": (lambda raw: raw.execute("DELETE FROM audit_log WHERE seq = 7"), 7),
    "swap-two-rows": (_swap, 7),
    "truncate-the-tail": (lambda raw: raw.execute("DELETE FROM audit_log WHERE seq > 15"), 16),
    "rewrite-and-rehash": (_rehash, 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_verify_exits_1_naming_the_first_bad_entry(case: str, filled: tuple[Path, RawDB], cli) -> None:  # type: ignore[no-untyped-def]
    project, raw = filled
    tamper, bad = CASES[case]
    tamper(raw)
    res = cli("audit", "verify", "--charter", str(project))
    assert res.exit_code == 1
    assert f"FAILED at entry {bad}:" in res.stderr
    res = cli("audit", "verify", "--json", "--charter", str(project))
    doc = res.json()
    assert res.exit_code == 1 and doc["ok"] is False and doc["first_bad_seq"] == bad and doc["reason"]


def test_expect_at_least_catches_a_cut_unsigned_tail(filled: tuple[Path, RawDB], cli) -> None:  # type: ignore[no-untyped-def]
    project, raw = filled
    raw.execute("DELETE FROM audit_log WHERE seq > 23")  # after the checkpoint at 20, before any verify
    res = cli("audit", "verify", "--no-checkpoint", "--charter", str(project))
    assert res.exit_code == 0 and "23 entries verified" in res.stdout
    assert "after the last signed checkpoint" in res.stdout
    res = cli("audit", "verify", "--expect-at-least", "26", "--charter", str(project))
    assert res.exit_code == 1 and "FAILED at entry 24" in res.stderr and "truncated" in res.stderr


def test_tail_table_and_json(filled: tuple[Path, RawDB], cli) -> None:  # type: ignore[no-untyped-def]
    project, _ = filled
    res = cli("audit", "tail", "-n", "3", "--json", "--charter", str(project))
    rows = res.json()
    assert res.exit_code == 0 and [r["seq"] for r in rows] == [24, 25, 26]  # type: ignore[index]
    assert rows[0]["details"]["note"] == "ünïcödé ✓"  # type: ignore[index]
    res = cli("audit", "tail", "--action", "charter.changed", "--json", "--charter", str(project))
    assert [r["action"] for r in res.json()] == ["charter.changed"]  # type: ignore[union-attr]
    res = cli("audit", "tail", "-n", "5", "--charter", str(project))
    assert res.exit_code == 0 and "policy.denied" in res.stdout and "seq" in res.stdout
    res = cli("audit", "tail", "--action", "no.such", "--charter", str(project))
    assert res.exit_code == 0 and "no audit events" in res.stdout
