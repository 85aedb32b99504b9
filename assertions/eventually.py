"""Eventually-assertions: retry a check until it holds or its deadline passes, and return how
long it took. Deadlines come from the time profile (assertions.deadlines), never guessed."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from tenacity import RetryError, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

T = TypeVar("T")


class NotWithinDeadline(AssertionError):
    """The system did not reach the expected state in time; the message says what and why."""


def eventually(check: Callable[[], T], *, deadline_s: float, what: str, interval_s: float = 0.05,
               started: float | None = None, why_deadline: str = "") -> tuple[T, float]:
    """Call check() until it stops raising AssertionError; return (its value, seconds since `started`
    (a time.monotonic() value, default now)). Raise NotWithinDeadline naming `what` otherwise."""
    t0 = time.monotonic() if started is None else started
    remaining = max(0.0, deadline_s - (time.monotonic() - t0))
    try:
        for attempt in Retrying(stop=stop_after_delay(remaining), wait=wait_fixed(interval_s),
                                retry=retry_if_exception_type(AssertionError), reraise=False):
            with attempt:
                value = check()
            if not attempt.retry_state.outcome.failed:
                return value, time.monotonic() - t0
    except RetryError as e:
        last = e.last_attempt.exception()
        because = f" ({why_deadline})" if why_deadline else ""
        raise NotWithinDeadline(f"{what}: not within {deadline_s:.1f}s{because}; last observation: {last}") from None
    raise NotWithinDeadline(f"{what}: never checked (deadline {deadline_s:.1f}s already passed)")
