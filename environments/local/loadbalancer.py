"""The regional application load balancers, one per region on its own loopback address
(127.0.<i+1>.1): the composition of three parts with one job each,
  - lb_proxy.RegionProxy: the listener that forwards requests to a healthy target;
  - target_health.TargetGroup: the ALB health state machine (pure, fed by the checker here);
  - lb_metrics: RequestCount / 5XX / TargetResponseTime / HealthyHostCount to CloudWatch.
This module owns the wiring and the one health-check thread: it keeps each region's target
group in step with the ECS scheduler's running tasks, probes the targets that are due, and puts
every health change on the timeline (`target_health` events).

A data-plane block (fault block_region) cuts the region off: clients are refused or held (see
lb_proxy), and the tasks behind it fail their health checks too (they are cut off from the
region's network), so HealthyHostCount falls, as in a real regional outage.

A response failure (fault fail_responses) makes a region's proxy answer a share of the requests
routed to its targets with a 5XX in the target's name (lb_proxy.ResponseFailure): the targets stay
healthy (their health checks pass) while HTTPCode_Target_5XX_Count rises.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time

from gameday.environments.local.context import LocalContext
from gameday.environments.local.lb_metrics import LbMetrics, MetricsFlusher
from gameday.environments.local.lb_proxy import RegionProxy, ResponseFailure
from gameday.environments.local.provision import NAMESPACE
from gameday.environments.local.target_health import HealthCheckSettings, Target, TargetGroup, Transition
from gameday.httpfwd import UpstreamPool

log = logging.getLogger("gameday.lb")
MIN_CHECK_TIMEOUT_S = 0.2


class LoadBalancers:
    """All regions' load balancers (one component: they share the health-check and flush loops)."""

    def __init__(self, ctx: LocalContext, ecs):
        self.ctx = ctx
        self.ecs = ecs  # EcsReconciler: .targets(region) -> [Target(task_id, az, host, port, ...)]
        regions = list(ctx.config.regions)
        settings = HealthCheckSettings.from_profile(ctx.profile)
        self.groups: dict[str, TargetGroup] = {r: TargetGroup(settings) for r in regions}
        self.metrics = LbMetrics(regions, ctx.profile.metric_flush_s)
        # Metrics are published only once armed (the stack arms after every region has its
        # min healthy tasks): the start-up seconds, with targets still in their initial health
        # checks, would otherwise publish HealthyHostCount 0 and fire the health alarms (and the
        # failover) at every start, which is a deployment artefact, not the steady state.
        self.flusher = MetricsFlusher(self.metrics, lb_name=ctx.config.lb_name, healthy_now=self._healthy_count,
                                      put=self._put_metric_data, clock=ctx.clock)
        self._lock = threading.Lock()   # guards the target groups
        self._stop = threading.Event()
        # set when the scheduler's targets change: a registered target gets its first check at
        # once, not at the next round (ALB: registered, it "must pass one health check")
        self._targets_changed = threading.Event()
        if ecs is not None and hasattr(ecs, "on_targets_changed"):
            ecs.on_targets_changed(self._targets_changed.set)
        self._health_thread: threading.Thread | None = None
        self.pool = pool = UpstreamPool(timeout_s=10)
        self.proxies: dict[str, RegionProxy] = {
            r: RegionProxy(r, ctx.lb_addresses[r], ctx.lb_port, pool=pool,
                           healthy_targets=lambda r=r: self._healthy(r), blocked=lambda r=r: self._blocked(r),
                           on_request=lambda *outcome, r=r: self._on_request(r, *outcome))
            for r in regions}

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> "LoadBalancers":
        for proxy in self.proxies.values():
            proxy.open()
        self._sync_targets()
        self._health_thread = threading.Thread(target=self._health_loop, name="lb-health", daemon=True)
        self._health_thread.start()
        self.flusher.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._targets_changed.set()
        for proxy in self.proxies.values():
            proxy.stop()
        if self._health_thread is not None:
            self._health_thread.join(timeout=5)
        self.flusher.stop()
        self.pool.close()

    def arm_metrics(self) -> None:
        self.flusher.arm()

    # -- data-plane blocks ----------------------------------------------------------------------
    def set_blocked(self, region: str, mode: str | None, source: str = "block_region") -> None:
        """mode: "refuse" | "hang" | None (unblocked), for one source of blocks (the block_region
        fault, the region's network ACLs): the region stays blocked while any source blocks it."""
        proxy = self.proxies[region]
        self.ctx.network.set_block(region, source, mode)
        proxy.block_changed()

    # -- response failures ----------------------------------------------------------------------------
    def fail_responses(self, region: str, share: float | None, status: int = 500) -> dict:
        """Answer `share` of the requests routed to `region`'s targets with `status` (a 5XX, in the
        targets' name); share None ends it. Returns the failure's counts (the ended one's, if any).
        ValueError for a share or status out of range."""
        proxy = self.proxies[region]
        before = proxy.failure
        proxy.failure = None if share is None else ResponseFailure(share, status)
        ended = before.status_dict() if before is not None else None
        # no event of its own: the nemesis puts the fault's inject and rollback on the timeline
        return {"region": region, "failing": proxy.failure.status_dict() if proxy.failure else None,
                "ended": ended}

    def _blocked(self, region: str) -> str | None:
        return self.ctx.network.blocked_regions.get(region)

    # -- what the proxies and the metrics read ----------------------------------------------------------
    def _healthy(self, region: str) -> list[Target]:
        with self._lock:
            return self.groups[region].healthy()

    def _healthy_count(self, region: str) -> int:
        with self._lock:
            return self.groups[region].healthy_count()

    def _on_request(self, region: str, status: int, target_error: bool, response_s: float | None,
                    started_at: float) -> None:
        self.metrics.record_request(region, started_at, status, target_error=target_error, response_s=response_s)
        if self.ecs is not None and hasattr(self.ecs, "report_requests"):
            self.ecs.report_requests(region, 1)

    def _put_metric_data(self, region: str, data: list[dict]) -> None:
        self.ctx.internal_client("cloudwatch", region).put_metric_data(Namespace=NAMESPACE, MetricData=data)

    # -- health checks --------------------------------------------------------------------------
    def _sync_targets(self) -> None:
        for region, group in self.groups.items():
            current = {t.task_id: (t.host, t.port, t.az) for t in self.ecs.targets(region)} if self.ecs else {}
            with self._lock:
                group.sync(current)

    def _probe(self, region: str, t: Target) -> bool:
        if self._blocked(region) or t.az in self.ctx.network.unreachable_azs.get(region, ()):
            return False  # the region's (or the target's AZ's) network is cut: it cannot answer
        timeout = max(MIN_CHECK_TIMEOUT_S, self.ctx.profile.health_check_interval_s)
        try:
            conn = http.client.HTTPConnection(t.host, t.port, timeout=timeout)
            try:
                conn.request("GET", self.ctx.config.service.health_path)
                return conn.getresponse().status == 200
            finally:
                conn.close()
        except (OSError, http.client.HTTPException):
            return False

    def _health_tick(self) -> float:
        """Check every target that is due; the time of the next due check (epoch s)."""
        self._sync_targets()
        clock = self.ctx.clock
        next_due = []
        for region, group in self.groups.items():
            now = clock.time()
            with self._lock:
                due = group.due(now)
            for t in due:
                ok = self._probe(region, t)
                with self._lock:
                    # one round's checks count from the round's start: the group's targets stay
                    # due together (one wake-up per interval, not one per target)
                    change = group.observe(t.key, ok, now)
                if change is not None:
                    self._emit(region, change)
            now = clock.time()
            with self._lock:
                self.metrics.record_healthy(region, now, group.healthy_count())
                next_due.append(group.next_due(now))
        return min(next_due, default=clock.time() + self.ctx.profile.health_check_interval_s)

    def _emit(self, region: str, change: Transition) -> None:
        # the timeline has every target becoming healthy, and a healthy target going unhealthy
        # (an initial target that never passed is no news)
        if change.healthy or change.was == "healthy":
            t = change.target
            self.ctx.events.emit("target_health", region=region, target=t.key, az=t.az, healthy=change.healthy)

    def _health_loop(self) -> None:
        interval, clock = self.ctx.profile.health_check_interval_s, self.ctx.clock
        while not self._stop.is_set():
            try:
                wake_at = self._health_tick()
            except Exception:  # noqa: BLE001 - one bad tick must not end health checking
                log.exception("health check tick failed")
                wake_at = clock.time() + interval
            # new tasks register between checks: the scheduler says so (and they are looked for at
            # least every interval, for a scheduler that cannot say)
            clock.wait(self._targets_changed, min(max(0.0, wake_at - clock.time()), interval))
            self._targets_changed.clear()

    # -- introspection ------------------------------------------------------------------------------
    def status(self) -> dict:
        with self._lock:
            return {region: {
                "url": self.ctx.lb_url(region),
                "blocked": self._blocked(region),
                "failing": self.proxies[region].failure.status_dict() if self.proxies[region].failure else None,
                "requests": self.metrics.total_requests[region],
                "healthy": group.healthy_count(),
                "targets": [{"task": t.key, "az": t.az, "state": t.state, "port": t.port}
                            for t in group.targets.values()],
            } for region, group in self.groups.items()}
