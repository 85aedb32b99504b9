"""The rules of Lambda's asynchronous invocation, as pure code: no threads, no processes, no clock
reads. `lambda_runner.py` is the adapter: it keeps the worker processes, the SNS endpoint and the
timeline, passes the time in (`now`, on one axis of its choosing: it uses `clock.monotonic()`)
and carries out the decisions this model returns.

AWS semantics modelled (cited where each rule is):
- "How Lambda handles errors and retries with asynchronous invocation"
  (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html): an event
  goes to the function's queue; a function error (the code's error or the runtime's, such as a
  timeout) is retried twice by default, after one minute and then two; when no concurrency is
  available the event is throttled and returned to the queue, retried with an interval growing
  exponentially from 1 s to at most 5 min, for up to the maximum event age (6 h by default).
  Throttles do not count as retry attempts.
- "Configuring error handling settings for Lambda asynchronous invocations"
  (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-configuring.html):
  MaximumRetryAttempts 0..2, MaximumEventAgeInSeconds (the time an event is kept in the queue
  before it is discarded). A discarded event's record names its condition, as Lambda's
  on-failure destination does: RetriesExhausted or EventAgeExceeded.
- "Understanding the Lambda execution environment lifecycle"
  (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html): an environment
  runs one invocation at a time and is reused (warm) for the next; the init runs in a new one
  (cold start); a crash or a timeout during the invoke phase resets the environment, so the next
  invocation there initialises again. Provisioned concurrency initialises environments before any
  invocation (AWS_LAMBDA_INITIALIZATION_TYPE = provisioned-concurrency).
- Reserved concurrency caps the function's concurrent environments ("Configuring reserved
  concurrency"); Lambda routes an invocation to an idle warm environment before it starts a new one.
- An execution environment runs one version of the function, with the configuration it was
  initialised with ("Lambda execution environment lifecycle"; "Lambda function versions": each
  version has its own code and configuration): an invocation of another version, or of $LATEST
  after UpdateFunctionConfiguration, goes to a new environment (a cold start), and an attempt in
  flight finishes where it runs. `code` names what an invocation runs (opaque to the model: the
  adapter resolves the alias or version it invokes); None everywhere keeps the rules above.

A synchronous (RequestResponse) invocation is never retried and never discarded: it waits in the
queue for an environment (the local runner's `invoke()` is a test and tooling API, not a client of
Lambda's 429).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Hashable, Mapping

ASYNC, SYNC = "Event", "RequestResponse"
INIT_ON_DEMAND = "on-demand"                      # AWS_LAMBDA_INITIALIZATION_TYPE, as Lambda spells them
INIT_PROVISIONED = "provisioned-concurrency"
AWS_RETRY_DELAYS_S = (60.0, 120.0)
AWS_MAXIMUM_RETRY_ATTEMPTS = 2
AWS_MAXIMUM_EVENT_AGE_S = 21600.0                 # 6 h, also the largest allowed
AWS_THROTTLE_FIRST_S, AWS_THROTTLE_MAX_S = 1.0, 300.0
RETRIES_EXHAUSTED, EVENT_AGE_EXCEEDED = "RetriesExhausted", "EventAgeExceeded"

# what an attempt came to, as the adapter observed it -> Lambda's outcome; and whether the
# execution environment survives it
OK, ERROR, TIMEOUT, CRASH, INIT_ERROR = "ok", "error", "timeout", "crash", "init_error"
OUTCOMES = {OK: "ok", ERROR: "error", TIMEOUT: "timeout", CRASH: "error", INIT_ERROR: "error"}
RESETS_ENVIRONMENT = frozenset({TIMEOUT, CRASH, INIT_ERROR})


def outcome_of(result: str) -> str:
    """Lambda's outcome of an attempt (ok | error | timeout) from what the adapter observed."""
    return OUTCOMES[result]


def concurrency_for(reserved: int | None, provisioned: int | None, unreserved: int) -> tuple[int, int]:
    """(execution environments at most, environments initialised before any event).

    Reserved concurrency caps the environments; unreserved, the local cap `unreserved` (or the
    provisioned number, if more). Provisioned concurrency unset = all of them, so no invocation of
    a surge pays the init on a saturated machine; 0 keeps Lambda's on-demand cold start. More
    provisioned than reserved concurrency is refused, as Lambda does (ValueError)."""
    if provisioned is not None and reserved is not None and provisioned > reserved:
        raise ValueError(f"failover.provisioned_concurrency ({provisioned}) cannot exceed "
                         f"failover.reserved_concurrency ({reserved}), as in Lambda")
    concurrency = reserved or max(unreserved, provisioned or 0)
    return concurrency, concurrency if provisioned is None else provisioned


