"""The one clock of the local cloud: a FakeClock moves only when told, and wakes exactly the
waiters whose deadline it passed (so an adapter thread driven by it ticks when the test says)."""

from __future__ import annotations

import threading

import pytest

from gameday.clock import SYSTEM_CLOCK, Clock, FakeClock, SystemClock


def _waiter(clock: Clock, event: threading.Event, timeout: float | None) -> tuple[threading.Thread, list]:
    out: list = []
    t = threading.Thread(target=lambda: out.append(clock.wait(event, timeout)), daemon=True)
    t.start()
    return t, out


def test_both_clocks_satisfy_the_protocol():
    assert isinstance(SYSTEM_CLOCK, Clock) and isinstance(FakeClock(), Clock)
    assert isinstance(SystemClock(), Clock)


def test_fake_time_moves_only_when_advanced_and_both_clocks_together():
    c = FakeClock(start=100.0, monotonic_start=5.0)
    assert (c.time(), c.monotonic()) == (100.0, 5.0)
    assert (c.time(), c.monotonic()) == (100.0, 5.0)      # no wall time leaks in
    c.advance(2.5)
    assert (c.time(), c.monotonic()) == (102.5, 7.5)
    c.advance_to(110.0)
    assert (c.time(), c.monotonic()) == (110.0, 15.0)
    c.advance_to(50.0)                                     # the past: no-op
    assert c.time() == 110.0


def test_a_clock_never_goes_back():
    with pytest.raises(ValueError, match="only moves forward"):
        FakeClock().advance(-1)


def test_a_waiter_wakes_when_its_deadline_is_passed_not_before():
    c, stop = FakeClock(), threading.Event()
    t, out = _waiter(c, stop, 5.0)
    c.advance(4.999)
    t.join(0.05)
    assert t.is_alive(), "woke before its deadline"
    c.advance(0.001)
    t.join(2)
    assert not t.is_alive() and out == [False]


def test_a_set_event_ends_the_wait_at_once_with_true():
    c, stop = FakeClock(), threading.Event()
    t, out = _waiter(c, stop, 60.0)
    stop.set()
    t.join(2)
    assert not t.is_alive() and out == [True]
    assert c.wait(stop, None) is True                    # already set: no wait


def test_system_clock_waits_on_the_event():
    stop = threading.Event()
    assert SYSTEM_CLOCK.wait(stop, 0.0) is False
    stop.set()
    assert SYSTEM_CLOCK.wait(stop, 5.0) is True
