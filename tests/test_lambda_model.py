"""Lambda's asynchronous invocation rules (environments/local/lambda_model.py) on a fake time axis.

AWS semantics checked, per row:
- retries of function errors (the code's or the runtime's, such as a timeout): twice by default,
  one minute then two; MaximumRetryAttempts 0..2; MaximumEventAgeInSeconds discards an event that
  stayed in the queue too long; throttled events go back to the queue with a backoff from 1 s
  doubling to 5 min, without using a retry attempt
  (https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-error-handling.html,
   https://docs.aws.amazon.com/lambda/latest/dg/invocation-async-configuring.html);
- execution environments: reused warm, one invocation at a time, reset by a timeout or a crash,
  provisioned ones initialised before any event
  (https://docs.aws.amazon.com/lambda/latest/dg/lambda-runtime-environment.html);
- an environment runs one version (its code and configuration): after the alias moves, the next
  invocation starts a new environment and one in flight finishes on the old
  (https://docs.aws.amazon.com/lambda/latest/dg/configuration-versions.html).

A small discrete-event driver plays arrivals, attempt durations and results against the model
and logs its decisions with their times; every row compares that log with AWS's numbers.
"""

from __future__ import annotations

import pytest

from gameday.environments.local import lambda_model as m
from gameday.environments.local.lambda_model import (
    ASYNC, CRASH, ERROR, EVENT_AGE_EXCEEDED, INIT_ERROR, INIT_ON_DEMAND, INIT_PROVISIONED, OK, RETRIES_EXHAUSTED,
    SYNC, TIMEOUT, AsyncInvocationModel, AsyncSpec, Discard, Retry, Start, Throttle,
)


def simulate(spec: AsyncSpec, arrivals, results=None, duration=0.0, until=100_000.0, prewarm=True, alias=None):
    """Drive the model: arrivals [(t, request_id) or (t, request_id, invocation type)]; results
    {request_id: [result of attempt 1, 2, ...]} (default ok); duration: seconds per attempt, or
    {request_id: seconds}; alias: [(t, version)], the version every event invokes from t on.
    Returns [(t, decision)] in the order the model made them."""
    model = AsyncInvocationModel(spec)

    def codes(t):
        return {None: [v for at, v in alias if at <= t][-1]} if alias else None
    if prewarm:
        for init in model.prewarm():
            model.initialised(init.slot, ok=True, code=(codes(0.0) or {}).get(None))
    results = results or {}
    pending = sorted((a[0], a[1], a[2] if len(a) > 2 else ASYNC) for a in arrivals)
    running: list[tuple[float, str, str]] = []   # (end, request id, result)
    attempts: dict[str, int] = {}
    log: list[tuple[float, object]] = []
    t = 0.0
    while t <= until:
        for end, rid, result in sorted(r for r in running if r[0] <= t):
            running.remove((end, rid, result))
            log += [(end, d) for d in model.finished(rid, end, result)]
        while pending and pending[0][0] <= t:
            _, rid, kind = pending.pop(0)
            model.enqueue(rid, t, kind)
        for d in model.poll(t, codes(t)):
            log.append((t, d))
            if isinstance(d, Start):
                n = attempts[d.request_id] = attempts.get(d.request_id, 0) + 1
                planned = results.get(d.request_id, [])
                outcome = planned[n - 1] if n <= len(planned) else OK
                took = duration[d.request_id] if isinstance(duration, dict) else duration
                running.append((t + took, d.request_id, outcome))
        times = [x for x in (model.next_due(), pending[0][0] if pending else None,
                             min((r[0] for r in running), default=None)) if x is not None]
        if not times:
            return log
        t = max(t, min(times))
    return log


def starts(log, rid=None):
    return [(t, d.attempt) for t, d in log if isinstance(d, Start) and (rid is None or d.request_id == rid)]


def discards(log):
    return [(t, d.request_id, d.condition, d.approximate_invoke_count) for t, d in log if isinstance(d, Discard)]


AWS = AsyncSpec(concurrency=1, provisioned=1)


