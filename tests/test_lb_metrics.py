"""The load balancers' CloudWatch metrics (environments/local/lb_metrics.py) on a fake clock.

An Application Load Balancer's RequestCount for a period is the number of requests it answered in
that period (ELB user guide, "CloudWatch metrics for your Application Load Balancer"). Locally the
counts go into sub-buckets of metric_flush_s, each published as one datapoint stamped at its middle,
and CloudWatch (moto) sums the datapoints of an alarm's period. These tests check that the sum over
an alarm period is exactly that period's requests: a request at a period's first instant belongs to
that period, one just before it to the previous one, for sub-bucket sizes that divide the period.
"""

from __future__ import annotations

import math
import threading

import pytest

from gameday.clock import FakeClock
from gameday.environments.local.lb_metrics import LbMetrics, MetricsFlusher

BASE = 1_767_225_600.0  # a whole minute: every period size below divides it


def _published_per_period(m: LbMetrics, period: int, now: float, metric: str = "RequestCount") -> dict[int, float]:
    """What an alarm's Sum sees per period (index from BASE) once every bucket closed before `now`
    is published: moto buckets datapoints by their Timestamp from an aligned StartTime."""
    data = m.metric_data("lb", m.take_closed("r1", now), healthy_now=1, now=now)
    out: dict[int, float] = {}
    for d in data:
        if d["MetricName"] == metric:
            k = math.floor((d["Timestamp"] - BASE) / period)
            out[k] = out.get(k, 0) + d["Value"]
    return out


# (sub-bucket s, alarm period s, request times after BASE, RequestCount per period)
PERIOD_ROWS = {
    "0.2 s buckets, 1 s periods": (0.2, 1, [0.0, 0.19, 0.99999, 1.0, 1.6, 2.99999], {0: 3, 1: 2, 2: 1}),
    "0.3 s buckets, 3 s periods": (0.3, 3, [2.99999, 3.0, 3.0, 5.9, 6.0],
                                                                     {0: 1, 1: 3, 2: 1}),
    "0.5 s buckets, 5 s periods": (0.5, 5, [4.5, 4.99999, 5.0, 9.75], {0: 2, 1: 2}),
    "1 s buckets, 60 s periods": (1.0, 60, [0.5, 59.99999, 60.0, 61.0, 179.0], {0: 2, 1: 2, 2: 1}),
}


@pytest.mark.parametrize("step, period, times, want", PERIOD_ROWS.values(), ids=PERIOD_ROWS.keys())
def test_requests_are_summed_into_the_period_they_were_answered_in(step, period, times, want):
    # Catches a datapoint stamped outside its bucket (at a period's edge: in the wrong period), a
    # bucket edge off by one, and requests lost or counted twice between buckets.
    m = LbMetrics(["r1"], step_s=step)
    for t in times:
        m.record_request("r1", BASE + t, 200, target_error=False, response_s=0.01)
    assert _published_per_period(m, period, BASE + (max(want) + 1) * period) == want


@pytest.mark.parametrize("now_offset, closed", [
    (0.49, []),            # [0.0, 0.5) still open
    (0.5, [0.0]),          # closed at its end
    (1.2, [0.0, 0.5]),
])
def test_a_bucket_closes_at_its_end(now_offset, closed):
    m = LbMetrics(["r1"], step_s=0.5)
    for t in (0.1, 0.6, 1.1):
        m.record_request("r1", BASE + t, 200, target_error=False, response_s=None)
    assert [k - BASE for k in sorted(m.take_closed("r1", BASE + now_offset))] == pytest.approx(closed)


def test_a_bucket_reports_its_5xx_split_mean_latency_and_lowest_healthy_count():
    m = LbMetrics(["r1"], step_s=1.0)
    m.record_request("r1", BASE + 0.1, 200, target_error=False, response_s=0.010)
    m.record_request("r1", BASE + 0.2, 500, target_error=True, response_s=0.050)   # the target's 5xx
    m.record_request("r1", BASE + 0.3, 502, target_error=False, response_s=None)   # the load balancer's
    for t, n in ((0.1, 3), (0.5, 1), (0.9, 2)):
        m.record_healthy("r1", BASE + t, n)
    data = {d["MetricName"]: d["Value"] for d in m.metric_data("lb", m.take_closed("r1", BASE + 1), 9, BASE + 1)}
    assert data == {"RequestCount": 3, "HTTPCode_Target_5XX_Count": 1, "HTTPCode_ELB_5XX_Count": 1,
                    "TargetResponseTime": pytest.approx(0.030), "HealthyHostCount": 1}


def test_next_close_is_just_after_the_open_buckets_end():
    m = LbMetrics(["r1"], step_s=0.2)
    assert m.next_close(BASE + 0.5) == pytest.approx(BASE + 0.61)
    assert m.next_close(BASE + 0.6) == pytest.approx(BASE + 0.81)  # 0.6 opens a new bucket


def test_the_flusher_publishes_each_bucket_once_just_after_it_closes_on_the_clock():
    # The flusher's thread waits on the injected clock: nothing is published while the bucket is
    # open, the bucket once it closed, and nothing twice. Real time only lets the thread run.
    clock = FakeClock(start=BASE + 0.05)
    m = LbMetrics(["r1"], step_s=1.0)
    puts: list[list[dict]] = []
    published = threading.Condition()

    def put(region, data):
        with published:
            puts.append(data)
            published.notify_all()
    flusher = MetricsFlusher(m, lb_name=lambda r: "lb", healthy_now=lambda r: 2, put=put, clock=clock)
    flusher.arm()
    flusher.start()
    try:
        m.record_request("r1", clock.time(), 200, target_error=False, response_s=None)
        clock.advance_to(BASE + 0.999)
        with published:
            assert not published.wait_for(lambda: puts, timeout=0.05), puts
        # a request in the next bucket, still open when the first one is flushed: flushed by the
        # clock's time it stays; by any other time (the wall clock's) it would go out too
        m.record_request("r1", BASE + 1.005, 200, target_error=False, response_s=None)
        clock.advance_to(m.next_close(BASE + 0.5))
        with published:
            assert published.wait_for(lambda: puts, timeout=5), "no flush after the bucket closed"
        names = [(d["MetricName"], d["Value"], d["Timestamp"]) for d in puts[0]]
        assert names == [("RequestCount", 1, BASE + 0.5), ("HealthyHostCount", 2, BASE + 0.5)]
    finally:
        flusher.stop()
    # stop() flushes what is left, the open bucket included, once
    assert [d["Timestamp"] for batch in puts for d in batch if d["MetricName"] == "RequestCount"] == [
        BASE + 0.5, BASE + 1.5]
