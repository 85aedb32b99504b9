"""A load balancer's CloudWatch metrics, as an Application Load Balancer publishes them in
namespace AWS/ApplicationELB with dimension LoadBalancer: RequestCount, HTTPCode_Target_5XX_Count
and HTTPCode_ELB_5XX_Count (published only when non-zero, as ALB does), TargetResponseTime
(average) and HealthyHostCount (every bucket, even without traffic).

Counts go into sub-buckets of `step_s` (profile.metric_flush_s) aligned to wall-clock multiples,
so none straddles an alarm period's boundary, and each flush publishes every closed bucket in
one batched put_metric_data per region: one moto call per region per flush, not one per request.
`LbMetrics` is the aggregation (pure: every method takes the time `now`, none reads a clock);
`MetricsFlusher` is the thread that closes buckets just after they end and publishes them,
reading the time from and waiting on the context's clock.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable

from gameday.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger("gameday.lb")
MAX_DATA_PER_CALL = 500   # put_metric_data's limit of MetricData entries per call
FLUSH_DELAY_S = 0.01      # after a bucket's end: a request answered at its last instant is counted


@dataclass
class Bucket:
    requests: int = 0
    target_5xx: int = 0
    elb_5xx: int = 0
    rt_sum: float = 0.0
    rt_n: int = 0
    healthy_min: int | None = None


class LbMetrics:
    """Per-region buckets of request outcomes and healthy-host counts. Thread-safe."""

    def __init__(self, regions, step_s: float):
        self.step_s = step_s
        self._lock = threading.Lock()
        self._buckets: dict[str, dict[float, Bucket]] = {r: defaultdict(Bucket) for r in regions}
        self.total_requests: dict[str, int] = {r: 0 for r in regions}

    def bucket_start(self, now: float) -> float:
        """Start of the sub-bucket holding `now`: [k * step, (k + 1) * step)."""
        return math.floor(now / self.step_s) * self.step_s

    def next_close(self, now: float) -> float:
        """When the sub-bucket open at `now` is closed and can be published."""
        return self.bucket_start(now) + self.step_s + FLUSH_DELAY_S

    def record_request(self, region: str, now: float, status: int, *, target_error: bool,
                       response_s: float | None) -> None:
        """One request the load balancer answered at `now` with `status`; target_error: the
        target's own 5xx (else a 5xx is the load balancer's); response_s: the target's response
        time, None when no target answered."""
        with self._lock:
            b = self._buckets[region][self.bucket_start(now)]
            b.requests += 1
            self.total_requests[region] += 1
            if target_error:
                b.target_5xx += 1
            elif status >= 500:
                b.elb_5xx += 1
            if response_s is not None:
                b.rt_sum += response_s
                b.rt_n += 1

    def record_healthy(self, region: str, now: float, healthy: int) -> None:
        """A healthy-host count seen at `now`: a bucket reports the lowest it saw."""
        with self._lock:
            b = self._buckets[region][self.bucket_start(now)]
            b.healthy_min = healthy if b.healthy_min is None else min(b.healthy_min, healthy)

    def clear(self) -> None:
        with self._lock:
            for buckets in self._buckets.values():
                buckets.clear()

    def take_closed(self, region: str, now: float, final: bool = False) -> dict[float, Bucket]:
        """Remove and return the buckets that ended before `now` (every bucket if final)."""
        current = self.bucket_start(now)
        with self._lock:
            buckets = self._buckets[region]
            done = {k: b for k, b in buckets.items() if final or k < current}
            for k in done:
                del buckets[k]
        return done

    def metric_data(self, lb_name: str, done: dict[float, Bucket], healthy_now: int, now: float) -> list[dict]:
        """The MetricData of the closed buckets `done` (healthy_now stands in for a bucket without
        a health sample, and for an empty interval: ALB reports its hosts even without traffic)."""
        dims = [{"Name": "LoadBalancer", "Value": lb_name}]
        step = self.step_s

        def datum(name: str, value, unit: str, stamp: float) -> dict:
            return {"MetricName": name, "Value": value, "Unit": unit, "Timestamp": stamp, "Dimensions": dims}

        data = []
        for ts, b in sorted(done.items()):
            stamp = ts + step / 2  # the middle of the sub-bucket: inside its period for sure
            counts = (("RequestCount", b.requests), ("HTTPCode_Target_5XX_Count", b.target_5xx),
                      ("HTTPCode_ELB_5XX_Count", b.elb_5xx))
            data += [datum(name, n, "Count", stamp) for name, n in counts if n]
            if b.rt_n:
                data.append(datum("TargetResponseTime", b.rt_sum / b.rt_n, "Seconds", stamp))
            data.append(datum("HealthyHostCount", healthy_now if b.healthy_min is None else b.healthy_min,
                              "Count", stamp))
        if not done:
            data.append(datum("HealthyHostCount", healthy_now, "Count", self.bucket_start(now) - step / 2))
        return data


class MetricsFlusher:
    """Publishes closed buckets just after each one ends, so a period's data is in CloudWatch
    within a few ms of the period's end. Publishes nothing until armed (see LoadBalancers)."""

    def __init__(self, metrics: LbMetrics, *, lb_name: Callable[[str], str], healthy_now: Callable[[str], int],
                 put: Callable[[str, list[dict]], None], clock: Clock = SYSTEM_CLOCK):
        self.metrics = metrics
        self.clock = clock
        self.lb_name, self.healthy_now, self.put = lb_name, healthy_now, put
        self.armed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def arm(self) -> None:
        self.metrics.clear()   # what was counted before arming is start-up, not steady state
        self.armed.set()

    def flush(self, final: bool = False, now: float | None = None) -> None:
        if not self.armed.is_set():
            return
        now = self.clock.time() if now is None else now
        for region in self.metrics.total_requests:
            done = self.metrics.take_closed(region, now, final)
            data = self.metrics.metric_data(self.lb_name(region), done, self.healthy_now(region), now)
            for i in range(0, len(data), MAX_DATA_PER_CALL):
                self.put(region, data[i:i + MAX_DATA_PER_CALL])

    def start(self) -> "MetricsFlusher":
        self._thread = threading.Thread(target=self._loop, name="lb-metrics", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        try:
            self.flush(final=True)
        except Exception:  # noqa: BLE001 - moto may already be gone at teardown
            pass

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = self.clock.time()
            if self.clock.wait(self._stop, self.metrics.next_close(now) - now):
                return
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - moto hiccup: keep the buckets' successors coming
                log.exception("metric flush failed")
