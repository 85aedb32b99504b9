"""The Route 53 API budget of the harness on the aws environment.

Route 53 allows 5 API requests per second per account (its quotas page: "five requests per second
per AWS account"), shared by everyone calling it, the failover function the harness rehearses
included. If the harness's own polling (the signal sources, dns_answers_region, the resolver)
used that up, the function's ChangeResourceRecordSets would be throttled by the very rehearsal.
So every Route 53 request the harness sends goes through one token bucket: `rate_per_s`
(aws.route53_calls_per_s, default 2/s) with a small burst. A call over the budget waits its turn
(politely, in its own thread); it is never failed. Hooked on botocore's `before-send.route53`,
so each HTTP request counts, SDK retries and paginated pages included.

`TokenBucket` is the pure rule (a clock and a sleep are given, tests use a fake clock);
`Route53Budget` attaches it to clients and counts.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

DEFAULT_CALLS_PER_S = 2.0     # well under Route 53's 5 requests/s per account: the rest is the function's
BURST = 2.0                   # calls that may go at once after a quiet spell: any 1 s holds <= rate + BURST
DNS_POLL_FLOOR_S = 0.05       # dns_answers_region's own interval when a poll costs no Route 53 call
POLL_SHARE = 0.5              # the part of the budget one waiting assertion may take (pollers need the rest)


class TokenBucket:
    """`rate_per_s` tokens a second, at most `burst` saved up. acquire() takes one, first waiting
    (with `sleep`) until it is there. Thread-safe: each caller reserves its slot under the lock and
    waits outside it, so callers go in the order they asked, `1/rate` apart once the burst is spent."""

    def __init__(self, rate_per_s: float, burst: float = BURST, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate_per_s > 0 and burst >= 1, got {rate_per_s}, {burst}")
        self.rate_per_s, self.burst = float(rate_per_s), float(burst)
        self.clock, self.sleep = clock, sleep
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()
        self.calls = 0
        self.waited = 0           # calls that had to wait
        self.waited_s = 0.0

    def reserve(self) -> float:
        """Take one token (possibly one not there yet: the balance goes negative); the seconds to
        wait before the call may go."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
            self._at = now
            self._tokens -= 1.0
            wait = max(0.0, -self._tokens / self.rate_per_s)
            self.calls += 1
            if wait > 0:
                self.waited += 1
                self.waited_s += wait
            return wait

    def acquire(self) -> float:
        wait = self.reserve()
        if wait > 0:
            self.sleep(wait)
        return wait

    def status(self) -> dict:
        with self._lock:
            return {"rate_per_s": self.rate_per_s, "burst": self.burst, "calls": self.calls,
                    "waited": self.waited, "waited_s": round(self.waited_s, 3)}


class Route53Budget:
    """One bucket for every Route 53 client of the environment: attach(client) makes each request
    the client sends wait for its token."""

    def __init__(self, rate_per_s: float = DEFAULT_CALLS_PER_S, burst: float = BURST):
        self.bucket = TokenBucket(rate_per_s, burst)
        self.started = time.monotonic()

    @property
    def rate_per_s(self) -> float:
        return self.bucket.rate_per_s

    def attach(self, client) -> None:
        client.meta.events.register("before-send.route53", self._before_send)

    def _before_send(self, **_kwargs) -> None:
        self.bucket.acquire()   # returning None: botocore sends the request

    def status(self) -> dict:
        elapsed = max(1e-9, time.monotonic() - self.started)
        return {**self.bucket.status(), "calls_per_min": round(self.bucket.calls * 60.0 / elapsed, 1)}


def poll_interval_s(route53_calls_per_poll: int, rate_per_s: float, *, share: float = POLL_SHARE,
                    floor_s: float = DNS_POLL_FLOOR_S) -> float:
    """How often an assertion may poll when each poll costs `route53_calls_per_poll` Route 53 calls,
    taking at most `share` of the budget (never faster than `floor_s`)."""
    if route53_calls_per_poll <= 0:
        return floor_s
    return max(floor_s, route53_calls_per_poll / (rate_per_s * share))
