"""Faults the architecture must absorb without failing over: ECS replaces a stopped task and the
tasks of a lost AZ, the load balancer routes around them, no alarm fires, DNS does not move,
and clients stay within the absorbed-error budget."""

from __future__ import annotations

import time

import pytest

from gameday.assertions.eventually import eventually
from gameday.assertions.failover import alarm_stays, record_points_at
from gameday.faults import lose_az, stop_tasks
from gameday.scenarios.steps import FAILOVER_OPS, FOLLOWER_RPS, data_checks

pytestmark = pytest.mark.scenario


def _running(env, region: str) -> list[dict]:
    return [t for t in env.status()["ecs"][region]["tasks"] if t.get("state") == "RUNNING"]


@pytest.mark.alarms("healthy-hosts")   # a request-count alarm still in ALARM from a surge need not be OK first
def test_task_loss_is_absorbed(env, scenario, nemesis, load):
    region = env.config.initial_region
    d = scenario.deadlines
    need = env.config.service.desired_tasks
    prof = env.profile
    run = load.start(shape="constant", follower_rate=FOLLOWER_RPS, op_mix=FAILOVER_OPS,
                     hold_s=round(4 * prof.period_s + 2 * prof.task_provisioning_s + d.recovery_s + 5, 1))
    run.wait_rate(region, FOLLOWER_RPS * 0.5, deadline_s=d.client_follow_s)
    started, wall = time.monotonic(), time.time()
    replace_deadline = prof.task_provisioning_s + 3 * prof.health_check_interval_s + 3.0

    def replaced(az_lost: str | None = None, stopped: tuple[str, ...] = ()):
        def check():
            tasks = _running(env, region)
            # the stopped tasks first: right after StopTask they may still read RUNNING, and the
            # next fault must not land before the scheduler has acted (it would take the last task)
            still = [t["task_id"] for t in tasks if t.get("task_arn") in stopped]
            assert not still, f"stopped tasks still RUNNING in {region}: {still}"
            assert len(tasks) >= need, f"{len(tasks)} of {need} tasks RUNNING in {region}"
            # RUNNING is not in service: the next fault must wait for the load balancer to see the
            # replacement healthy, as a deployment's minimum healthy percent would
            healthy = env.status()["load_balancers"][region]["healthy"]
            assert healthy >= need, f"{healthy} of {need} targets healthy at {region}'s load balancer"
            if az_lost:
                wrong = [t["task_id"] for t in tasks if t["az"].endswith(az_lost)]
                assert not wrong, f"tasks still in the lost AZ: {wrong}"
        return lambda: eventually(check, deadline_s=replace_deadline, interval_s=0.1,
                                  what=f"ECS keeps {need} tasks running in {region}",
                                  why_deadline="task provisioning + health checks")

    stopped = nemesis.inject(stop_tasks(region, count=1)).injected or {}
    scenario.expect("task_replaced", replaced(stopped=tuple(stopped.get("stopped", ()))))
    lost = env.config.service.azs[0]
    nemesis.inject(lose_az(region, lost))
    scenario.expect("az_tasks_replaced", replaced(lost))
    # a whole period of evidence after the last replacement, then: no alarm went off since the
    # first fault, and DNS never moved
    scenario.expect("healthy_hosts_alarm_stays_ok",
                    lambda: alarm_stays(env, region, "OK", for_s=prof.period_s, alarm_key="healthy-hosts"))
    fired = [e for e in env.events(kind="alarm") if e.get("new") == "ALARM" and float(e.get("time", 0)) >= wall]
    scenario.check({"name": "no_alarm_fired", "valid": not fired,
                    "detail": "no alarm went to ALARM" if not fired else
                    "; ".join(f"{e['alarm']} went ALARM: {e.get('reason')}" for e in fired)})
    scenario.expect("no_failover", lambda: record_points_at(env, region) and 0.0)
    run.stop()
    nemesis.rollback_all()
    data_checks(scenario, env, run.history(), fault_wall=wall, healthy_region=None,
                budget=env.config.budgets.absorbed_error_rate)
    scenario.metric("rto_s", None)
    scenario.verdict()
