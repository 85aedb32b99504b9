"""One clock for the local cloud: every model reads the time from it, every adapter waits on it.

The local environment's rules (target health, alarm evaluation, Route 53 health checks and
answers, replication scheduling, ECS scheduling, Lambda retries) are pure models: they take the
time as an input. Their adapters (threads, HTTP, moto calls) ask a `Clock` for that time and
wait on it. In production the clock is `SystemClock`; a test hands a `FakeClock` and moves time
with `advance()`, so a rule that takes minutes of AWS time is checked in microseconds of wall
time, the same way every run.

`time()` is epoch seconds (what timestamps in the run log and CloudWatch periods use);
`monotonic()` is for intervals and deadlines (never goes back when the wall clock is set).
"""

from __future__ import annotations

import threading
import time as _time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def time(self) -> float: ...
    def monotonic(self) -> float: ...
    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        """Block until `event` is set or `timeout` clock seconds pass; True when the event is set."""
        ...


class SystemClock:
    """The machine's clocks; waits are `threading.Event.wait` (stop() stays prompt)."""

    def time(self) -> float:
        return _time.time()

    def monotonic(self) -> float:
        return _time.monotonic()

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        return event.wait(None if timeout is None else max(0.0, timeout))

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


class FakeClock:
    """Time that moves only when a test says so.

    `advance(seconds)` moves both clocks and wakes every `wait()` whose deadline has passed, so
    an adapter thread driven by this clock runs its next tick exactly when the test advances to
    it. Pure models need none of that: a test passes `clock.time()` (or any number) to them.
    """

    def __init__(self, start: float = 1_767_225_600.0, monotonic_start: float = 1_000.0):
        # default start: 2026-01-01T00:00:00Z, a whole minute, so CloudWatch periods align
        self._epoch = float(start)
        self._mono = float(monotonic_start)
        self._cond = threading.Condition()

    def time(self) -> float:
        with self._cond:
            return self._epoch

    def monotonic(self) -> float:
        with self._cond:
            return self._mono

    def advance(self, seconds: float) -> float:
        """Move time forward by `seconds` (>= 0); returns the new epoch time."""
        if seconds < 0:
            raise ValueError(f"a clock only moves forward (advance({seconds}))")
        with self._cond:
            self._epoch += seconds
            self._mono += seconds
            self._cond.notify_all()
            return self._epoch

    def advance_to(self, epoch: float) -> float:
        """Move time forward to the epoch second `epoch` (no-op if it is already past)."""
        return self.advance(max(0.0, epoch - self.time()))

    def wait(self, event: threading.Event, timeout: float | None) -> bool:
        with self._cond:
            deadline = None if timeout is None else self._mono + max(0.0, timeout)
            while not event.is_set():
                if deadline is not None and self._mono >= deadline:
                    return False
                # a short real timeout re-checks the event: Event.set() does not notify this condition
                self._cond.wait(0.01)
            return True

    def __repr__(self) -> str:
        return f"FakeClock(time={self._epoch:.6f})"