# -- retries of function errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("retries, results, duration, want_starts, want_discard", [
    # AWS default: attempts at 0, +60 s, +120 s after the second failed; then RetriesExhausted
    (2, [ERROR] * 3, 0.0, [(0, 1), (60, 2), (180, 3)], [(180, "e", RETRIES_EXHAUSTED, 3)]),
    # the delay counts from the end of the failed attempt (2 s each here)
    (2, [ERROR] * 3, 2.0, [(0, 1), (62, 2), (184, 3)], [(186, "e", RETRIES_EXHAUSTED, 3)]),
    (1, [ERROR] * 3, 0.0, [(0, 1), (60, 2)], [(60, "e", RETRIES_EXHAUSTED, 2)]),
    (0, [ERROR] * 3, 0.0, [(0, 1)], [(0, "e", RETRIES_EXHAUSTED, 1)]),
    # a timeout and a runtime crash are function errors too (retried); an init error as well
    (2, [TIMEOUT, CRASH, OK], 3.0, [(0, 1), (63, 2), (186, 3)], []),
    (2, [INIT_ERROR, OK], 0.0, [(0, 1), (60, 2)], []),
    # success ends it: no retry after an ok
    (2, [ERROR, OK], 0.0, [(0, 1), (60, 2)], []),
    (2, [OK], 0.0, [(0, 1)], []),
])
def test_function_errors_are_retried_on_the_aws_schedule(retries, results, duration, want_starts, want_discard):
    spec = AsyncSpec(concurrency=1, provisioned=1, maximum_retry_attempts=retries)
    log = simulate(spec, [(0, "e")], {"e": results}, duration)
    assert starts(log) == want_starts
    assert discards(log) == want_discard
    assert [(d.attempt, d.delay_s) for _, d in log if isinstance(d, Retry)] == \
        [(n + 1, (60.0, 120.0)[n - 1]) for _, n in want_starts[:-1]]


def test_retry_delays_come_from_the_spec_and_the_last_one_repeats():
    # the local profile compresses AWS's minutes (1 s, 2 s); one delay given: every retry waits it
    assert starts(simulate(AsyncSpec(retry_delays_s=(1.0, 2.0)), [(0, "e")], {"e": [ERROR] * 3})) == \
        [(0, 1), (1, 2), (3, 3)]
    assert starts(simulate(AsyncSpec(retry_delays_s=(0.5,)), [(0, "e")], {"e": [ERROR] * 3})) == \
        [(0, 1), (0.5, 2), (1.0, 3)]


def test_synchronous_invocations_are_never_retried():
    log = simulate(AWS, [(0, "s", SYNC)], {"s": [ERROR]})
    assert starts(log) == [(0, 1)] and discards(log) == [] and not [d for _, d in log if isinstance(d, Retry)]


# -- maximum event age --------------------------------------------------------------------------------------

@pytest.mark.parametrize("max_age, want_starts, want_discard", [
    (21600.0, [(0, 1), (60, 2), (180, 3)], [(180, "e", RETRIES_EXHAUSTED, 3)]),
    (100.0, [(0, 1), (60, 2)], [(180, "e", EVENT_AGE_EXCEEDED, 2)]),   # the 2nd retry would run at age 180
    (60.0, [(0, 1), (60, 2)], [(180, "e", EVENT_AGE_EXCEEDED, 2)]),    # age == maximum: still sent
    (59.0, [(0, 1)], [(60, "e", EVENT_AGE_EXCEEDED, 1)]),              # older than the maximum: dropped
])
def test_an_event_older_than_the_maximum_age_is_discarded(max_age, want_starts, want_discard):
    log = simulate(AsyncSpec(maximum_event_age_s=max_age), [(0, "e")], {"e": [ERROR] * 3})
    assert starts(log) == want_starts
    assert discards(log) == want_discard


# -- throttling (reserved concurrency) -----------------------------------------------------------------------

@pytest.mark.parametrize("n, want", [(1, 1), (2, 2), (3, 4), (9, 256), (10, 300), (30, 300)])
def test_throttle_backoff_doubles_from_one_second_to_five_minutes(n, want):
    assert m.throttle_backoff_s(n) == want


def test_reserved_concurrency_throttles_the_events_it_has_no_room_for():
    # one environment busy 10 s; B and C throttled at 0, 1, 3, 7 (backoff 1, 2, 4, 8); at 15 B goes
    # first (older), C is throttled a 5th time (16 s) and runs at 31; throttles use no retry attempt
    log = simulate(AWS, [(0, "a"), (0, "b"), (0, "c")], duration=10.0)
    assert [(t, d.request_id, d.slot) for t, d in log if isinstance(d, Start)] == [(0, "a", 0), (15, "b", 0), (31, "c", 0)]
    assert [(t, d.throttles, d.retry_at) for t, d in log if isinstance(d, Throttle) and d.request_id == "b"] == \
        [(0, 1, 1), (1, 2, 3), (3, 3, 7), (7, 4, 15)]
    assert starts(log, "c") == [(31, 1)]


