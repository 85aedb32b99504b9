"""A regional application load balancer on its own loopback address (127.0.<i+1>.1).

Like an ALB: health checks with healthy/unhealthy thresholds, round robin over healthy
targets, 503 when none is healthy, 502 when a target fails mid-request, and CloudWatch
metrics in namespace AWS/ApplicationELB with dimension LoadBalancer:
RequestCount and HTTPCode_Target_5XX_Count / HTTPCode_ELB_5XX_Count (published only when
non-zero, as ALB does), TargetResponseTime (average), HealthyHostCount (every interval).

Metrics are counted in sub-buckets of profile.metric_flush_s (aligned to wall-clock
multiples, so none straddles a period boundary) and published in one batched
put_metric_data per flush: one moto call per region per flush, not one per request.

A data-plane block (fault block_region) makes the region unreachable to clients: "refuse"
closes the listening socket (connections refused), "hang" accepts and never answers
(clients time out). The tasks behind it then fail their health checks too (they are cut off
from the region's network), so HealthyHostCount falls, as in a real regional outage.
"""

from __future__ import annotations

import http.client
import itertools
import logging
import math
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from gameday.environments.local.context import LocalContext
from gameday.environments.local.provision import NAMESPACE
from gameday.httpfwd import LoopbackServer, QuietHandler, UpstreamPool, forward_headers

log = logging.getLogger("gameday.lb")
HANG_MAX_S = 60.0  # a black-holed connection is dropped after this (clients give up sooner)


@dataclass
class TargetHealth:
    key: str               # task id
    host: str
    port: int
    az: str
    healthy: bool = False
    state: str = "initial"  # initial | healthy | unhealthy | draining
    ok_streak: int = 0
    fail_streak: int = 0
    last_check: float = 0.0


@dataclass
class _Bucket:
    requests: int = 0
    target_5xx: int = 0
    elb_5xx: int = 0
    rt_sum: float = 0.0
    rt_n: int = 0
    healthy_min: int | None = None


@dataclass
class RegionLB:
    region: str
    address: str
    targets: dict[str, TargetHealth] = field(default_factory=dict)
    rr: itertools.count = field(default_factory=itertools.count)
    buckets: dict[float, _Bucket] = field(default_factory=lambda: defaultdict(_Bucket))
    total_requests: int = 0
    server: LoopbackServer | None = None