def throttle_backoff_s(throttles: int, first_s: float = AWS_THROTTLE_FIRST_S, max_s: float = AWS_THROTTLE_MAX_S) -> float:
    """The wait after the `throttles`-th throttle (1-based): first_s, doubling, at most max_s."""
    return min(max_s, first_s * 2 ** (throttles - 1))


@dataclass(frozen=True)
class AsyncSpec:
    """The function's concurrency and its asynchronous-invocation configuration (AWS defaults)."""
    concurrency: int = 1
    provisioned: int = 0
    retry_delays_s: tuple[float, ...] = AWS_RETRY_DELAYS_S
    maximum_retry_attempts: int = AWS_MAXIMUM_RETRY_ATTEMPTS
    maximum_event_age_s: float = AWS_MAXIMUM_EVENT_AGE_S
    throttle_first_s: float = AWS_THROTTLE_FIRST_S
    throttle_max_s: float = AWS_THROTTLE_MAX_S

    def __post_init__(self):
        if not 0 <= self.maximum_retry_attempts <= 2:
            raise ValueError(f"maximum retry attempts must be 0..2 (Lambda's MaximumRetryAttempts), "
                             f"got {self.maximum_retry_attempts}")
        if self.maximum_retry_attempts and not self.retry_delays_s:
            raise ValueError("retries need at least one retry delay")
        if not 0 <= self.provisioned <= self.concurrency:
            raise ValueError(f"provisioned ({self.provisioned}) must be 0..concurrency ({self.concurrency})")


# -- decisions: what the adapter carries out -----------------------------------------------------------
@dataclass(frozen=True)
class Init:
    """Initialise slot's environment now, before any event (provisioned concurrency)."""
    slot: int
    initialization_type: str = INIT_PROVISIONED


@dataclass(frozen=True)
class Start:
    """Run attempt `attempt` of request_id in slot's environment; cold = initialise one first."""
    request_id: str
    slot: int
    attempt: int
    cold: bool
    initialization_type: str
    code: Hashable | None = None        # what the environment runs (an environment of other code is replaced)


@dataclass(frozen=True)
class Throttle:
    """No concurrency free: the event went back to the queue until retry_at."""
    request_id: str
    retry_at: float
    throttles: int


@dataclass(frozen=True)
class Retry:
    """The attempt failed: attempt `attempt` runs at retry_at (delay_s after the failure)."""
    request_id: str
    attempt: int
    retry_at: float
    delay_s: float


@dataclass(frozen=True)
class Discard:
    """Lambda drops the event; the fields of its invocation record (on-failure destination)."""
    request_id: str
    condition: str                      # RetriesExhausted | EventAgeExceeded
    approximate_invoke_count: int       # attempts that ran
    age_s: float

    def record(self) -> dict:
        return {"request_id": self.request_id, "condition": self.condition,
                "approximate_invoke_count": self.approximate_invoke_count, "age_s": round(self.age_s, 4)}


# -- state --------------------------------------------------------------------------------------------
@dataclass
class _Queued:
    request_id: str
    invocation_type: str
    received: float
    attempt: int = 1
    due: float = 0.0
    throttles: int = 0
    seq: int = 0
    qualifier: str | None = None        # the alias or version invoked (None: $LATEST)


@dataclass
class SlotState:
    index: int
    warm: bool = False                  # an initialised environment is there
    busy: str | None = None             # the request id running in it
    invocations: int = 0
    code: Hashable | None = None        # the version (code and configuration) its environment runs


