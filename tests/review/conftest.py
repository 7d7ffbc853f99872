"""Runtimes on a fresh copy of the billing-support example (plain, or synced with a second lead)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from charter.runtime import Runtime

#: A second support lead, so that a lead's edit can be approved by another lead (four-eyes on edits).
SECOND_LEAD = "  - {id: leo, name: Leo Brandt, email: leo@quillo.example, groups: [support, support-leads], roles: [lead]}\n"


def add_user(charter: Path, line: str) -> None:
    """Add a user line to the example's users.yaml (before the service accounts)."""
    users = charter.parent / "users.yaml"
    text = users.read_text(encoding="utf-8")
    if line not in text:
        users.write_text(text.replace("\nservice_accounts:", line + "\nservice_accounts:"), encoding="utf-8")


@pytest.fixture
def rt(project: Path) -> Iterator[Runtime]:
    runtime = Runtime.open(project)
    yield runtime
    runtime.close()


@pytest.fixture
def synced_rt(synced_project: Path) -> Iterator[Runtime]:
    """Synced, with a second lead: drafts are routed by who may read the documents they cite (their ACLs
    live in the index), and a lead's edit needs another lead."""
    add_user(synced_project, SECOND_LEAD)
    runtime = Runtime.open(synced_project)
    yield runtime
    runtime.close()
