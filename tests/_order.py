"""The order modules run in: the longest first, so that two xdist workers finish together.

``scripts/test`` runs the suite with ``--dist loadfile`` (a module's tests stay in one worker: they share its
fixtures) and ``--no-loadscope-reorder``, so workers take modules in collection order. By default xdist sorts
modules by their number of tests, which put the OpenAPI fuzzing module (one test, ~50 s) last: the other
worker sat idle for most of a minute at the end of every run. Here modules are sorted by how long they took
in a recorded run (``tests/module_times.json``), longest first — the greedy longest-processing-time rule,
whose finish is within a third of the optimum — and a module not in the record counts ``UNKNOWN_PER_TEST``
seconds per test. Tests inside a module keep their order.

The record is refreshed with ``scripts/test --record-module-times`` (the controller sums each module's
setup, call and teardown durations and rewrites the file); a stale record only costs balance, never a test.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

TIMES = Path(__file__).resolve().parent / "module_times.json"
UNKNOWN_PER_TEST = 0.2  # seconds: the median test of the suite is well under this


def module_of(nodeid: str) -> str:
    return nodeid.split("::", 1)[0]


def recorded() -> dict[str, float]:
    try:
        data = json.loads(TIMES.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def longest_first(items: list[pytest.Item], times: dict[str, float]) -> list[pytest.Item]:
    """``items`` grouped by module, modules by recorded (or estimated) time descending, stable otherwise."""
    groups: dict[str, list[pytest.Item]] = {}
    for item in items:
        groups.setdefault(module_of(item.nodeid), []).append(item)

    def cost(module: str) -> float:
        return times.get(module, UNKNOWN_PER_TEST * len(groups[module]))

    ordered = sorted(groups, key=cost, reverse=True)  # sorted() is stable: ties keep collection order
    return [item for module in ordered for item in groups[module]]


class Recorder:
    """Sums each module's phase durations as reports arrive (in the xdist controller, or the only process)."""

    def __init__(self, path: Path = TIMES) -> None:
        self.path = path
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self.seconds[module_of(report.nodeid)] += report.duration

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if not self.seconds or session.config.getoption("collectonly"):
            return
        if getattr(session.config, "workerinput", None) is not None:
            return  # an xdist worker: the controller writes the file
        data = {m: round(s, 1) for m, s in sorted(self.seconds.items())}
        self.path.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n", encoding="utf-8")
