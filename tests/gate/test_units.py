"""Small, fast pieces of the gate: vague jobs, intervals, exported names."""

from __future__ import annotations

import pytest

import charter.gate
from charter.cli._gate import parse_interval
from charter.errors import UsageError
from charter.gate._checks import vague_job


@pytest.mark.parametrize("job", ["Support.", "automate support", "Help customers with questions and tickets "
                                 "and support and stuff"])
def test_vague_jobs_are_flagged(job: str) -> None:
    assert vague_job(job)


def test_specific_job_passes() -> None:
    assert vague_job("Draft replies to customer billing questions for support agents, citing the help "
                     "centre") is None


def test_interval() -> None:
    assert parse_interval("1h") == 3600 and parse_interval("30s") == 30 and parse_interval("15m") == 900
    with pytest.raises(UsageError):
        parse_interval("soon")


def test_exported_names() -> None:
    assert set(charter.gate.__all__) == {n for n in dir(charter.gate) if not n.startswith("_")} - {
        "annotations"}