class LoadBalancers:
    """All regions' load balancers (one component: they share the health-check and flush loops)."""

    def __init__(self, ctx: LocalContext, ecs):
        self.ctx = ctx
        self.ecs = ecs  # EcsReconciler: .targets(region) -> [Target(task_id, az, host, port, ...)]
        self.regions: dict[str, RegionLB] = {
            r: RegionLB(r, ctx.lb_addresses[r]) for r in ctx.config.regions
        }
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.pool = UpstreamPool(timeout_s=10)
        self._hold = threading.Condition()
        # Metrics are published only once armed (the stack arms after every region has its
        # min healthy tasks): the start-up seconds, with targets still in their initial health
        # checks, would otherwise publish HealthyHostCount 0 and fire the health alarms (and the
        # failover) at every start, which is a deployment artefact, not the steady state.
        self._armed = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "LoadBalancers":
        for lb in self.regions.values():
            self._open(lb)
        self._sync_targets()
        for fn, name in ((self._health_loop, "lb-health"), (self._flush_loop, "lb-metrics")):
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        with self._hold:
            self._hold.notify_all()
        for lb in self.regions.values():
            if lb.server:
                lb.server.stop()
                lb.server = None
        for t in self._threads:
            t.join(timeout=5)
        try:
            self._flush(final=True)
        except Exception:  # noqa: BLE001 - moto may already be gone at teardown
            pass

    def _open(self, lb: RegionLB) -> None:
        region = lb.region
        lbs = self

        class Handler(QuietHandler):
            def _any(self) -> None:
                lbs._handle(region, self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _any

        lb.server = LoopbackServer(lb.address, self.ctx.lb_port, Handler).start(f"lb-{region}")

    def arm_metrics(self) -> None:
        with self._lock:
            for lb in self.regions.values():
                lb.buckets.clear()
        self._armed.set()

    # -- data-plane blocks ----------------------------------------------------------------------
    def set_blocked(self, region: str, mode: str | None) -> None:
        """mode: "refuse" | "hang" | None (unblocked)."""
        lb = self.regions[region]
        with self.ctx.network.lock:
            if mode is None:
                self.ctx.network.blocked_regions.pop(region, None)
            else:
                self.ctx.network.blocked_regions[region] = mode
        if mode == "refuse" and lb.server is not None:
            lb.server.stop()
            lb.server = None
        elif mode != "refuse" and lb.server is None and not self._stop.is_set():
            self._open(lb)
        with self._hold:
            self._hold.notify_all()

    def _blocked(self, region: str) -> str | None:
        return self.ctx.network.blocked_regions.get(region)

    # -- request path -----------------------------------------------------------------------------
    def _bucket(self, lb: RegionLB, now: float) -> _Bucket:
        step = self.ctx.profile.metric_flush_s
        return lb.buckets[math.floor(now / step) * step]

    def _pick(self, lb: RegionLB) -> TargetHealth | None:
        with self._lock:
            healthy = [t for t in lb.targets.values() if t.healthy]
            if not healthy:
                return None
            return healthy[next(lb.rr) % len(healthy)]

    def _handle(self, region: str, h: QuietHandler) -> None:
        lb = self.regions[region]
        if self._blocked(region) == "hang":
            deadline = time.monotonic() + HANG_MAX_S
            with self._hold:
                while self._blocked(region) == "hang" and time.monotonic() < deadline and not self._stop.is_set():
                    self._hold.wait(0.5)
            h.close_connection = True
            return
        body = h.read_body()
        t0 = time.time()
        target = self._pick(lb)
        status, target_error = 503, False
        if target is None:
            h.send_json(503, {"message": f"no healthy targets in {region}"}, {"X-Gameday-Region": region})
        else:
            try:
                status, headers, data = self.pool.request(target.host, target.port, h.command, h.path, body,
                                                          forward_headers(h))
                h.send_raw(status, data, headers)
                target_error = status >= 500
            except (OSError, http.client.HTTPException) as e:
                status = 502
                h.send_json(502, {"message": f"target {target.key} failed: {e}"}, {"X-Gameday-Region": region})
        elapsed = time.time() - t0
        with self._lock:
            b = self._bucket(lb, t0)
            b.requests += 1
            lb.total_requests += 1
            if target_error:
                b.target_5xx += 1
            elif status >= 500:
                b.elb_5xx += 1
            if target is not None:
                b.rt_sum += elapsed
                b.rt_n += 1
        if self.ecs is not None and hasattr(self.ecs, "report_requests"):
            self.ecs.report_requests(region, 1)

    # -- health checks --------------------------------------------------------------------------
    def _sync_targets(self) -> None:
        for region, lb in self.regions.items():
            current = {t.task_id: t for t in self.ecs.targets(region)} if self.ecs else {}
            with self._lock:
                for key in list(lb.targets):
                    if key not in current:
                        del lb.targets[key]  # deregistered (task stopped)
                for key, t in current.items():
                    if key not in lb.targets:
                        lb.targets[key] = TargetHealth(key, t.host, t.port, t.az)

    def _check(self, region: str, t: TargetHealth) -> bool:
        if self._blocked(region):
            return False  # the region's network is cut: its targets cannot answer
        try:
            conn = http.client.HTTPConnection(t.host, t.port, timeout=max(0.2, self.ctx.profile.health_check_interval_s))
            conn.request("GET", self.ctx.config.service.health_path)
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except (OSError, http.client.HTTPException):
            return False

    def _health_tick(self) -> None:
        prof = self.ctx.profile
        self._sync_targets()
        for region, lb in self.regions.items():
            with self._lock:
                targets = list(lb.targets.values())
            for t in targets:
                ok = self._check(region, t)
                with self._lock:
                    t.last_check = time.time()
                    if ok:
                        t.ok_streak, t.fail_streak = t.ok_streak + 1, 0
                        # ALB: a new target is healthy after its first passing checks (initial),
                        # an unhealthy one after HealthyThresholdCount consecutive passes.
                        need = 1 if t.state == "initial" else prof.healthy_threshold
                        if not t.healthy and t.ok_streak >= need:
                            t.healthy, t.state = True, "healthy"
                            self.ctx.events.emit("target_health", region=region, target=t.key, az=t.az, healthy=True)
                    else:
                        t.fail_streak, t.ok_streak = t.fail_streak + 1, 0
                        if t.state != "unhealthy" and (t.fail_streak >= prof.unhealthy_threshold or t.state == "initial" and t.fail_streak >= prof.unhealthy_threshold):
                            was = t.healthy
                            t.healthy, t.state = False, "unhealthy"
                            if was:
                                self.ctx.events.emit("target_health", region=region, target=t.key, az=t.az, healthy=False)
            with self._lock:
                healthy = sum(1 for t in lb.targets.values() if t.healthy)
                b = self._bucket(lb, time.time())
                b.healthy_min = healthy if b.healthy_min is None else min(b.healthy_min, healthy)

    def _health_loop(self) -> None:
        interval = self.ctx.profile.health_check_interval_s
        while not self._stop.is_set():
            try:
                self._health_tick()
            except Exception:  # noqa: BLE001 - one bad tick must not end health checking
                log.exception("health check tick failed")
            self._stop.wait(interval)

    # -- metrics ------------------------------------------------------------------------------------
    def _flush(self, final: bool = False) -> None:
        if not self._armed.is_set():
            return
        step = self.ctx.profile.metric_flush_s
        now = time.time()
        current = math.floor(now / step) * step
        for region, lb in self.regions.items():
            with self._lock:
                done = {k: b for k, b in lb.buckets.items() if final or k < current}
                for k in done:
                    del lb.buckets[k]
                healthy_now = sum(1 for t in lb.targets.values() if t.healthy)
            data = []
            dims = [{"Name": "LoadBalancer", "Value": self.ctx.config.lb_name(region)}]
            for ts, b in sorted(done.items()):
                stamp = ts + step / 2  # the middle of the sub-bucket: inside its period for sure
                if b.requests:
                    data.append({"MetricName": "RequestCount", "Value": b.requests, "Unit": "Count", "Timestamp": stamp, "Dimensions": dims})
                if b.target_5xx:
                    data.append({"MetricName": "HTTPCode_Target_5XX_Count", "Value": b.target_5xx, "Unit": "Count", "Timestamp": stamp, "Dimensions": dims})
                if b.elb_5xx:
                    data.append({"MetricName": "HTTPCode_ELB_5XX_Count", "Value": b.elb_5xx, "Unit": "Count", "Timestamp": stamp, "Dimensions": dims})
                if b.rt_n:
                    data.append({"MetricName": "TargetResponseTime", "Value": b.rt_sum / b.rt_n, "Unit": "Seconds", "Timestamp": stamp, "Dimensions": dims})
                hh = b.healthy_min if b.healthy_min is not None else healthy_now
                data.append({"MetricName": "HealthyHostCount", "Value": hh, "Unit": "Count", "Timestamp": stamp, "Dimensions": dims})
            if not done:
                # no traffic and no health tick in the bucket: still report the hosts, as ALB does
                data.append({"MetricName": "HealthyHostCount", "Value": healthy_now, "Unit": "Count",
                             "Timestamp": current - step / 2, "Dimensions": dims})
            cw = self.ctx.internal_client("cloudwatch", region)
            for i in range(0, len(data), 500):
                cw.put_metric_data(Namespace=NAMESPACE, MetricData=data[i:i + 500])

    def _flush_loop(self) -> None:
        step = self.ctx.profile.metric_flush_s
        while not self._stop.is_set():
            # wake just after each sub-bucket closes, so a period's data is in CloudWatch
            # within a few ms of the period's end
            now = time.time()
            self._stop.wait((math.floor(now / step) + 1) * step - now + 0.01)
            if self._stop.is_set():
                return
            try:
                self._flush()
            except Exception:  # noqa: BLE001 - moto hiccup: keep the buckets' successors coming
                log.exception("metric flush failed")

    # -- introspection ------------------------------------------------------------------------------
    def status(self) -> dict:
        with self._lock:
            return {region: {
                "url": self.ctx.lb_url(region),
                "blocked": self._blocked(region),
                "requests": lb.total_requests,
                "healthy": sum(1 for t in lb.targets.values() if t.healthy),
                "targets": [{"task": t.key, "az": t.az, "state": t.state, "port": t.port} for t in lb.targets.values()],
            } for region, lb in self.regions.items()}
