"""An example scenario of your own, written by `gameday init` (docs/scenarios.md explains each
fixture): one task of the region that takes the traffic is stopped while DNS-following clients
keep writing. ECS must replace it, no alarm may fire, DNS must not move, and no acknowledged
write may be lost. Copy it to rehearse the faults your own service must absorb."""

from __future__ import annotations

import time

import pytest

from gameday.assertions.eventually import eventually
from gameday.assertions.failover import alarm_stays, record_points_at
from gameday.faults import stop_tasks
from gameday.scenarios.steps import FAILOVER_OPS, FOLLOWER_RPS, data_checks

pytestmark = pytest.mark.scenario


def test_one_task_lost_is_absorbed(env, scenario, nemesis, load):
    region = env.config.initial_region
    profile, deadlines = env.profile, scenario.deadlines
    need = env.config.service.desired_tasks
    # steady load from clients that resolve the service name, long enough to see the task replaced
    run = load.start(shape="constant", follower_rate=FOLLOWER_RPS, op_mix=FAILOVER_OPS,
                     hold_s=round(2 * profile.period_s + profile.task_provisioning_s + deadlines.recovery_s, 1))
    run.wait_rate(region, FOLLOWER_RPS * 0.5, deadline_s=deadlines.client_follow_s)
    fault_wall = time.time()

    stopped = tuple((nemesis.inject(stop_tasks(region, count=1)).injected or {}).get("stopped", ()))

    def replaced():
        running = [t for t in env.status()["ecs"][region]["tasks"] if t.get("state") == "RUNNING"]
        still = [t["task_id"] for t in running if t.get("task_arn") in stopped]
        assert not still, f"the stopped task is still RUNNING in {region}: {still}"
        assert len(running) >= need, f"{len(running)} of {need} tasks RUNNING in {region}"
        healthy = env.status()["load_balancers"][region]["healthy"]
        assert healthy >= need, f"{healthy} of {need} targets healthy at {region}'s load balancer"

    # check 1: ECS replaces the task within provisioning + a few health checks
    scenario.expect("task_replaced", lambda: eventually(
        replaced, deadline_s=profile.task_provisioning_s + 3 * profile.health_check_interval_s + 3.0,
        interval_s=0.1, what=f"ECS keeps {need} tasks in service in {region}",
        why_deadline="task provisioning + health checks"))
    # check 2: losing one task is no reason to fail over: a whole period of evidence without the
    # healthy-hosts alarm, and DNS still on the region
    scenario.expect("healthy_hosts_alarm_stays_ok",
                    lambda: alarm_stays(env, region, "OK", for_s=profile.period_s, alarm_key="healthy-hosts"))
    scenario.expect("dns_stays", lambda: record_points_at(env, region) and 0.0)
    run.stop()
    nemesis.rollback_all()
    # and the data checks every built-in scenario ends with: nothing acknowledged was lost
    data_checks(scenario, env, run.history(), fault_wall=fault_wall, healthy_region=None,
                budget=env.config.budgets.absorbed_error_rate)
    scenario.verdict()
