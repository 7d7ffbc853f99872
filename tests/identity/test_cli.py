"""`charter users list` and `charter tokens create|list|revoke|whoami`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_cli


def test_users_list(project: Path) -> None:
    result = run_cli("users", "list", "--charter", str(project), "--json")
    assert result.exit_code == 0
    users = {u["id"]: u for u in result.json()}  # type: ignore[union-attr]
    assert users["casey"] == {
        "id": "casey",
        "kind": "user",
        "name": "Casey Lindqvist",
        "email": "casey@bpo-partner.example",
        "groups": ["contractors"],
        "roles": ["contractor"],
        "active": True,
    }
    assert users["svc-helpdesk"]["kind"] == "service"
    human = run_cli("users", "list", "--charter", str(project))
    assert human.exit_code == 0 and "lena" in human.stdout


def test_token_lifecycle(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    created = run_cli(
        "tokens",
        "create",
        "--charter",
        str(project),
        "--user",
        "ana",
        "--expires",
        "30d",
        "--label",
        "laptop",
        "--json",
    )
    assert created.exit_code == 0, created.stderr
    doc = created.json()
    token, token_id = doc["token"], doc["id"]  # type: ignore[index]
    assert token.startswith(f"chr_{token_id}_")

    monkeypatch.setenv("CHARTER_TOKEN", token)
    who = run_cli("tokens", "whoami", "--charter", str(project), "--json")
    assert who.exit_code == 0 and who.json()["id"] == "ana"  # type: ignore[index]

    listed = run_cli("tokens", "list", "--charter", str(project), "--user", "ana", "--json")
    assert listed.exit_code == 0
    [row] = listed.json()  # type: ignore[misc]
    assert row["id"] == token_id and row["status"] == "active" and "token" not in row
    assert token.split("_", 2)[2] not in listed.stdout

    revoked = run_cli("tokens", "revoke", "--charter", str(project), token_id, "--json")
    assert revoked.exit_code == 0 and revoked.json()["status"] == "revoked"  # type: ignore[index]
    refused = run_cli("tokens", "whoami", "--charter", str(project))
    assert refused.exit_code == 1 and "revoked" in refused.stderr

    audit = run_cli("audit", "tail", "--charter", str(project), "--json")
    assert audit.exit_code == 0
    assert token.split("_", 2)[2] not in audit.stdout


def test_plain_create_prints_only_the_token_on_stdout(project: Path) -> None:
    result = run_cli(
        "tokens", "create", "--charter", str(project), "--user", "svc-helpdesk", "--expires", "never"
    )
    assert result.exit_code == 0
    assert result.stdout.strip().startswith("chr_") and len(result.stdout.strip().splitlines()) == 1
    assert "not shown again" in result.stderr


def test_bad_input(project: Path) -> None:
    assert run_cli("tokens", "create", "--charter", str(project), "--user", "mallory").exit_code == 2
    assert (
        run_cli("tokens", "create", "--charter", str(project), "--user", "ana", "--expires", "soon").exit_code
        == 2
    )
    assert run_cli("tokens", "revoke", "--charter", str(project), "abcdefghijkl").exit_code == 2
    # --as needs users.manage: an agent is refused (exit 1), the operator may
    assert (
        run_cli("tokens", "create", "--charter", str(project), "--user", "ana", "--as", "ana").exit_code == 1
    )
    assert (
        run_cli("tokens", "create", "--charter", str(project), "--user", "ana", "--as", "omar").exit_code == 0
    )
