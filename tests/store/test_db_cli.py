"""``charter db status`` / ``charter db upgrade`` on both backends: an empty database is behind (exit 1),
upgrade brings it to the head once (idempotent), and the password never appears in the output."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from tests.conftest import run_cli


def test_status_and_upgrade(project: Path, empty_db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHARTER_DATABASE_URL", empty_db_url)
    c = str(project)
    res = run_cli("db", "status", "--json", "-c", c)
    assert res.exit_code == 1, res.stderr
    doc = res.json()
    assert doc["revision"] is None and doc["up_to_date"] is False  # type: ignore[index]
    head = doc["head"]  # type: ignore[index]
    res = run_cli("db", "upgrade", "--json", "-c", c)
    assert res.exit_code == 0, res.stderr
    assert res.json() == {**res.json(), "from": None, "to": head, "changed": True}  # type: ignore[dict-item]
    again = run_cli("db", "upgrade", "--json", "-c", c).json()
    assert again["changed"] is False and again["to"] == head  # type: ignore[index]
    res = run_cli("db", "status", "-c", c)
    # Rich folds the line at 80 columns when stdout is not a terminal: between words, and inside a long URL
    assert res.exit_code == 0 and "up to date" in " ".join(res.stdout.split()), res.stdout
    password = make_url(empty_db_url).password
    if password:
        assert str(password) not in "".join(res.stdout.split())


def test_password_is_hidden_in_the_output(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A URL with a password that cannot connect: the error names the database, never the secret."""
    from charter.cli._db import _redacted

    assert "s3cret" not in _redacted("postgresql+psycopg://charter:s3cret@db.internal:5432/charter")
    assert "***" in _redacted("postgresql+psycopg://charter:s3cret@db.internal:5432/charter")
