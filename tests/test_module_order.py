"""The order modules run in (tests/_order.py): longest recorded first, unknown modules estimated from their
number of tests, a module's tests together and in their own order; and the record it is read from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import _order


@dataclass
class Item:  # what longest_first reads of a pytest.Item
    nodeid: str


def items(*ids: str) -> list[Item]:
    return [Item(i) for i in ids]


def test_longest_recorded_module_first_and_tests_keep_their_order() -> None:
    got = _order.longest_first(
        items("a.py::t1", "b.py::t1", "a.py::t2", "c.py::t1", "b.py::t2"),  # type: ignore[arg-type]
        {"a.py": 1.0, "b.py": 30.0, "c.py": 5.0},
    )
    assert [i.nodeid for i in got] == ["b.py::t1", "b.py::t2", "c.py::t1", "a.py::t1", "a.py::t2"]


def test_an_unrecorded_module_counts_its_tests() -> None:
    many = [f"new.py::t{i}" for i in range(100)]  # 100 x UNKNOWN_PER_TEST = 20 s
    got = _order.longest_first(items("old.py::t", *many), {"old.py": 10.0})  # type: ignore[arg-type]
    assert got[0].nodeid == "new.py::t0" and got[-1].nodeid == "old.py::t"


def test_ties_keep_collection_order() -> None:
    got = _order.longest_first(items("x.py::t", "y.py::t", "z.py::t"), {})  # type: ignore[arg-type]
    assert [i.nodeid for i in got] == ["x.py::t", "y.py::t", "z.py::t"]


def test_the_record_is_written_per_module_and_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "times.json"
    recorder = _order.Recorder(path)

    @dataclass
    class Report:
        nodeid: str
        duration: float

    for nodeid, seconds in [("a.py::t1", 1.25), ("a.py::t1", 0.5), ("b.py::t[x]", 2.0)]:
        recorder.pytest_runtest_logreport(Report(nodeid, seconds))  # type: ignore[arg-type]

    class Config:  # the controller's (or the only process's): no ``workerinput``
        @staticmethod
        def getoption(name: str) -> bool:
            return False  # not --collect-only

    class Session:
        config = Config()

    recorder.pytest_sessionfinish(Session())  # type: ignore[arg-type]
    assert json.loads(path.read_text()) == {"a.py": 1.8, "b.py": 2.0}
    monkeypatch.setattr(_order, "TIMES", path)
    assert _order.recorded() == {"a.py": 1.8, "b.py": 2.0}


def test_a_missing_or_broken_record_orders_by_estimate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_order, "TIMES", tmp_path / "missing.json")
    assert _order.recorded() == {}
    (tmp_path / "broken.json").write_text("{not json")
    monkeypatch.setattr(_order, "TIMES", tmp_path / "broken.json")
    assert _order.recorded() == {}


def test_the_shipped_record_names_modules_that_exist() -> None:
    root = Path(__file__).resolve().parent.parent
    recorded = _order.recorded()
    assert len(recorded) > 100
    missing = [m for m in recorded if not (root / m).is_file()]
    assert not missing, (
        f"tests/module_times.json names removed modules {missing}: scripts/test --record-module-times"
    )
