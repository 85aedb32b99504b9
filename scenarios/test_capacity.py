"""Capacity: after a failover the surviving region carries all the traffic. Its tasks have a
finite capacity (service.task_capacity_rps, sut/capacity.py); with target tracking
(service.scale_out_requests_per_task_s) ECS adds tasks after the scale-out delay (a period of
metrics, then the profile's task provisioning), and the error budget and p99 latency hold.
A region sized too small, with no scaling, fails here, naming the error budget and the p99.
"""

from __future__ import annotations

import time

import pytest

from gameday.assertions.checkers import error_budget, latency_p99, placement
from gameday.assertions.deadlines import HARNESS_MARGIN_S
from gameday.assertions.eventually import eventually
from gameday.assertions.failover import alarm_fires, dns_answers_region, health_check_unhealthy, lambda_invoked
from gameday.faults import block_region
from gameday.scenarios.steps import (FOLLOW_EVIDENCE_S, SURGE_OPS, clients_follow, data_checks, dns_moved_once,
                                     end_load, failback_judged, load_hold_s, other_region)

pytestmark = pytest.mark.scenario

# The whole load follows DNS (a lost region sends everything, the surge too, to the other one) at
# 80% of the request-count alarm's threshold: the most the architecture sends to one region without
# its own load alarm firing (above it, the surviving region's alarm would fail the service over
# again, and the load would have nowhere to go). The cheap ping/write mix of the surge.
ABSORB_SHARE = 0.8
HOLD_PERIODS = 3        # alarm periods the surviving region carries the load after the clients followed
# Many clients each sending rarely (one request per 2 s slot, the load's request timeout): a task
# that makes its clients wait then meets the next clients' requests as an open load does, instead
# of slowing a few busy clients down (which would hide the overload as a lower rate).
PER_USER_RPS = 0.5


def absorb_rps(env) -> float:
    """ABSORB_SHARE of the request-count alarm's threshold, in requests/s."""
    counts = [a for a in env.config.alarms.values() if a.metric == "RequestCount" and a.enabled]
    if not counts:
        pytest.skip("no RequestCount alarm configured: the load a region must carry is set relative to its threshold")
    return round(ABSORB_SHARE * min(a.threshold for a in counts) / env.profile.period_s, 1)


def running_tasks(env, region: str) -> int:
    return sum(1 for t in env.status()["ecs"][region]["tasks"] if t.get("state") == "RUNNING")


def _fails_over(scenario, env, run, *, src: str, dst: str, started: float) -> None:
    """src's data plane is lost: its health alarm (or, with failover routing, its health check)
    moves the service name to dst, and the clients follow."""
    if env.config.failover_function:
        scenario.expect("alarm_fires", lambda: alarm_fires(env, src, "healthy-hosts", started=started),
                        metric="detection_s")
        scenario.expect("lambda_invoked", lambda: lambda_invoked(env, started=started, region=src))
    else:
        scenario.expect("health_check_fails", lambda: health_check_unhealthy(env, src, started=started),
                        metric="detection_s")
    scenario.expect("dns_failover", lambda: dns_answers_region(env, dst, started=started), metric="failover_s")
    scenario.expect("clients_follow", lambda: clients_follow(scenario, run, dst, started=started))


def scale_out_deadline_s(env) -> float:
    """From the load's arrival to the added tasks in service: target tracking needs a period of
    metrics, the scheduler a tick, each task its provisioning, the load balancer its healthy checks."""
    p = env.profile
    return round(p.period_s + 2 * p.reconcile_interval_s + p.task_provisioning_s
                 + (p.healthy_threshold + 1) * p.health_check_interval_s + HARNESS_MARGIN_S, 1)


def scaled_out(env, region: str, *, since_wall: float, started: float) -> float:
    """Target tracking raised `region`'s desired count (an `ecs` scaled event) and that many tasks
    are RUNNING and healthy at its load balancer; the seconds from `started`."""
    def done() -> None:
        ups = [e for e in env.events(kind="ecs") if e.get("action") == "scaled" and e.get("region") == region
               and float(e.get("time", 0)) >= since_wall and int(e.get("new", 0)) > int(e.get("old", 0))]
        assert ups, f"no scale-out of {region} since the failover"
        want = max(int(e["new"]) for e in ups)
        running, healthy = running_tasks(env, region), env.status()["load_balancers"][region]["healthy"]
        assert running >= want and healthy >= want, \
            f"{region} scaled to {want} tasks: {running} RUNNING, {healthy} healthy at its load balancer"

    _, took = eventually(done, deadline_s=scale_out_deadline_s(env), started=started, interval_s=0.2,
                         what=f"ECS scales {region} out", why_deadline="a period of metrics + scheduler ticks + "
                         "task provisioning + healthy checks + margin")
    return took


