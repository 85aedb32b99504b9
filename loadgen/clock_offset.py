"""Clock offsets between the Locust master and its workers, measured as NTP does.

The master sends a ping carrying its wall time t0; the worker answers with its own wall times t1
(ping received) and t2 (answer sent); the master notes t3 when the answer arrives. Then

    offset      = ((t1 - t0) + (t2 - t3)) / 2     (worker clock minus master clock)
    uncertainty = (t3 - t0 - (t2 - t1)) / 2       (half the round trip spent on the wire)

The true offset lies within offset +- uncertainty whatever the asymmetry of the two paths, so the
sample with the smallest round trip is the best one: OffsetEstimator keeps it (among the recent
samples: clocks drift apart slowly over a long run). A worker's entry times are corrected onto the
master's clock with `corrected = worker_time - offset`.

GAMEDAY_CLOCK_SKEW_S (test-only) adds that many seconds to every wall time a worker process
produces (history entries and ping answers alike, through `wall()`): a skewed host, injected.
No Locust or gevent import: pytest uses this module.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass

SKEW_ENV = "GAMEDAY_CLOCK_SKEW_S"
PING_INTERVAL_S = 5.0    # the master re-measures each worker this often
PINGS_PER_ROUND = 3      # answers to a burst: one of them usually meets an idle path
RECENT_SAMPLES = 24      # the best sample is chosen among these (~40 s of rounds)


def injected_skew(environ=os.environ) -> float:
    """The test-only skew of this process's wall clock (GAMEDAY_CLOCK_SKEW_S), 0 when unset.
    ValueError naming the variable when it is not a number."""
    raw = environ.get(SKEW_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{SKEW_ENV}={raw!r}: not a number of seconds") from None


_SKEW = injected_skew() if os.environ.get(SKEW_ENV) else 0.0


def wall() -> float:
    """This process's wall time, as its (possibly skewed, see GAMEDAY_CLOCK_SKEW_S) clock reads it."""
    return time.time() + _SKEW


@dataclass(frozen=True)
class Sample:
    t0: float   # master: ping sent
    t1: float   # worker: ping received
    t2: float   # worker: answer sent
    t3: float   # master: answer received

    @property
    def offset_s(self) -> float:
        return ((self.t1 - self.t0) + (self.t2 - self.t3)) / 2

    @property
    def round_trip_s(self) -> float:
        return max(0.0, (self.t3 - self.t0) - (self.t2 - self.t1))

    @property
    def uncertainty_s(self) -> float:
        return self.round_trip_s / 2


class OffsetEstimator:
    """One worker's offset: the recent sample with the smallest round trip."""

    def __init__(self, keep: int = RECENT_SAMPLES):
        self._recent: deque[Sample] = deque(maxlen=keep)
        self.count = 0

    def add(self, t0: float, t1: float, t2: float, t3: float) -> Sample:
        s = Sample(float(t0), float(t1), float(t2), float(t3))
        if s.t3 < s.t0:
            raise ValueError(f"clock sample answered before it was sent (t0={t0}, t3={t3})")
        self._recent.append(s)
        self.count += 1
        return s

    @property
    def best(self) -> Sample | None:
        return min(self._recent, key=lambda s: s.round_trip_s, default=None)

    @property
    def offset_s(self) -> float:
        """Worker clock minus master clock; 0 before any sample."""
        b = self.best
        return b.offset_s if b is not None else 0.0

    @property
    def uncertainty_s(self) -> float | None:
        """Half the best round trip; None before any sample (the offset is then unknown)."""
        b = self.best
        return b.uncertainty_s if b is not None else None

    def correct(self, worker_time: float) -> float:
        """A worker's wall time on the master's clock."""
        return worker_time - self.offset_s

    def status(self) -> dict:
        u = self.uncertainty_s
        return {"clock_offset_s": round(self.offset_s, 6), "offset_uncertainty_s": None if u is None else round(u, 6),
                "clock_samples": self.count}