def test_unreserved_concurrency_runs_events_side_by_side():
    log = simulate(AsyncSpec(concurrency=2, provisioned=2), [(0, "a"), (0, "b")], duration=10.0)
    assert [(t, d.request_id, d.slot) for t, d in log if isinstance(d, Start)] == [(0, "a", 0), (0, "b", 1)]
    assert not [d for _, d in log if isinstance(d, Throttle)]


def test_a_throttled_event_can_age_out_without_ever_running():
    # cumulative throttle times 1, 3, 7, 15, 31, 63: at 63 it is older than 60 s
    log = simulate(AsyncSpec(maximum_event_age_s=60.0), [(0, "a"), (0, "b")], duration=200.0)
    assert discards(log) == [(63, "b", EVENT_AGE_EXCEEDED, 0)]
    assert starts(log, "b") == []


def test_a_retry_that_meets_no_room_is_throttled_from_one_second_again():
    # b: throttled at 0, 1, 3, 7 behind a; runs at 15 and fails; its retry (due 75) meets c, which
    # took the environment at 74: the backoff starts over at 1 s (76, 78, 82, 90), not at 32 s
    log = simulate(AWS, [(0, "a"), (0, "b"), (74, "c")], {"b": [ERROR]}, duration={"a": 10.0, "b": 0.0, "c": 10.0})
    assert starts(log, "b") == [(15, 1), (90, 2)]
    assert [(t, d.throttles) for t, d in log if isinstance(d, Throttle) and d.request_id == "b" and t > 15] == \
        [(75, 1), (76, 2), (78, 3), (82, 4)]


def test_a_synchronous_invocation_is_not_discarded_for_its_age():
    log = simulate(AsyncSpec(maximum_event_age_s=60.0), [(0, "a"), (0, "s", SYNC)], duration=100.0)
    assert starts(log, "s") == [(100, 1)] and discards(log) == []


def test_a_synchronous_invocation_waits_for_the_environment_without_backoff():
    log = simulate(AWS, [(0, "a"), (1, "s", SYNC)], duration=5.0)
    assert starts(log, "s") == [(5, 1)]
    assert not [d for _, d in log if isinstance(d, Throttle)]


# -- execution environments: warm reuse, cold start, reset ----------------------------------------------------

@pytest.mark.parametrize("provisioned, arrivals, results, want", [
    # provisioned: warm from the start; events one after the other reuse slot 0
    (2, [(0, "a"), (10, "b"), (20, "c")], {}, [("a", 0, False), ("b", 0, False), ("c", 0, False)]),
    # on demand: the first cold, the next reuses it warm
    (0, [(0, "a"), (10, "b")], {}, [("a", 0, True), ("b", 0, False)]),
    # two at once on demand: two cold environments
    (0, [(0, "a"), (0, "b")], {}, [("a", 0, True), ("b", 1, True)]),
    # a function error keeps the environment warm
    (2, [(0, "a"), (10, "b")], {"a": [ERROR]}, [("a", 0, False), ("b", 0, False), ("a", 0, False)]),
    # a timeout resets it: the next one there initialises again (its retry at 61)
    (1, [(0, "a"), (10, "b")], {"a": [TIMEOUT]}, [("a", 0, False), ("b", 0, True), ("a", 0, False)]),
    # ... and an idle warm environment is chosen before the reset one
    (2, [(0, "a"), (0, "b"), (5, "c")], {"a": [TIMEOUT]}, [("a", 0, False), ("b", 1, False), ("c", 1, False), ("a", 1, False)]),
])
def test_environments_are_reused_warm_and_reset_by_a_timeout(provisioned, arrivals, results, want):
    spec = AsyncSpec(concurrency=max(provisioned, 2) if provisioned != 1 else 1, provisioned=provisioned)
    log = simulate(spec, arrivals, results, duration=1.0)
    assert [(d.request_id, d.slot, d.cold) for _, d in log if isinstance(d, Start)] == want


