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

What AWS's ELBv2 API says about the targets is this load balancer's truth: each region's target
group in moto (provision._network_calls) has the running tasks registered as "ip" targets (their
127.0.0.1 address and port: moto takes a loopback address, where AWS allows only the VPC's subnets
and private ranges) and DescribeTargetHealth answers their state here (TargetHealthReporter, through
moto_fix_elbv2's admin route), not moto's canned "healthy".

A response failure (fault fail_responses) makes a region's proxy answer a share of the requests
routed to its targets with a 5XX in the target's name (lb_proxy.ResponseFailure): the targets stay
healthy (their health checks pass) while HTTPCode_Target_5XX_Count rises.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from typing import Callable

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
        self.reporter = TargetHealthReporter(ctx, self._registered)
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
        self.reporter.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._targets_changed.set()
        for proxy in self.proxies.values():
            proxy.stop()
        if self._health_thread is not None:
            self._health_thread.join(timeout=5)
        self.reporter.stop()
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

    def _registered(self, region: str) -> dict[tuple[str, int], tuple[str, str | None]]:
        """(host, port) -> (ELBv2 State, Reason) of the region's registered targets."""
        with self._lock:
            return {(t.host, t.port): elbv2_health(t) for t in self.groups[region].targets.values()}

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
            self.reporter.changed(region)
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
                "target_health_api": self.reporter.status(region),
            } for region, group in self.groups.items()}


def elbv2_health(t: Target) -> tuple[str, str | None]:
    """A target's (State, Reason) in ELBv2's words (TargetHealth): initial until its first passed
    check (RegistrationInProgress before any check, InitialHealthChecking after a failed one)."""
    if t.state == "healthy":
        return "healthy", None
    if t.state == "unhealthy":
        return "unhealthy", "Target.FailedHealthChecks"
    return "initial", "Elb.InitialHealthChecking" if t.last_check is not None else "Elb.RegistrationInProgress"


class TargetHealthReporter:
    """Keeps each region's target group in moto in step with the local load balancer: registers and
    deregisters the tasks as targets (ELBv2 RegisterTargets/DeregisterTargets, as ECS does for a
    service behind a target group) and tells moto each target's health when it changes (admin route
    elbv2_target_health). One daemon thread: the health checks never wait for moto; changes made
    while moto is slow are coalesced, and a failed call is tried again at the next change."""

    def __init__(self, ctx: LocalContext, registered: Callable[[str], dict]):
        self.ctx = ctx
        self.registered = registered
        prov = ctx.provisioned
        self.groups = dict(prov.target_group_arns) if prov is not None else {}
        self.told: dict[str, dict] = {r: {} for r in self.groups}   # what moto has: (host, port) -> (state, reason)
        self.calls = self.errors = 0
        self.last_error: str | None = None
        self._dirty: set[str] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "TargetHealthReporter":
        if self.groups and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="lb-target-health-api", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def changed(self, region: str) -> None:
        if region in self.groups:
            with self._lock:
                self._dirty.add(region)
            self._wake.set()

    def status(self, region: str) -> dict:
        """What moto's target group of `region` was told (DescribeTargetHealth's answer)."""
        return {"target_group": self.groups.get(region), "told": {f"{h}:{p}": st for (h, p), (st, _) in
                                                                   dict(self.told.get(region, {})).items()},
                "calls": self.calls, "errors": self.errors, "last_error": self.last_error}

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.ctx.profile.health_check_interval_s)
            self._wake.clear()
            with self._lock:
                dirty, self._dirty = self._dirty, set()
            for region in dirty:
                try:
                    self.push(region)
                except Exception as e:  # noqa: BLE001 - moto slow or restarting: try again at the next change
                    self.errors += 1
                    self.last_error = f"{region}: {type(e).__name__}: {e}"
                    log.warning("target health not told to the ELBv2 API: %s", self.last_error)
                    self.changed(region)
                    self._stop.wait(self.ctx.profile.health_check_interval_s)

    def push(self, region: str) -> None:
        """Make moto's target group `region` what the load balancer has (only the differences)."""
        from gameday.aws import moto_admin

        want, told, arn = self.registered(region), self.told[region], self.groups[region]
        elb = self.ctx.internal_client("elbv2", region)
        gone = [k for k in told if k not in want]
        if gone:
            elb.deregister_targets(TargetGroupArn=arn, Targets=[{"Id": h, "Port": p} for h, p in gone])
            self.calls += 1
            for k in gone:
                del told[k]
        new = [k for k in want if k not in told]
        if new:
            elb.register_targets(TargetGroupArn=arn, Targets=[{"Id": h, "Port": p} for h, p in new])
            self.calls += 1
        moved = {k: v for k, v in want.items() if told.get(k, (None, None)) != v}
        if moved:
            moto_admin(self.ctx.moto_urls[region], "elbv2_target_health", region=region, target_group_arn=arn,
                       targets=[{"id": h, "port": p, "state": st, "reason": why} for (h, p), (st, why) in moved.items()])
            self.calls += 1
            told.update(moved)