@dataclass
class AsyncInvocationModel:
    """The function's event queue and its execution environments."""
    spec: AsyncSpec
    slots: list[SlotState] = field(default_factory=list)
    _queue: dict[str, _Queued] = field(default_factory=dict)
    _running: dict[str, _Queued] = field(default_factory=dict)
    _seq: itertools.count = field(default_factory=itertools.count)

    def __post_init__(self):
        if not self.slots:
            self.slots = [SlotState(i) for i in range(self.spec.concurrency)]

    # -- provisioned concurrency --------------------------------------------------------------------
    def initialization_type(self, slot: int) -> str:
        return INIT_PROVISIONED if slot < self.spec.provisioned else INIT_ON_DEMAND

    def prewarm(self) -> list[Init]:
        """The environments to initialise before the first event: the provisioned ones."""
        return [Init(s.index, self.initialization_type(s.index)) for s in self.slots[:self.spec.provisioned]]

    def initialised(self, slot: int, ok: bool, code: Hashable | None = None) -> None:
        self.slots[slot].warm = ok
        self.slots[slot].code = code

    def environment_lost(self, slot: int) -> None:
        """The slot's environment is gone outside an invocation (its process exited)."""
        self.slots[slot].warm = False

    # -- the queue ----------------------------------------------------------------------------------
    def enqueue(self, request_id: str, now: float, invocation_type: str = ASYNC, qualifier: str | None = None) -> None:
        if invocation_type not in (ASYNC, SYNC):
            raise ValueError(f"invocation type must be {ASYNC} or {SYNC}, got {invocation_type!r}")
        self._queue[request_id] = _Queued(request_id, invocation_type, received=now, due=now, seq=next(self._seq),
                                          qualifier=qualifier)

    def qualifiers(self) -> set[str | None]:
        """The aliases/versions the queued events invoke (what poll's `codes` must name)."""
        return {q.qualifier for q in self._queue.values()}

    def _free_slot(self, code: Hashable | None = None) -> SlotState | None:
        """An idle warm environment of the same code first (reuse), else an idle slot without one,
        else an idle environment of other code (replaced: the cap counts environments)."""
        idle = [s for s in self.slots if s.busy is None]
        return (next((s for s in idle if s.warm and s.code == code), None) or next((s for s in idle if not s.warm), None)
                or next(iter(idle), None))

    def poll(self, now: float, codes: Mapping[str | None, Hashable] | None = None) -> list[Start | Throttle | Discard]:
        """What happens to the events due by `now`, oldest first; `codes`: what each qualifier
        (alias, version, None = $LATEST) runs now (None: one code for all)."""
        decisions: list[Start | Throttle | Discard] = []
        for q in sorted((q for q in self._queue.values() if q.due <= now), key=lambda q: (q.due, q.seq)):
            age = now - q.received
            if q.invocation_type == ASYNC and age > self.spec.maximum_event_age_s:
                del self._queue[q.request_id]
                decisions.append(Discard(q.request_id, EVENT_AGE_EXCEEDED, q.attempt - 1, age))
                continue
            code = (codes or {}).get(q.qualifier)
            slot = self._free_slot(code)
            if slot is not None:
                decisions.append(self._start(q, slot, now, code))
            elif q.invocation_type == ASYNC:
                q.throttles += 1
                q.due = now + throttle_backoff_s(q.throttles, self.spec.throttle_first_s, self.spec.throttle_max_s)
                decisions.append(Throttle(q.request_id, q.due, q.throttles))
            else:
                q.due = math.inf  # a synchronous invocation waits for the next free environment
        return decisions

    def _start(self, q: _Queued, slot: SlotState, now: float, code: Hashable | None = None) -> Start:
        del self._queue[q.request_id]
        self._running[q.request_id] = q
        cold = not slot.warm or slot.code != code
        slot.busy, slot.code = q.request_id, code
        slot.invocations += 1
        return Start(q.request_id, slot.index, q.attempt, cold=cold,
                     initialization_type=self.initialization_type(slot.index), code=code)

    def finished(self, request_id: str, now: float, result: str) -> list[Retry | Discard]:
        """An attempt ended with `result` (ok | error | timeout | crash | init_error)."""
        q = self._running.pop(request_id)
        slot = next(s for s in self.slots if s.busy == request_id)
        slot.busy = None
        slot.warm = result not in RESETS_ENVIRONMENT
        for waiting in self._queue.values():
            if waiting.due == math.inf:
                waiting.due = now   # an environment is free again
        if result == OK or q.invocation_type == SYNC:
            return []
        if q.attempt - 1 >= self.spec.maximum_retry_attempts:
            return [Discard(request_id, RETRIES_EXHAUSTED, q.attempt, now - q.received)]
        delays = self.spec.retry_delays_s
        delay = delays[min(q.attempt - 1, len(delays) - 1)]
        q.attempt += 1
        q.due = now + delay
        q.throttles = 0
        q.seq = next(self._seq)
        self._queue[request_id] = q
        return [Retry(request_id, q.attempt, q.due, delay)]

    def next_due(self) -> float | None:
        """When poll() next has something to do (None: only when an event arrives or an attempt ends)."""
        due = [q.due for q in self._queue.values() if q.due != math.inf]
        return min(due) if due else None

    def drain(self) -> list[str]:
        """Empty the queue (the service stops); the request ids that never ran again."""
        ids = list(self._queue)
        self._queue.clear()
        return ids

    def queued(self) -> int:
        return len(self._queue)

    def in_flight(self) -> list[str]:
        return [s.busy for s in self.slots if s.busy]