@pytest.mark.parametrize("provisioned, arrivals, duration, alias, want", [
    # the alias moves to 2 at t=5: the next event starts a new environment there, the one after reuses it
    (1, [(0, "a"), (10, "b"), (20, "c")], 1.0, [(0, "1"), (5, "2")], [("a", 0, False, "1"), ("b", 0, True, "2"),
                                                                       ("c", 0, False, "2")]),
    # and back to 1: version 1's environment was replaced, so version 1 starts cold again
    (1, [(0, "a"), (10, "b"), (20, "c")], 1.0, [(0, "1"), (5, "2"), (15, "1")],
     [("a", 0, False, "1"), ("b", 0, True, "2"), ("c", 0, True, "1")]),
    # in flight: a runs on version 1 until t=10; b (after the switch) gets its own environment, and c,
    # after a ended, reuses b's warm version-2 environment rather than a's version-1 one
    (2, [(0, "a"), (3, "b"), (12, "c")], {"a": 10.0, "b": 1.0, "c": 1.0}, [(0, "1"), (2, "2")],
     [("a", 0, False, "1"), ("b", 1, True, "2"), ("c", 1, False, "2")]),
    # no alias change: nothing new starts (the rules above)
    (1, [(0, "a"), (10, "b")], 1.0, [(0, "1")], [("a", 0, False, "1"), ("b", 0, False, "1")]),
])
def test_an_environment_runs_one_version_and_an_alias_move_starts_new_ones(provisioned, arrivals, duration, alias,
                                                                            want):
    spec = AsyncSpec(concurrency=provisioned, provisioned=provisioned)
    log = simulate(spec, arrivals, duration=duration, alias=alias)
    assert [(d.request_id, d.slot, d.cold, d.code) for _, d in log if isinstance(d, Start)] == want


@pytest.mark.parametrize("result, outcome, resets", [
    (OK, "ok", False), (ERROR, "error", False), (TIMEOUT, "timeout", True), (CRASH, "error", True),
    (INIT_ERROR, "error", True),
])
def test_what_an_attempt_comes_to(result, outcome, resets):
    assert m.outcome_of(result) == outcome
    model = AsyncInvocationModel(AsyncSpec(concurrency=1, provisioned=1))
    model.initialised(0, ok=True)
    model.enqueue("a", 0.0)
    model.poll(0.0)
    model.finished("a", 1.0, result)
    assert model.slots[0].warm is not resets


# -- provisioned concurrency: pre-warmed before a surge (issue 17, item 7) -------------------------------------

@pytest.mark.parametrize("reserved, provisioned, want", [
    (None, None, (2, 2)),   # unreserved: the local cap, all provisioned
    (1, None, (1, 1)),
    (None, 0, (2, 0)),      # on demand: cold starts stay observable
    (None, 4, (4, 4)),
    (3, 1, (3, 1)),
])
def test_concurrency_and_provisioned_environments(reserved, provisioned, want):
    assert m.concurrency_for(reserved, provisioned, unreserved=2) == want


def test_more_provisioned_than_reserved_concurrency_is_refused():
    with pytest.raises(ValueError, match="cannot exceed failover.reserved_concurrency"):
        m.concurrency_for(1, 2, unreserved=2)


def test_prewarm_initialises_the_provisioned_environments_before_any_event():
    model = AsyncInvocationModel(AsyncSpec(concurrency=3, provisioned=2))
    assert [(i.slot, i.initialization_type) for i in model.prewarm()] == [(0, INIT_PROVISIONED), (1, INIT_PROVISIONED)]
    assert model.initialization_type(2) == INIT_ON_DEMAND


@pytest.mark.parametrize("provisioned, cold_starts", [(None, 0), (0, 2)])
def test_a_surge_meets_no_cold_start_when_every_environment_is_provisioned(provisioned, cold_starts):
    # a surge's notifications overlap (ALARM for several alarms, then OK): with the default
    # (provisioned = concurrency) none of them pays an init mid-surge
    concurrency, prov = m.concurrency_for(None, provisioned, unreserved=2)
    arrivals = [(i * 0.1, f"n{i}") for i in range(8)]
    log = simulate(AsyncSpec(concurrency=concurrency, provisioned=prov), arrivals, duration=0.35)
    assert len(starts(log)) == 8
    assert sum(d.cold for _, d in log if isinstance(d, Start)) == cold_starts


@pytest.mark.parametrize("bad", [dict(maximum_retry_attempts=3), dict(maximum_retry_attempts=-1),
                                 dict(retry_delays_s=()), dict(concurrency=1, provisioned=2)])
def test_invalid_specs_are_refused(bad):
    with pytest.raises(ValueError):
        AsyncSpec(**bad)


def test_drain_empties_the_queue():
    model = AsyncInvocationModel(AWS)
    model.enqueue("a", 0.0)
    model.enqueue("b", 0.0)
    model.poll(0.0)
    assert model.queued() == 1 and model.in_flight() == ["a"]
    assert model.drain() == ["b"] and model.queued() == 0 and model.next_due() is None
