"""A runtime on a fresh copy of the billing-support example."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from charter.runtime import Runtime


@pytest.fixture
def rt(project: Path) -> Iterator[Runtime]:
    runtime = Runtime.open(project)
    yield runtime
    runtime.close()
