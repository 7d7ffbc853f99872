"""Time for SLAs, expiry and rate limits, injectable so that tests (and drills) are exact.

In the store layer, next to :func:`charter.store.utcnow`, because tool actions (:mod:`charter.tools`) and
the review queue (:mod:`charter.review`, which re-exports the clocks) both keep time by it."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Protocol, runtime_checkable

from charter.store._types import utcnow


@runtime_checkable
class Clock(Protocol):
    """Anything that tells the current time (timezone-aware UTC)."""

    def now(self) -> datetime: ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        return utcnow()


class ManualClock:
    """A clock that moves only when told to: ``advance(timedelta(hours=9))``."""

    def __init__(self, start: datetime | None = None) -> None:
        start = start or utcnow()
        if start.tzinfo is None:
            raise ValueError("ManualClock needs a timezone-aware start")
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware")
        with self._lock:
            self._now = when


DEFAULT_CLOCK: Clock = SystemClock()


def clock_or_default(clock: Clock | None) -> Clock:
    return clock if clock is not None else DEFAULT_CLOCK


def add(when: datetime, delta: timedelta | None) -> datetime | None:
    return None if delta is None else when + delta


__all__ = ["DEFAULT_CLOCK", "Clock", "ManualClock", "SystemClock", "add", "clock_or_default"]