def holds(scenario, env, run, region: str, *, rps: float, periods: int = HOLD_PERIODS, check: bool = True) -> dict:
    """`region` answers the load for `periods` alarm periods: the samples (1 s windows, every 0.25 s)
    where it answered less than half the load's rate are dips, recorded as the check
    surviving_region_serves (unless `check` is False: the steady state). Returns {dips, tasks}."""
    hold_s = periods * env.profile.period_s
    t0 = time.monotonic()
    seen = {"dips": [], "tasks": 0}

    def held() -> None:
        if run.rate(region, window_s=1.0) < rps / 2:
            seen["dips"].append(round(time.monotonic() - t0, 1))
        seen["tasks"] = max(seen["tasks"], running_tasks(env, region))
        elapsed = time.monotonic() - t0
        assert elapsed >= hold_s, f"{region} carried the load for {elapsed:.1f}s of {hold_s:g}s"

    eventually(held, deadline_s=hold_s + HARNESS_MARGIN_S, started=t0, interval_s=0.25,
               what=f"{region} carries the load", why_deadline=f"{periods} period(s) of evidence")
    dips = seen["dips"]
    if not check:
        return seen
    scenario.check({"name": "surviving_region_serves", "valid": not dips,
                    "detail": f"{region} answered >= {rps / 2:g} requests/s for {hold_s:g}s" if not dips else
                    f"{region} answered under {rps / 2:g} requests/s at {dips[:5]}s of the {hold_s:g}s hold"})
    return seen


def capacity_checks(scenario, env, history: list[dict], region: str, *, since_wall: float) -> None:
    """After the clients followed: the absorbed error budget and the p99 latency on `region`."""
    b = env.config.budgets
    after = [e for e in history if e.get("type") != "invoke" and float(e.get("time", 0)) >= since_wall]
    eb = error_budget(after, budget=b.absorbed_error_rate)
    scenario.budget("absorbed_error_rate", b.absorbed_error_rate)
    scenario.check({"name": "surviving_region_error_budget", "valid": eb.valid,
                    "detail": f"after the failover, on {region}: {eb.detail}"})
    scenario.budget("p99_latency_s", b.p99_latency_s)
    p99 = latency_p99(placement(history), budget_s=b.p99_latency_s, window=(since_wall, None), region=region)
    scenario.check(p99)
    scenario.metric("p99_latency_s", p99.metrics.get("p99_latency_s"))


@pytest.mark.alarms("healthy-hosts")   # a request-count alarm still in ALARM from a surge need not be OK first
def test_surviving_region_absorbs_load(env, scenario, nemesis, load):
    """The initial region is lost under the full load: the other region takes all of it, scales
    out when target tracking is on, and keeps the error budget and the p99 for several periods."""
    src = env.config.initial_region
    dst = other_region(env, src)
    p, d = env.profile, scenario.deadlines
    rps = absorb_rps(env)
    scaling = env.config.service.scale_out_requests_per_task_s > 0
    extra = (3 + HOLD_PERIODS) * p.period_s + scale_out_deadline_s(env) + FOLLOW_EVIDENCE_S
    run = load.start(shape="constant", follower_rate=rps, op_mix=SURGE_OPS, per_user_rps=PER_USER_RPS,
                     hold_s=load_hold_s(scenario, extra))
    # steady state first: a whole period of the load on the initial region (answered, however well:
    # the region's capacity is judged after the failover, where it must carry everything), so the
    # error budget weighs the outage against as much service before it as the seed's scenarios do
    run.wait_rate(src, rps * 0.5, deadline_s=d.client_follow_s + p.period_s, window_s=1.0)
    holds(scenario, env, run, src, rps=rps, periods=1, check=False)
    scenario.metric("tasks_before", running_tasks(env, dst))
    started, wall = time.monotonic(), time.time()
    nemesis.inject(block_region(src, data_plane=True, mode="hang"))
    _fails_over(scenario, env, run, src=src, dst=dst, started=started)
    followed_wall, followed = time.time(), time.monotonic()
    if scaling:
        scenario.expect("scaled_out", lambda: scaled_out(env, dst, since_wall=wall, started=followed))
    seen = holds(scenario, env, run, dst, rps=rps)
    scenario.metric("tasks_after", seen["tasks"])
    scenario.note(f"{dst} carried {rps:g} requests/s with {scenario.metrics['tasks_before']} -> {seen['tasks']} "
                  f"tasks (capacity {env.config.service.task_capacity_rps:g} requests/s each, target tracking "
                  + (f"{env.config.service.scale_out_requests_per_task_s:g}/task)" if scaling else "off)"))
    dns_moved_once(scenario, env, dst, since_wall=wall, until_failback=True)
    end_load(scenario, env, run, fault_wall=wall, healthy_region=dst)
    nemesis.rollback_all()
    history = run.history()
    data_checks(scenario, env, history, fault_wall=wall, healthy_region=dst, budget=env.config.budgets.error_rate)
    capacity_checks(scenario, env, history, dst, since_wall=followed_wall)
    failback_judged(scenario, env, src, since_wall=wall, fault_wall=wall)   # once src is back, as every failover
    scenario.verdict()
