"""A task's finite capacity: the rule the reference service applies to every request it receives.

A Fargate task has a fixed share of CPU (0.25 to 16 vCPU); past what that CPU serves, requests
queue inside the task and wait their turn, and a server whose queue is full answers 503 at once
(as an overloaded server with a bounded queue does). The local environment's tasks all share one
small machine, so without this rule one task would serve whatever the machine serves, and "too
few tasks" could never fail. The rule: a single server, first come first served, each request
taking 1/rate_rps seconds of the task's time (a deterministic single-server queue). A request
arriving while the server is busy waits until its turn; if that wait would exceed `max_wait_s`
it is refused and costs nothing. Latency then grows with the queue, as it does on a saturated
task, and the share refused is the load above capacity once the queue is full.

Pure: `now` is any clock's seconds the caller passes (sut/service.py passes time.monotonic());
tests/test_capacity_model.py drives it on a fake clock. The waits it returns are the model
itself (the queueing delay the service then spends before handling the request).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MAX_WAIT_S = 1.5   # a queue this long (in time) is full: a further request is refused (503)


@dataclass
class TaskCapacity:
    """rate_rps: requests per second the task serves (0: unlimited, no queue)."""
    rate_rps: float
    max_wait_s: float = DEFAULT_MAX_WAIT_S
    next_free: float = float("-inf")   # when the server is free for the next request in line
    admitted: int = 0
    refused: int = 0

    def __post_init__(self) -> None:
        if self.rate_rps < 0:
            raise ValueError(f"rate_rps must be >= 0 (0 = unlimited), got {self.rate_rps:g}")
        if self.max_wait_s < 0:
            raise ValueError(f"max_wait_s must be >= 0, got {self.max_wait_s:g}")

    @property
    def unlimited(self) -> bool:
        return self.rate_rps <= 0

    def admit(self, now: float) -> float | None:
        """A request arrives at `now`: the seconds it waits for its turn, or None when the queue
        is full (answer 503; the refused request takes no turn)."""
        if self.unlimited:
            self.admitted += 1
            return 0.0
        start = max(now, self.next_free)
        wait = start - now
        if wait > self.max_wait_s + 1e-12:
            self.refused += 1
            return None
        self.next_free = start + 1.0 / self.rate_rps
        self.admitted += 1
        return wait

    def backlog_s(self, now: float) -> float:
        """The wait a request arriving at `now` would have (0 when the server is idle)."""
        return 0.0 if self.unlimited else max(0.0, self.next_free - now)
