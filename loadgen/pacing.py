"""Request slots: when each request of a role starts, so that rates follow the plan exactly.

Every process (a Locust worker, or Locust alone) paces each role with one `Pacer`. Slots are
placed on the stream's cumulative count: the full-rate stream has request k at the run time
where count() reaches k + 1/2; a process that holds a share s of the role's users takes every
(1/s)-th of those, offset by its phase, so N workers interleave instead of firing together
(and together send exactly what one process would).
A user claims the next slot, sleeps until it is due (in Locust's wait_time, so a stop never
waits for a sleep), then sends. The rate therefore does not depend on response times as long
as some user of the pool is free; when every user is busy for longer than `max_lag_s`, the
missed slots are skipped and counted (`skipped`), never fired in a burst.

Pure Python (no gevent): a claim does not yield, so users of one gevent process never race.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable

from gameday.loadgen.plan import Stream


@dataclass(frozen=True, slots=True)
class Slot:
    due: float          # time.monotonic() at which the request should start
    stream: Stream


class Pacer:
    def __init__(self, streams: tuple[Stream, ...], *, t0_mono: float, share: Callable[[], float],
                 phase: float = 0.0, max_lag_s: float = 1.0, clock=time.monotonic):
        self.streams = streams
        self.t0 = t0_mono
        self.share = share
        self.max_lag_s = max_lag_s
        self.clock = clock
        self.claimed = 0
        self.skipped = 0
        self._phase = phase % 1.0
        self._pos: list[float | None] = [None] * len(streams)   # next slot, on the full-rate count

    def _step(self) -> float:
        s = self.share()
        return 1.0 / s if s > 0 else math.inf

    def _first(self, step: float) -> float:
        # process k of n (phase k/n, step n) takes counts k + 1/2, k + 1/2 + n, ...: together the
        # processes take exactly the slots one process alone would (count j + 1/2)
        return self._phase * step + 0.5 if math.isfinite(step) else math.inf

    def claim(self) -> Slot | None:
        """The next slot of this process, or None when every stream has ended."""
        step = self._step()
        if not math.isfinite(step):
            return None
        now = self.clock()
        best_i, best_due = -1, math.inf
        for i, stream in enumerate(self.streams):
            pos = self._pos[i]
            if pos is None:
                pos = self._pos[i] = self._first(step)
            due = self.t0 + stream.time_of(pos)
            if due < now - self.max_lag_s:
                # every user was busy: skip what cannot be sent on time, keep the lattice
                current = stream.count(now - self.t0)
                missed = math.ceil((current - pos) / step)
                if missed > 0:
                    self._pos[i] = pos = pos + missed * step
                    self.skipped += missed
                    due = self.t0 + stream.time_of(pos)
            if due < best_due:
                best_i, best_due = i, due
        if best_i < 0:
            return None
        self._pos[best_i] += step
        self.claimed += 1
        return Slot(best_due, self.streams[best_i])

    def status(self) -> dict:
        return {"claimed": self.claimed, "skipped": self.skipped}
